"""Locks across processes and machines, on a real store (SQLite, and PostgreSQL when configured):
the leases of `training.locks` and the store-wide ingest lock of `features.store.ingest`.

Each holder is its own process, so that a holder can be killed with SIGKILL (no clean-up runs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from features.build import truncate_dataset
from features.contract import write_dataset
from features.dataset import Dataset
from features.store import INGEST_LOCK_KEY, IngestRunning, ingest, ingests, load
from simulator.simulation import simulate
from training.locks import LockHeld, current_holder, exclusive

REPO = Path(__file__).resolve().parents[2]
LEASE = 2.0

HOLD = """
import sys, time
from training.locks import exclusive
with exclusive(sys.argv[1], "retrain", "holder", lease_seconds=float(sys.argv[2])):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def hold_in_process(url: str, lease_seconds: float, hold_seconds: float = 300) -> subprocess.Popen:
    """A process that holds the retrain lease for `hold_seconds`, then lets go."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, url, str(lease_seconds), str(hold_seconds)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_holder_is_refused_and_a_killed_holder_frees_the_lease(store_url):
    holder = hold_in_process(store_url, LEASE)
    try:
        refusal = rf"another process holds the retrain lock \(pid {holder.pid}: holder"
        with pytest.raises(LockHeld, match=refusal), exclusive(store_url, "retrain", "second"):
            pass
        # Other names are other locks.
        with exclusive(store_url, "registry", "promotion"):
            pass
        # The holder's heartbeat keeps the lease alive past its length.
        time.sleep(LEASE * 1.5)
        with pytest.raises(LockHeld), exclusive(store_url, "retrain", "second"):
            pass
        holder.send_signal(signal.SIGKILL)  # no clean-up: the lease row still names the dead holder
        holder.wait(30)
        killed = time.monotonic()
        with exclusive(store_url, "retrain", "after", wait_seconds=LEASE * 5) as lease:
            waited = time.monotonic() - killed
            lease.check()
            held = current_holder(lease.engine, "retrain")
            assert held is not None and held[0].startswith(f"pid {os.getpid()}: after")
        assert waited <= LEASE + 1.5  # freed by expiry, within one lease of the kill
    finally:
        holder.kill()
        holder.wait(30)


def test_a_lease_is_released_on_exit_and_an_error_inside(store_url):
    with pytest.raises(RuntimeError), exclusive(store_url, "retrain", "first"):
        raise RuntimeError("boom")
    with exclusive(store_url, "retrain", "second") as lease:
        assert current_holder(lease.engine, "retrain")[0].startswith(f"pid {os.getpid()}: second")
    with exclusive(store_url, "retrain", "third") as lease:
        pass
    assert current_holder(lease.engine, "retrain") is None


def test_waiting_for_a_lease_gets_it_once_the_holder_lets_go(store_url):
    holder = hold_in_process(store_url, lease_seconds=60, hold_seconds=2)
    try:
        with pytest.raises(LockHeld), exclusive(store_url, "retrain", "impatient", wait_seconds=0.3):
            pass
        started = time.monotonic()
        with exclusive(store_url, "retrain", "patient", wait_seconds=30):
            # Released by its holder, long before its 60 s lease would have run out.
            assert time.monotonic() - started < 20
    finally:
        holder.kill()
        holder.wait(30)


CHECK = """
import sys
from training.locks import LeaseLost, exclusive
with exclusive(sys.argv[1], "retrain", "stalled", lease_seconds=1.0) as lease:
    print("held", flush=True)
    for _ in sys.stdin:
        try:
            lease.check()
            print("still held", flush=True)
        except LeaseLost as error:
            print(error, flush=True)
