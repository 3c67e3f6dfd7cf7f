"""The command line's terminal: how much it says (`--verbose`, `--quiet`), its log lines and its progress bars.

Configured once per process by `bip.cli` (`configure`). Progress bars (rich, with the time left) are
drawn on stderr only when stderr is a terminal: a pipe, a log file or a scheduler's capture gets the
results and the log lines, never a bar. Log lines of every library (MLflow, alembic, bip) go through
the root logger, to the same console as the bars so that neither breaks the other.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from bip.progress import QUIET, Progress, Task

if TYPE_CHECKING:
    import rich.console
    import rich.progress
    import typer

# Loggers that configure themselves on import (MLflow: its own stderr handler, not propagated), which
# are handed back to the root logger so that `--verbose`/`--quiet` and one format apply to them too.
SELF_CONFIGURED_LOGGERS = {"mlflow": logging.NOTSET, "alembic": logging.NOTSET, "huey": logging.NOTSET}
# SQLAlchemy's engine logs every statement at INFO: not even --verbose wants those.
SELF_CONFIGURED_LOGGERS["sqlalchemy.engine"] = logging.WARNING
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
HANDLER_NAME = "bip-cli"


class Verbosity(IntEnum):
    quiet = 0  # errors only, no progress
    normal = 1  # warnings, progress on a terminal
    verbose = 2  # information from bip and its libraries (MLflow, alembic) too

    @property
    def log_level(self) -> int:
        return {Verbosity.quiet: logging.ERROR, Verbosity.normal: logging.WARNING}.get(self, logging.INFO)


@dataclass
class Terminal:
    """What this process's command line shows: its verbosity and, on a terminal, the rich console."""

    verbosity: Verbosity = Verbosity.normal
    console: rich.console.Console | None = None

    @property
    def shows_progress(self) -> bool:
        return self.console is not None and self.verbosity > Verbosity.quiet


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def configure(verbosity: Verbosity) -> Terminal:
    """Set up logging and the terminal of this process once, at the CLI's entry; the command line keeps the
    Terminal as its context's object, where `progress` finds it."""
    console = None
    if stderr_is_terminal():
        from rich.console import Console

        console = Console(stderr=True)
    configure_logging(verbosity, console)
    return Terminal(verbosity, console)


def configure_logging(verbosity: Verbosity, console: rich.console.Console | None) -> None:
    """One handler on the root logger, every library's lines through it, at the verbosity's level."""
    # MLflow sets up its own stderr handler when imported, unless told not to; it is imported later,
    # inside the commands. Subprocesses (the server of `bip serve`) inherit this and log through
    # their own root logger too.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    # MLflow's own (tqdm) bars for artifact downloads would write bar characters into pipes and logs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A tracking server that does not answer: MLflow's default of 7 retries with doubling waits kept
    # `bip status` waiting four minutes. Three retries say so within about half a minute (override both).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    if console is not None:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=console, show_path=False, show_time=False, markup=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    # Only a handler of an earlier `configure` is replaced: a host's own (a test runner's) stay.
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    handler.set_name(HANDLER_NAME)
    root.addHandler(handler)
    root.setLevel(verbosity.log_level)
    for name, level in SELF_CONFIGURED_LOGGERS.items():
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.setLevel(level)
        logger.propagate = True
    logging.captureWarnings(True)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged (a test runner swaps it per command)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class RichTask:
    def __init__(self, bar: rich.progress.Progress, task_id: rich.progress.TaskID) -> None:
        self._bar, self._id = bar, task_id

    def advance(self, amount: float = 1) -> None:
        self._bar.advance(self._id, amount)


class RichProgress:
    """A `bip.progress.Progress` drawn as rich bars: one line per open task, sub-steps indented and
    removed when done, top-level tasks left showing their total time."""

    def __init__(self, bar: rich.progress.Progress) -> None:
        self._bar = bar
        self._depth = 0

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Task]:
        depth = self._depth
        task_id = self._bar.add_task("  " * depth + description, total=total)
        self._depth += 1
        try:
            yield RichTask(self._bar, task_id)
        finally:
            self._depth = depth
        if depth:
            self._bar.remove_task(task_id)
        else:
            done = max(next(t.completed for t in self._bar.tasks if t.id == task_id), 1)
            self._bar.update(task_id, total=done, completed=done)


def bars(console: rich.console.Console) -> rich.progress.Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    # "0:00:12 / 0:01:30 left": time spent and the estimate of what remains, in 80 columns with the bar.
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=16),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("/"),
        TimeRemainingColumn(),
        TextColumn("left"),
        console=console,
    )


@contextmanager
def _shown(console: rich.console.Console) -> Iterator[Progress]:
    with bars(console) as bar:
        yield RichProgress(bar)


def progress(context: typer.Context | None) -> AbstractContextManager[Progress]:
    """The progress display of a command, from its context (whose object `bip.cli` set to the Terminal):
    bars on a terminal, else (a pipe, `--quiet`, a call from outside the command line) `QUIET`."""
    terminal = context.find_object(Terminal) if context is not None else None
    if terminal is None or not terminal.shows_progress:
        return nullcontext(QUIET)
    return _shown(terminal.console)
