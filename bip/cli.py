"""The `bip` command line: one Typer app whose commands live with their stage.

Exit codes, the same for every command: 0 done (for `bip retrain`: promoted or kept), 1 a gate
failed (`bip retrain`), 2 a usage or data error (the message says what to fix), 3 a crash (a bug or
an unreachable dependency; the traceback is printed).
"""

from __future__ import annotations

import os
import sys
import traceback

import typer

from bip.errors import UserError

EXIT_USAGE, EXIT_CRASH = 2, 3


def build_app() -> typer.Typer:
    from experiments import commands as experiment_commands
    from features import commands as feature_commands
    from serving import account_commands
    from serving import commands as serving_commands
    from simulator import commands as simulator_commands
    from training import commands as training_commands

    app = typer.Typer(
        help="bip: job-chance predictions with explanations for job centres.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    modules = (
        simulator_commands,
        feature_commands,
        training_commands,
        serving_commands,
        account_commands,
        experiment_commands,
    )
    for module in modules:
        for command in module.COMMANDS:
            app.command()(command)
        for name, group in getattr(module, "GROUPS", ()):
            app.add_typer(group, name=name)
    return app


def main() -> None:
    # Everything bip writes (the store, MLflow's database and artifacts, job files, secrets) is
    # readable by its owner only: citizens' data must not be open to every local user.
    os.umask(0o077)
    try:
        build_app()(standalone_mode=True)
    except UserError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        sys.exit(EXIT_USAGE)
    except Exception:
        traceback.print_exc()
        typer.secho("error: bip stopped on an unexpected error (above).", err=True, fg=typer.colors.RED)
        sys.exit(EXIT_CRASH)
