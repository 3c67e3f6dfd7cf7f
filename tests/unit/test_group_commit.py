"""The audit group commit of /predict: the rows of requests waiting together go into one transaction,
each request gets its own ids, and a failed write fails every request whose rows were in it."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import SQLAlchemyError

from serving import audit
from serving.audit import AuditTrail, Event, GroupCommit


def event(citizen: str) -> Event:
    return Event("api_predict", "service", "service", citizen, "bip-job-chance", "3", 0.25, {"as_of": "2016-01-01"})


@pytest.fixture()
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'store.db'}"


def test_requests_waiting_together_share_one_commit_and_get_their_own_ids(url):
    commits: list[int] = []
    group = GroupCommit(AuditTrail(url), on_commit=commits.append)

    async def requests() -> list[list[int]]:
        return await asyncio.gather(*(group.append([event(f"C{k}")] * (k % 2 + 1)) for k in range(5)))

    ids = asyncio.run(requests())
    assert commits == [7]  # 1 + 2 + 1 + 2 + 1 rows, one transaction
    assert [len(i) for i in ids] == [1, 2, 1, 2, 1]
    rows = {row["id"]: row["citizen_id"] for row in audit.events(url)}
    assert [[rows[i] for i in request] for request in ids] == [["C0"], ["C1", "C1"], ["C2"], ["C3", "C3"], ["C4"]]


def test_a_request_alone_is_written_at_once_and_later_ones_in_their_own_commit(url):
    commits: list[int] = []
    group = GroupCommit(AuditTrail(url), on_commit=commits.append)

    async def one_after_another() -> None:
        for k in range(3):
            await group.append([event(f"C{k}")])

    asyncio.run(one_after_another())
    assert commits == [1, 1, 1]
    assert [row["citizen_id"] for row in audit.events(url)] == ["C0", "C1", "C2"]


def test_a_failed_write_fails_every_request_in_it_and_the_next_write_goes_through(tmp_path):
    (tmp_path / "blocked.db").mkdir()  # a folder where the store's file should be: SQLite cannot open it
    broken = GroupCommit(AuditTrail(f"sqlite:///{tmp_path / 'blocked.db'}"))

    async def requests(group: GroupCommit) -> list:
        return await asyncio.gather(*(group.append([event(f"C{k}")]) for k in range(3)), return_exceptions=True)

    failed = asyncio.run(requests(broken))
    assert all(isinstance(result, SQLAlchemyError) for result in failed)
    (tmp_path / "blocked.db").rmdir()
    written = asyncio.run(requests(broken))
    assert [len(ids) for ids in written] == [1, 1, 1]
    assert len(audit.events(f"sqlite:///{tmp_path / 'blocked.db'}")) == 3  # the failed write left no rows
