"""Named locks between processes: an exclusive `flock` on a file, so a killed holder releases it.

`retrain` holds the retrain lock for its whole run (a second one is refused at once); `promote` and
the last step of `retrain` hold the registry lock for the moment they move the alias (waiting a little
for each other). The locks live under BIP_HOME (`Settings.lock_folder`): they guard one installation,
on one machine or on a file system whose `flock` spans its clients. Across installations that share a
tracking server, the check that the champion is still the one compared against guards promotion.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bip.errors import UserError


class LockHeld(UserError):
    """Another process holds the lock."""


def holder(path: Path) -> str:
    """What the lock file says about its holder ("pid N: what"), or "" when unknown."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


@contextmanager
def exclusive(path: Path, what: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold the lock at `path` for `what` (waiting up to `wait_seconds`), or raise LockHeld naming the holder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockHeld(
                        f"{what} refused: another process holds {path} ({holder(path) or 'holder unknown'})"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {what}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