"""


def writes_blocked(url: str) -> bool:
    """Whether another connection holds the database's write lock on the leases now (SQLite: the file's
    write lock; PostgreSQL: the lease row's lock), asked without waiting."""
    if url.startswith("sqlite"):
        import sqlite3

        connection = sqlite3.connect(make_url(url).database, timeout=0.2, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            connection.close()
    with create_engine(url).connect() as conn, conn.begin():
        conn.execute(text("SET LOCAL lock_timeout = '200ms'"))
        try:
            conn.execute(text("SELECT 1 FROM leases WHERE name = 'retrain' FOR UPDATE"))
            return False
        except OperationalError:
            return True


def stall(holder: subprocess.Popen, url: str) -> None:
    """Stop the holder (SIGSTOP) at a moment it is not inside a write of its lease: a process stopped
    inside a write keeps the database's own lock, which no lease can take from it (SQLite's file lock
    then refuses every writer, whatever the lease says)."""
    for _ in range(100):
        holder.send_signal(signal.SIGSTOP)
        if not writes_blocked(url):
            return
        holder.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("the holder was inside a write at every try")


def test_a_stalled_holder_keeps_its_lease_unless_another_took_it(store_url):
    """A holder stopped (SIGSTOP) past its lease: if nobody took the lease meanwhile, it is still its
    own; once another process has taken it, `check()` says so before any irreversible step."""
    holder = subprocess.Popen(
        [sys.executable, "-c", CHECK, store_url], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )

    def ask() -> str:
        holder.stdin.write("check\n")
        holder.stdin.flush()
        return holder.stdout.readline().strip()

    try:
        assert holder.stdout.readline().strip() == "held"
        stall(holder, store_url)
        time.sleep(2.0)
        holder.send_signal(signal.SIGCONT)
        assert ask() == "still held"
        stall(holder, store_url)
        time.sleep(2.0)
        with exclusive(store_url, "retrain", "taker") as taken:
            holder.send_signal(signal.SIGCONT)
            answer = ask()
            assert answer.startswith("the retrain lock was lost (another process took it"), answer
            assert current_holder(taken.engine, "retrain")[0].startswith(f"pid {os.getpid()}: taker")
    finally:
        holder.send_signal(signal.SIGCONT)
        holder.kill()
        holder.wait(30)


# --- the ingest lock ----------------------------------------------------------------------------------

ROUND_1, ROUND_2 = date(2015, 9, 30), date(2015, 12, 31)


@pytest.fixture(scope="module")
def simulated() -> Dataset:
    return simulate(400, seed=11, truth_draws=0).dataset


def table_sizes(dataset: Dataset) -> dict[str, int]:
    return {name: len(getattr(dataset, name)) for name in Dataset.__dataclass_fields__}


class HeldIngestLock:
    """The store's ingest lock held by this test process, as another ingest would hold it."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        self.conn = self.engine.connect()

    def __enter__(self) -> HeldIngestLock:
        if self.conn.dialect.name == "postgresql":
            self.conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": INGEST_LOCK_KEY})
        else:
            self.conn.connection.driver_connection.isolation_level = None
            self.conn.exec_driver_sql("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *exc_info) -> None:
        if self.conn.dialect.name == "postgresql":
            self.conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": INGEST_LOCK_KEY})
            self.conn.commit()
        else:
            self.conn.exec_driver_sql("COMMIT")
        self.conn.close()
        self.engine.dispose()


def test_an_ingest_refuses_clearly_while_another_holds_the_store(store_url, simulated):
    ingest(truncate_dataset(simulated, ROUND_1), store_url)  # the tables exist; the lock guards writers
    with HeldIngestLock(store_url):
        started = time.monotonic()
        with pytest.raises(IngestRunning, match="another ingest is running on this store"):
            ingest(truncate_dataset(simulated, ROUND_2), store_url, wait_seconds=1.0)
        assert 0.9 <= time.monotonic() - started < 10
    assert len(ingests(store_url)) == 1  # the refused one stored nothing


def test_an_ingest_waits_for_the_lock_and_then_plans_from_what_was_committed(store_url, simulated):
    ingest(truncate_dataset(simulated, ROUND_1), store_url)
    done: list = []
    with HeldIngestLock(store_url):
        waiting = threading.Thread(
            target=lambda: done.append(ingest(truncate_dataset(simulated, ROUND_2), store_url, wait_seconds=60))
        )
        waiting.start()
        time.sleep(1.5)
        assert waiting.is_alive() and not done  # it waits rather than failing or writing
    waiting.join(60)
    second = truncate_dataset(simulated, ROUND_2)
    assert done and done[0].added["measurements"] == len(second.measurements) - len(
        truncate_dataset(simulated, ROUND_1).measurements
    )
    assert table_sizes(load(store_url)) == table_sizes(second)


INGEST = """
import sys
from features.contract import read_dataset
from features.store import ingest
dataset, _ = read_dataset(sys.argv[1])
print(ingest(dataset, sys.argv[2], source=sys.argv[1], wait_seconds=120).added["measurements"], flush=True)
"""


def test_two_concurrent_ingests_both_land_and_the_counts_are_right(store_url, simulated, tmp_path):
    """Two processes ingest overlapping exports of one date (two job centres' views: two thirds of the
    citizens each, the middle third in both) into one new store at once: one goes first, the other waits
    and then adds only what the first did not, so every row is counted once."""
    extract = truncate_dataset(simulated, ROUND_2)
    ids = sorted(extract.citizens["citizen_id"])
    third = len(ids) // 3
    parts = {"first": ids[: 2 * third], "second": ids[third:]}
    folders = {}
    for name, part in parts.items():
        keep = set(part)
        folders[name] = tmp_path / f"extract_{name}"
        tables = {n: t[t["citizen_id"].isin(keep)] if "citizen_id" in t else t for n, t in extract.tables().items()}
        write_dataset(Dataset(**tables), folders[name])
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", INGEST, str(folders[name]), store_url],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in parts
    ]
    results = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err for _, err in results]
    assert table_sizes(load(store_url)) == table_sizes(extract)
    log = ingests(store_url)
    assert len(log) == 2
    for table in Dataset.__dataclass_fields__:
        assert sum(entry["added"][table] for entry in log) == len(getattr(extract, table))


# --- the first champion -------------------------------------------------------------------------------


def test_the_first_champion_is_set_under_the_registry_lease(store_url, simulated, tmp_path, monkeypatch):
    """`bip train` on an empty registry sets the alias only while it holds the registry lease that
    promotions take: while another process holds it, training stops before the alias moves."""
    from conftest_service import small_train_config

    from training import registry, tracking
    from training.train import train

    monkeypatch.setattr(tracking, "FIRST_CHAMPION_WAIT_SECONDS", 0.5)
    tracking_uri, artifacts = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlartifacts"
    registry.client(tracking_uri).search_registered_models()  # the tracking store's tables, first

    def first_training():
        return train(simulated, tracking_uri, artifacts, "bip", "m", small_train_config(1), lease_url=store_url)

    with exclusive(store_url, "registry", "a promotion elsewhere"), pytest.raises(LockHeld, match="registry lock"):
        first_training()
    assert registry.champion_version("m", tracking_uri=tracking_uri) is None
    outcome = first_training()
    assert outcome.champion_set and registry.champion_version("m", tracking_uri=tracking_uri) == outcome.model_version
