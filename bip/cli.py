"""The `bip` command line: one Typer app whose commands live with their stage."""

from __future__ import annotations

import sys

import typer

from bip.errors import UserError


def build_app() -> typer.Typer:
    from experiments import commands as experiment_commands
    from features import commands as feature_commands
    from serving import commands as serving_commands
    from training import commands as training_commands

    app = typer.Typer(
        help="bip: job-chance predictions with explanations for job centres.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    for module in (feature_commands, training_commands, serving_commands, experiment_commands):
        for command in module.COMMANDS:
            app.command()(command)
    return app


def main() -> None:
    try:
        build_app()(standalone_mode=True)
    except UserError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        sys.exit(2)
