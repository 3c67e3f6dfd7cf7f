"""The audit trail: an append-only table in the store of who looked at, scored or overrode what.

Every citizen page view, every prediction over the API, every caseworker assessment and every
account or login event is one row: when, which event, who (the pseudonymous user id and role),
which citizen (pseudonymous id), which model version and which probability was shown. Nothing else
about the citizen: no birth year, no answers, and an assessment's free-text reason stays in the
assessment table. The table refuses UPDATE and DELETE (a trigger on SQLite and PostgreSQL), so a
row once written stays as written; several service replicas append to the same table.

An assessment and its audit row are written in one transaction. With `BIP_AUDIT_STDOUT=true` each
row is also printed as a JSON line, for a log shipper feeding a secured audit store.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Float, Integer, MetaData, String, Table, Text, func, inspect, select
from sqlalchemy.engine import Connection

from bip.errors import UserError
from features import store
from serving.accounts import Principal

ASSESSMENTS: tuple[str, ...] = ("agree", "higher", "lower")
TOP_FACTORS = 3


@dataclass(frozen=True)
class Event:
    """One audit row. `detail` holds event-specific fields without personal data (e.g. top factors)."""

    event: str
    user_id: str | None = None
    role: str | None = None
    citizen_id: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    probability: float | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def by(cls, principal: Principal | None, event: str, **values: Any) -> Event:
        who = {"user_id": principal.user_id, "role": principal.role} if principal else {}
        return cls(event, **who, **values)


def _schema() -> MetaData:
    metadata = MetaData()
    Table(
        "audit_events",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("at", DateTime(timezone=True), nullable=False, index=True),
        Column("event", String, nullable=False),
        Column("user_id", store.ID_TYPE),
        Column("role", String),
        Column("citizen_id", store.ID_TYPE, index=True),
        Column("model_name", String),
        Column("model_version", String),
        Column("probability", Float),
        Column("detail", JSON, nullable=False),
    )
    Table(
        "caseworker_assessments",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("citizen_id", store.ID_TYPE, nullable=False, index=True),
        Column("recorded_at", DateTime(timezone=True), nullable=False),
        Column("probability_shown", Float, nullable=False),
        Column("model_version", String, nullable=False),
        Column("assessment", String, nullable=False),
        Column("reason", Text),
        Column("user_id", store.ID_TYPE),
        Column("role", String),
        Column("view_id", Integer),
    )
    return metadata


SCHEMA = _schema()
EVENTS, ASSESSMENT_TABLE = SCHEMA.tables["audit_events"], SCHEMA.tables["caseworker_assessments"]
_ADDED_COLUMNS = ("user_id", "role", "view_id")  # assessments stored before the audit table lack these

_SQLITE_GUARDS = [
    f"CREATE TRIGGER IF NOT EXISTS audit_events_no_{verb.lower()} BEFORE {verb} ON audit_events "
    "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END"
    for verb in ("UPDATE", "DELETE")
]
_POSTGRES_GUARDS = [
    "CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'audit_events is append-only'; END $$",
    "DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events",
    "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
    "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()",
]


def _ensure(conn: Connection) -> None:
    """Create the tables and the append-only guard if missing; add the columns older stores lack."""
    inspector = inspect(conn)
    had_events = inspector.has_table("audit_events")
    if inspector.has_table("caseworker_assessments"):
        present = {c["name"] for c in inspector.get_columns("caseworker_assessments")}
        for name in _ADDED_COLUMNS:
            if name not in present:
                column = ASSESSMENT_TABLE.c[name]
                kind = column.type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE caseworker_assessments ADD COLUMN {name} {kind}")
    SCHEMA.create_all(conn)
    if not had_events:
        for statement in _POSTGRES_GUARDS if conn.dialect.name == "postgresql" else _SQLITE_GUARDS:
            conn.exec_driver_sql(statement)


class AuditTrail:
    """Appends audit events to the store at `url` (and, if asked, to stdout as JSON lines)."""

    def __init__(self, url: str, stdout: bool = False) -> None:
        self.url, self.stdout = url, stdout
        self._ready = False

    def _begin(self) -> Any:
        return store.write_transaction(self.url)

    def _prepare(self, conn: Connection) -> None:
        if not self._ready:
            _ensure(conn)
            self._ready = True

    def append(self, events: Sequence[Event]) -> list[int]:
        """Write the events in one transaction; their row ids, in order."""
        if not events:
            return []
        at = datetime.now(UTC)
        with self._begin() as conn:
            self._prepare(conn)
            ids = _insert(conn, events, at)
        self._echo(events, ids, at)
        return ids

    def record_assessment(self, principal: Principal, view_id: int, assessment: str, reason: str | None) -> int:
        """Store a caseworker's assessment of the probability shown in view `view_id`, which must be
        this principal's own view; the assessment and its audit row in one transaction. Its id."""
        if assessment not in ASSESSMENTS:
            raise UserError(f"assessment must be one of {', '.join(ASSESSMENTS)}.")
        at = datetime.now(UTC)
        with self._begin() as conn:
            self._prepare(conn)
            view = _view(conn, view_id)
            if view is None or view["user_id"] != principal.user_id or view["event"] != "page_view":
                raise UnknownView(view_id)
            row = {
                "citizen_id": view["citizen_id"],
                "recorded_at": at,
                "probability_shown": view["probability"],
                "model_version": view["model_version"],
                "assessment": assessment,
                "reason": reason,
                "user_id": principal.user_id,
                "role": principal.role,
                "view_id": view_id,
            }
            assessment_id = conn.execute(
                ASSESSMENT_TABLE.insert().values(row).returning(ASSESSMENT_TABLE.c.id)
            ).scalar_one()
            event = Event.by(
                principal,
                "assessment",
                citizen_id=view["citizen_id"],
                model_name=view["model_name"],
                model_version=view["model_version"],
                probability=view["probability"],
                detail={"assessment": assessment, "assessment_id": assessment_id, "view_id": view_id},
            )
            ids = _insert(conn, [event], at)
        self._echo([event], ids, at)
        return assessment_id, view["citizen_id"]

    def _echo(self, events: Sequence[Event], ids: Sequence[int], at: datetime) -> None:
        if self.stdout:
            lines = (json.dumps(as_record(e, i, at), ensure_ascii=False) for e, i in zip(events, ids, strict=True))
            sys.stdout.write("".join(f"{line}\n" for line in lines))
            sys.stdout.flush()


