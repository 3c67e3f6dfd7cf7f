"""Named leases between processes on any machine: one row per lock in the store database.

`retrain` holds the "retrain" lease for its whole run (a second one, from any machine that shares the
store, is refused at once); `promote` and the last step of `retrain` hold the "registry" lease for the
moment they compare and move the alias (waiting a little for each other).

A lease is a row (`leases`: name, holder, token, expires_at) that a holder takes with one conditional
UPDATE: only when the row is free or its lease has run out. Both SQLite and PostgreSQL apply that
UPDATE to one row at a time, so of two processes asking at once exactly one wins. While held, a
heartbeat thread pushes `expires_at` forward every quarter of the lease; a holder that dies (SIGKILL,
a lost machine) stops beating, and its lease runs out `lease_seconds` later. Expiry compares wall clocks
of the machines, so their clocks must agree to well within a lease (NTP does).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import Column, Engine, Float, MetaData, String, Table, Text, create_engine, exc, inspect, select, update

from bip.errors import UserError

logger = logging.getLogger(__name__)

LEASE_SECONDS = 60.0
"""How long a lease outlives its holder's last heartbeat (the settings' BIP_LOCK_LEASE_SECONDS)."""

SQLITE_BUSY_SECONDS = 30.0
"""How long a lease statement on SQLite waits for another writer (an ingest) before it fails."""

LEASES = Table(
    "leases",
    MetaData(),
    Column("name", String(100), primary_key=True),
    Column("holder", Text),
    Column("token", String(32)),
    Column("expires_at", Float, nullable=False),
)


class LockHeld(UserError):
    """Another process holds the lease."""


class LeaseLost(LockHeld):
    """The lease ran out while held (the heartbeat could not reach the database in time)."""


def _engine(url: str) -> Engine:
    connect_args = {"timeout": SQLITE_BUSY_SECONDS} if url.startswith("sqlite") else {}
    return create_engine(url, connect_args=connect_args, pool_pre_ping=True, hide_parameters=True)


def _ensure_row(engine: Engine, name: str) -> None:
    """Create the table and the lease's row (free) when missing; a concurrent creator may win either race."""
    try:
        with engine.begin() as conn:
            LEASES.create(conn, checkfirst=True)
    except exc.DBAPIError:
        if not inspect(engine).has_table(LEASES.name):
            raise
    with engine.connect() as conn:
        present = conn.execute(select(LEASES.c.name).where(LEASES.c.name == name)).first() is not None
    if not present:
        try:
            with engine.begin() as conn:
                conn.execute(LEASES.insert().values(name=name, holder=None, token=None, expires_at=0.0))
        except exc.IntegrityError:
            pass


def current_holder(engine: Engine, name: str) -> tuple[str, float] | None:
    """Who holds lease `name` and until when (epoch seconds), or None when it is free."""
    with engine.connect() as conn:
        row = conn.execute(select(LEASES.c.holder, LEASES.c.expires_at).where(LEASES.c.name == name)).first()
    if row is None or row.holder is None or row.expires_at < time.time():
        return None
    return row.holder, row.expires_at


def _take(engine: Engine, name: str, holder: str, token: str, lease_seconds: float) -> bool:
    now = time.time()
    free = (LEASES.c.token.is_(None)) | (LEASES.c.expires_at < now)
    stmt = (
        update(LEASES)
        .where(LEASES.c.name == name, free)
        .values(holder=holder, token=token, expires_at=now + lease_seconds)
    )
    with engine.begin() as conn:
        return conn.execute(stmt).rowcount == 1


def _renew(engine: Engine, name: str, token: str, lease_seconds: float) -> bool:
    """Push the lease's end forward; False when another holder has taken it (after it ran out). A lease
    that ran out but that nobody took is still this holder's: extending it harms no one."""
    stmt = (
        update(LEASES)
        .where(LEASES.c.name == name, LEASES.c.token == token)
        .values(expires_at=time.time() + lease_seconds)
    )
    with engine.begin() as conn:
        return conn.execute(stmt).rowcount == 1


def _release(engine: Engine, name: str, token: str) -> None:
    stmt = update(LEASES).where(LEASES.c.name == name, LEASES.c.token == token)
    with engine.begin() as conn:
        conn.execute(stmt.values(holder=None, token=None, expires_at=0.0))


class Lease:
    """A held lease: its heartbeat thread, and `check()` to confirm it is still held before acting on it."""

    def __init__(self, engine: Engine, name: str, token: str, lease_seconds: float) -> None:
        self.engine, self.name, self.token, self.lease_seconds = engine, name, token, lease_seconds
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{name}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_seconds / 4):
            try:
                if not _renew(self.engine, self.name, self.token, self.lease_seconds):
                    self.lost = "another process took it after it ran out"
                    return
            except exc.DBAPIError as error:  # an outage: keep trying; `check` tells whether it was taken
                logger.warning("could not renew the %s lease: %s", self.name, type(error).__name__)

    def check(self) -> None:
        """Raise LeaseLost unless the lease is still held, asking the database (and renewing it): call it
        right before an irreversible step."""
        if self.lost is None and not _renew(self.engine, self.name, self.token, self.lease_seconds):
            self.lost = "another process took it after it ran out"
        if self.lost is not None:
            raise LeaseLost(f"the {self.name} lock was lost ({self.lost}): stopped before changing anything")


def holder_name(what: str) -> str:
    """How a holder names itself in the lease row and in refusals: process, task and machine."""
    return f"pid {os.getpid()}: {what} (host {socket.gethostname()})"


@contextmanager
def exclusive(
    url: str, name: str, what: str, wait_seconds: float = 0.0, lease_seconds: float = LEASE_SECONDS
) -> Iterator[Lease]:
    """Hold lease `name` in the database at `url` for `what` (waiting up to `wait_seconds`), or raise
    LockHeld naming the holder. The lease is released on exit, and runs out if this process dies."""
    engine = _engine(url)
    try:
        _ensure_row(engine, name)
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait_seconds
        while not _take(engine, name, holder_name(what), token, lease_seconds):
            if time.monotonic() >= deadline:
                held = current_holder(engine, name)
                who = f"{held[0]}, lease until {datetime.fromtimestamp(held[1], UTC):%H:%M:%S} UTC" if held else ""
                raise LockHeld(f"{what} refused: another process holds the {name} lock ({who or 'just released'})")
            time.sleep(0.2)
        lease = Lease(engine, name, token, lease_seconds)
        lease._thread.start()
        try:
            yield lease
        finally:
            lease._stop.set()
            lease._thread.join(timeout=5)
            try:
                _release(engine, name, token)
            except exc.DBAPIError as error:  # the lease runs out by itself; keep the error that matters
                logger.warning("could not release the %s lease: %s", name, type(error).__name__)
    finally:
        engine.dispose()
