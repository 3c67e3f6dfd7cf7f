"""How a long step reports progress, without knowing where it is shown.

Library code takes a `Progress` (default `QUIET`, which shows nothing) and opens one task per loop:

    with progress.task("folds", total=5) as task:
        for fold in folds:
            ...
            task.advance()

The command line passes its terminal display (`bip.console`); tests, the service and pipes get `QUIET`.
Nothing here imports a display library, so the stages stay free of one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Protocol


class Task(Protocol):
    """One running task of a `Progress`: `advance` by the work just done (in the task's units)."""

    def advance(self, amount: float = 1) -> None: ...


class Progress(Protocol):
    """Opens tasks; a task opened inside another is shown as its sub-step."""

    def task(self, description: str, total: float | None = None) -> AbstractContextManager[Task]: ...


class _SilentTask:
    def advance(self, amount: float = 1) -> None:
        return None


class Quiet:
    """A Progress that shows nothing (pipes, services, tests)."""

    def task(self, description: str, total: float | None = None) -> AbstractContextManager[Task]:
        return nullcontext(_SilentTask())


QUIET: Progress = Quiet()


def tracked[T](progress: Progress, items: Iterable[T], description: str, total: float | None = None) -> Iterator[T]:
    """`items`, advancing one task of `progress` by one after each item has been worked on."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress.task(description, total) as task:
        for item in items:
            yield item
            task.advance()


@contextmanager
def step(progress: Progress, description: str) -> Iterator[None]:
    """One unit of work shown as a task of one step (a phase without a loop of its own)."""
    with progress.task(description, 1) as task:
        yield
        task.advance()
