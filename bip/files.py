"""Files bip writes for a user: checked before the work starts, and written whole or not at all."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bip.errors import UserError


def output_file(path: Path) -> Path:
    """`path` as a file bip may write, its folder made: UserError, before any work, when `path` is a
    folder or a file stands where one of its folders would be."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; give the name of a file to write")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise UserError(f"cannot write {path}: {blocking} is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def partial_path(path: Path) -> Path:
    """Where `path` is written before it is moved into place: beside it, hidden, named for this process."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


@contextmanager
def written_whole(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to, moved over `path` when the block ends without an
    error: a reader never sees half a file, and an interrupted write leaves the file as it was."""
    temporary = partial_path(Path(path))
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