class UnknownView(UserError):
    """An assessment that does not answer a page view of the same user."""

    def __init__(self, view_id: int) -> None:
        super().__init__(f"view {view_id} is not a page view of yours")


class GroupCommit:
    """Audit rows of requests served on one event loop, written together: the rows of every request
    that reaches `append` before the loop's next turn go into one transaction. Each caller still gets
    its answer only after its rows are committed (no prediction leaves unaudited), but concurrent
    requests share one commit, the write's largest cost (an fsync on SQLite, a round trip to
    PostgreSQL). One request alone is written as soon as the loop turns, as before.

    For the loop's own callers (the async /predict); code in worker threads calls `AuditTrail.append`.
    `on_commit` is told the number of rows of each commit (the service's `bip_audit_commit_rows`)."""

    def __init__(self, trail: AuditTrail, on_commit: Callable[[int], None] | None = None) -> None:
        self.trail, self.on_commit = trail, on_commit
        self._pending: list[tuple[Sequence[Event], asyncio.Future[list[int]]]] = []
        self._scheduled = False

    async def append(self, events: Sequence[Event]) -> list[int]:
        """Write the events (with those of other requests now waiting); their row ids, in order.
        Raises what `AuditTrail.append` raised, in every request whose rows were in the failed write."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[int]] = loop.create_future()
        self._pending.append((events, done))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await done

    def _flush(self) -> None:
        pending, self._pending, self._scheduled = self._pending, [], False
        try:
            ids = self.trail.append([e for events, _ in pending for e in events])
        except Exception as error:  # noqa: BLE001 - handed to every waiting request, which reports it
            for _, done in pending:
                if not done.done():
                    done.set_exception(error)
            return
        if self.on_commit is not None:
            self.on_commit(len(ids))
        at = 0
        for events, done in pending:
            if not done.done():  # a caller gone (client disconnected) still has its rows written
                done.set_result(ids[at : at + len(events)])
            at += len(events)


def _insert(conn: Connection, events: Sequence[Event], at: datetime) -> list[int]:
    rows = [{**asdict(e), "detail": dict(e.detail), "at": at} for e in events]
    stmt = EVENTS.insert().returning(EVENTS.c.id, sort_by_parameter_order=True)
    return list(conn.execute(stmt, rows).scalars())


def _view(conn: Connection, view_id: int) -> Mapping[str, Any] | None:
    return conn.execute(select(EVENTS).where(EVENTS.c.id == view_id)).mappings().first()


def as_record(event: Event, event_id: int, at: datetime) -> dict[str, Any]:
    """An audit row as a JSON-able dict."""
    record = {"id": event_id, "at": at.isoformat(timespec="milliseconds"), **asdict(event)}
    record["detail"] = dict(event.detail)
    return {k: v for k, v in record.items() if v is not None and v != {}}


def prediction_event(principal: Principal | None, event: str, prediction: Mapping[str, Any]) -> Event:
    """The audit event of one prediction (a `schemas.Prediction` as a dict): its top factors, no answers."""
    factors = prediction["explanation"]["factors"][:TOP_FACTORS]
    return Event.by(
        principal,
        event,
        citizen_id=prediction["citizen_id"],
        model_name=prediction["model"]["name"],
        model_version=str(prediction["model"]["version"]),
        probability=round(float(prediction["probability"]), 6),
        detail={
            "as_of": str(prediction["as_of"]),
            "measured_on": str(prediction["measured_on"]),
            "top_factors": [{"factor": f["key"], "contribution": round(f["contribution"], 4)} for f in factors],
        },
    )


def _rows(conn: Connection, stmt: Any) -> Iterator[dict[str, Any]]:
    for row in conn.execute(stmt).mappings():
        yield {**row, "at": store.as_utc(row["at"])} if "at" in row else dict(row)


def events(
    url: str, since: datetime | None = None, citizen_id: str | None = None, event: str | None = None
) -> list[dict[str, Any]]:
    """Audit rows, oldest first, optionally from `since`, of one citizen, of one kind."""
    stmt = select(EVENTS).order_by(EVENTS.c.id)
    if since is not None:
        stmt = stmt.where(EVENTS.c.at >= since)
    if citizen_id is not None:
        stmt = stmt.where(EVENTS.c.citizen_id == citizen_id)
    if event is not None:
        stmt = stmt.where(EVENTS.c.event == event)
    with store.engine(url).connect() as conn:
        if not inspect(conn).has_table("audit_events"):
            return []
        return list(_rows(conn, stmt))


def count_since(url: str, event: str, user_id: str, since: datetime) -> int:
    """How many `event` rows of `user_id` since `since` (e.g. failed logins, for the rate limit)."""
    stmt = select(func.count()).where(EVENTS.c.event == event, EVENTS.c.user_id == user_id, EVENTS.c.at >= since)
    with store.engine(url).connect() as conn:
        if not inspect(conn).has_table("audit_events"):
            return 0
        return int(conn.execute(stmt).scalar_one())


def assessments(url: str, citizen_id: str) -> list[dict[str, Any]]:
    """The caseworker assessments recorded for a citizen, oldest first, with who made them."""
    stmt = (
        select(ASSESSMENT_TABLE)
        .where(ASSESSMENT_TABLE.c.citizen_id == citizen_id)
        .order_by(ASSESSMENT_TABLE.c.recorded_at, ASSESSMENT_TABLE.c.id)
    )
    with store.engine(url).connect() as conn:
        if not inspect(conn).has_table("caseworker_assessments"):
            return []
        rows = conn.execute(stmt).mappings().all()
    return [{**row, "recorded_at": store.as_utc(row["recorded_at"])} for row in rows]
