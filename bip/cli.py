"""The `bip` command line: one Typer app whose commands live with their stage.

Exit codes, the same for every command: 0 done (for `bip retrain`: promoted or kept), 1 a gate
failed (`bip retrain`), 2 a usage or data error (the message says what to fix), 3 a crash (a bug or
an unreachable dependency; the traceback is printed).

Global options, before the command: `--verbose` (information from bip, MLflow and alembic too),
`--quiet` (errors only, no progress bars), `--version`. Logging and the terminal are set up once,
here (`bip.console`).
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated

import typer

from bip.errors import UserError, redacted

EXIT_USAGE, EXIT_CRASH = 2, 3


def installed_version() -> str:
    """bip's version from the installed package's metadata (pyproject.toml), one place for it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bip")
    except PackageNotFoundError:
        return "unknown (not installed)"


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"bip {installed_version()}")
        raise typer.Exit()


def configure_terminal(
    ctx: typer.Context,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also show information lines (bip, MLflow, alembic).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors; no progress bars.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=show_version, is_eager=True, help="Print bip's version and exit."),
    ] = False,
) -> None:
    """bip: job-chance predictions with explanations for job centres."""
    from bip.console import Verbosity, configure

    if verbose and quiet:
        raise typer.BadParameter("--verbose and --quiet exclude each other", param_hint="--verbose/--quiet")
    verbosity = Verbosity.verbose if verbose else Verbosity.quiet if quiet else Verbosity.normal
    ctx.obj = configure(verbosity)


def build_app() -> typer.Typer:
    from experiments import commands as experiment_commands
    from features import commands as feature_commands
    from serving import account_commands
    from serving import commands as serving_commands
    from serving import status as status_commands
    from simulator import commands as simulator_commands
    from training import commands as training_commands

    app = typer.Typer(
        help="bip: job-chance predictions with explanations for job centres.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        callback=configure_terminal,
    )
    modules = (
        simulator_commands,
        feature_commands,
        training_commands,
        serving_commands,
        account_commands,
        status_commands,
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
    except Exception as error:
        message = user_mistake(error)
        if message is not None:
            typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
            sys.exit(EXIT_USAGE)
        traceback.print_exc()
        typer.secho("error: bip stopped on an unexpected error (above).", err=True, fg=typer.colors.RED)
        sys.exit(EXIT_CRASH)


# Paths a user gave that cannot be used as asked: a folder where a file is wanted, and so on.
_PATH_ERRORS = (IsADirectoryError, NotADirectoryError, FileExistsError, FileNotFoundError, PermissionError)
# The registry's answers to a model URI or a version that does not exist, or cannot be one.
_REGISTRY_MISTAKES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


def user_mistake(error: Exception) -> str | None:
    """The one-line message of an error the user can fix without a bug being fixed (exit 2), or None
    for a crash (exit 3, with the traceback): a path that cannot be used as asked, a setting out of its
    range (a store URL SQLAlchemy cannot use among them: `Settings._usable_url`), a model that the
    registry does not have. Never a value of a setting (a URL can hold a password)."""
    from pydantic import ValidationError

    if isinstance(error, _PATH_ERRORS) and error.filename is not None:
        return f"cannot use {error.filename}: {error.strerror or type(error).__name__}"
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors(include_input=False)
        )
        return f"a setting cannot be used ({problems}); see the settings in the README"
    if type(error).__name__ == "MlflowException" and getattr(error, "error_code", None) in _REGISTRY_MISTAKES:
        return f"the model registry says: {redacted(getattr(error, 'message', str(error)))}"
    return None
