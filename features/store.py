"""The measurement store: the contract's five tables in SQL, plus the ingest log (assessments: serving.audit).

SQLAlchemy Core with portable SQL, so the same code serves SQLite (the default, one file under
BIP_HOME) and PostgreSQL (production). Rows are identified by the contract's natural keys
(`features.dataset.KEYS`), so a later export of the same job centre updates rows in place:
`ingest` adds new rows, updates changed ones and counts only real changes, all in one
transaction. The store never deletes contract rows, because an export may be partial.

(About 690 lines in one module: the schema, the engine, the typed row conversion and the readers and
the writer share private helpers; splitting the writer out would make them public for one caller.)
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Date,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Select,
    SmallInteger,
    String,
    Table,
    Text,
    create_engine,
    event,
    exc,
    func,
    inspect,
    select,
    text,
)

from bip.errors import UserError
from bip.progress import QUIET, Progress, tracked
from features.catalogue import SCORE_COLUMNS
from features.dataset import COLUMNS, KEYS, TABLES, Dataset, canonical, empty_dataset

CHUNK_ROWS = 100_000
"""Rows per insert batch and per fetched batch: bounds memory and keeps executemany efficient."""

INGEST_CACHE_KIB = 256 * 1024
"""SQLite page cache while ingesting: enough to keep the B-trees being filled in memory."""

IN_LIST_SIZE = 5_000
"""Citizen ids per `IN (...)` list, well below SQLite's and PostgreSQL's bound-parameter limits."""

INGEST_WAIT_SECONDS = 120.0
"""How long an ingest waits for another one to finish before it gives up (IngestRunning)."""

INGEST_LOCK_KEY = 0x6269705F696E67  # "bip_ing"
"""The PostgreSQL advisory lock key of the store-wide ingest lock."""

_INGEST_RUNNING = (
    "another ingest is running on this store and did not finish within {:.0f} s; nothing was stored. "
    "Run this ingest again when it has finished."
)
"""Citizen ids per `IN (...)` list, well below SQLite's and PostgreSQL's bound-parameter limits."""

PARENTS: dict[str, dict[str, str]] = {
    "measurements": {"citizen_id": "citizens", "caseworker_id": "caseworkers"},
    "interventions": {"citizen_id": "citizens"},
    "outcomes": {"citizen_id": "citizens"},
}
"""Each reference column and the table whose key it must name (the contract's "must exist in")."""

NULLABLE: frozenset[str] = frozenset({"job_orientation", "ended_on", "event_on", *SCORE_COLUMNS})
"""The contract columns that may be empty; every other contract column is required."""

IDENTIFIERS: frozenset[str] = frozenset({"citizen_id", "caseworker_id", "measurement_id", "intervention"})

# Byte order ("C") for identifiers on PostgreSQL, so that ORDER BY and prefix search agree with
# SQLite's default and with Python's string order, and use the index.
ID_TYPE = String().with_variant(String(collation="C"), "postgresql")


class StoreError(UserError):
    """The dataset conflicts with the store (a missing reference, a repeated key); nothing was stored."""


@dataclass(frozen=True)
class IngestSummary:
    """What one ingest changed: rows added and rows updated per table (unchanged rows are not counted)."""

    added: dict[str, int]
    updated: dict[str, int]
    ingest_id: int | None = None

    @property
    def changed(self) -> bool:
        return any(self.added.values()) or any(self.updated.values())

    def __str__(self) -> str:
        width = max(map(len, self.added))
        return "\n".join(
            f"{table:<{width}}  added {self.added[table]}, updated {self.updated[table]}" for table in self.added
        )


def _sql_type(column: str, kind: str) -> Any:
    if column in IDENTIFIERS:
        return ID_TYPE
    if kind == "date":
        return Date
    if kind == "float64":
        return Float
    if kind == "Int64":
        return SmallInteger if column in SCORE_COLUMNS else Integer
    return String


def _contract_table(metadata: MetaData, name: str) -> Table:
    """A contract table: its columns in contract order, its natural key as primary key, its references."""
    keys, parents = KEYS[name], PARENTS.get(name, {})
    columns = [
        Column(
            column,
            _sql_type(column, kind),
            *([ForeignKey(f"{parents[column]}.{KEYS[parents[column]][0]}")] if column in parents else []),
            primary_key=column in keys,
            nullable=column in NULLABLE,
        )
        for column, kind in COLUMNS[name].items()
    ]
    # Natural-key rows are small, so SQLite stores them clustered by key (one B-tree, not two).
    return Table(name, metadata, *columns, sqlite_with_rowid=False)


def _schema() -> MetaData:
    metadata = MetaData()
    for name in TABLES:
        _contract_table(metadata, name)
    Index("ix_measurements_citizen_id", metadata.tables["measurements"].c.citizen_id)
    Table(
        "ingests",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("ingested_at", DateTime(timezone=True), nullable=False),
        Column("source", Text),
        Column("added", JSON, nullable=False),
        Column("updated", JSON, nullable=False),
    )
    return metadata


SCHEMA = _schema()


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy's recipe for real SQLite transactions: the driver's implicit BEGIN is switched off
    # (it would leave reads and DDL outside the transaction) and `_sqlite_begin` emits our own.
    # Foreign keys stay declared but unenforced on SQLite (its default): `ingest`, the only writer of
    # the contract tables, checks every reference set-based, at a fraction of a per-row check's cost.
    dbapi_connection.isolation_level = None


def _sqlite_begin(conn: Connection) -> None:
    # A writer takes the write lock up front, so no other writer can slip in between its reads and writes.
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("bip_write") else "BEGIN")


@functools.lru_cache(maxsize=8)
def _engine(url: str) -> Engine:
    """One engine (and connection pool) per store URL, so the prediction service's lookups stay cheap.
    Its errors never show the statement's parameters: they are citizens' ids and answers."""
    engine = create_engine(url, hide_parameters=True)
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # a fresh BIP_HOME
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


@contextmanager
def _write_transaction(url: str, bulk: bool = False, busy_seconds: float | None = None) -> Iterator[Connection]:
    """A connection in a write transaction that commits on success and rolls back on any error; on
    SQLite with `busy_seconds`, in WAL mode, waiting that long for another writer."""
    with _engine(url).connect() as conn:
        conn.execution_options(bip_write=True)
        # For bulk writes to SQLite a large page cache, then back to the default for the pooled
        # connection; set on the driver's connection, outside any transaction.
        pragma = conn.connection.driver_connection.execute if bulk and conn.dialect.name == "sqlite" else None
        if busy_seconds is not None and conn.dialect.name == "sqlite":
            _sqlite_ingest_pragmas(conn, busy_seconds)
        if pragma:
            pragma(f"PRAGMA cache_size = -{INGEST_CACHE_KIB}")
        try:
            with conn.begin():
                yield conn
        finally:
            # After an interrupt (Ctrl-C) SQLAlchemy has invalidated and closed the connection: nothing
            # to reset, and trying would replace the interrupt by an error of its own.
            if pragma and not conn.invalidated:
                with suppress(sqlite3.ProgrammingError):
                    pragma("PRAGMA cache_size = -2000")


def engine(url: str) -> Engine:
    """The shared engine of a store URL, for the serving stage's own tables (accounts, audit)."""
    return _engine(url)


def write_transaction(url: str) -> AbstractContextManager[Connection]:
    """A write transaction on the store (SQLite: the write lock is taken up front), for the serving stage."""
    return _write_transaction(url)


# --- converting between frames and rows -----------------------------------------------------------


def _python_values(values: pd.Series, kind: str, dates_as_text: bool) -> list[Any]:
    """A column as plain Python values for the driver: None for missing, dates as `date` or ISO text."""
    if kind == "date":
        # A few thousand distinct dates per million rows: convert each once, then spread by code.
        codes, days = pd.factorize(values.to_numpy())
        days = days.astype("datetime64[D]")
        labels = np.datetime_as_string(days, unit="D") if dates_as_text else days
        return np.append(labels.astype(object), None)[codes].tolist()  # code -1 (missing) takes the None
    if kind == "float64":
        return values.astype(object).where(values.notna(), None).tolist()
    return values.to_numpy(dtype=object, na_value=None).tolist()


def _row_batches(
    frame: pd.DataFrame, name: str, columns: Sequence[str], dates_as_text: bool, order: np.ndarray | None = None
) -> Iterator[list[tuple]]:
    """The frame's rows (in `order` when given) as tuples of driver values, in batches of CHUNK_ROWS."""
    kinds = COLUMNS[name]
    for start in range(0, len(frame), CHUNK_ROWS):
        batch = slice(start, start + CHUNK_ROWS)
        part = frame.iloc[batch if order is None else order[batch]]
        yield list(zip(*(_python_values(part[c], kinds[c], dates_as_text) for c in columns), strict=True))


def _key_order(frame: pd.DataFrame, name: str) -> np.ndarray | None:
    """Row positions in key order (None when already in order): B-trees fill fastest in key order."""
    keys = list(KEYS[name])
    if len(keys) == 1 and frame[keys[0]].is_monotonic_increasing:
        return None
    return frame[keys].reset_index(drop=True).sort_values(keys).index.to_numpy()


def _psycopg(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"


def _dates_as_text(conn: Connection) -> bool:
    # SQLAlchemy's SQLite Date type stores ISO text; writing that text directly skips a per-value conversion.
    return conn.dialect.name == "sqlite"


def _fetch(conn: Connection, stmt: Select, stream: bool) -> Iterator[tuple[list[str], list[tuple]]]:
    """The statement's column names and rows, in batches of plain tuples from the driver's own cursor."""
    # SQLAlchemy compiles the statement, but millions of its Row objects cost several times what the
    # driver's tuples do. To `stream` a whole table, PostgreSQL gets a server-side cursor instead of
    # buffering every row; not for small lookups, whose plan it would bend towards the first rows.
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = [compiled.params[k] for k in compiled.positiontup or ()] if conn.dialect.positional else compiled.params
    driver = conn.connection.driver_connection
    cursor = driver.cursor(name="bip_fetch") if stream and _psycopg(conn) else driver.cursor()
    try:
        cursor.execute(str(compiled), params)
        columns = [d[0] for d in cursor.description]
        while rows := cursor.fetchmany(CHUNK_ROWS):
            yield columns, rows
    finally:
        cursor.close()


ARROW_TYPES = {"str": pa.large_string(), "Int64": pa.int64(), "float64": pa.float64()}
PANDAS_TYPES = {pa.int64(): pd.Int64Dtype(), pa.large_string(): pd.StringDtype("pyarrow", na_value=np.nan)}


def _arrow_column(values: Sequence[Any], kind: str) -> pa.Array:
    """A fetched column as an Arrow array whose pandas form has the canonical dtype."""
    if kind == "date":  # ISO text from SQLite, `date` objects from PostgreSQL; datetime64[s] in pandas
        return pa.array(values).cast(pa.date32()).cast(pa.timestamp("s"))
    return pa.array(values, type=ARROW_TYPES[kind])


def _frames(conn: Connection, name: str, stmt: Select, stream: bool = True) -> Iterator[pd.DataFrame]:
    """The statement's rows (all columns of table `name`) as canonical frames of at most CHUNK_ROWS rows."""
    kinds = COLUMNS[name]
    for columns, rows in _fetch(conn, stmt, stream):
        # Column-wise through Arrow: one typed conversion per column instead of pandas inferring per cell.
        arrays = [_arrow_column(values, kinds[c]) for c, values in zip(columns, zip(*rows, strict=True), strict=True)]
        yield pa.Table.from_arrays(arrays, names=columns).to_pandas(types_mapper=PANDAS_TYPES.get)


def _read_table(conn: Connection, name: str, stmt: Select, stream: bool = True) -> pd.DataFrame:
    frames = list(_frames(conn, name, stmt, stream))
    return pd.concat(frames, ignore_index=True) if frames else _empty(name)


def _empty(name: str) -> pd.DataFrame:
    return canonical(name, pd.DataFrame(columns=list(COLUMNS[name])))


def _as_canonical(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The frame in canonical form, without copying one that already is (the validator's output)."""
    expected = COLUMNS[name]
    dtypes = {"date": "datetime64[s]"}
    if list(frame.columns) == list(expected) and all(frame[c].dtype == dtypes.get(k, k) for c, k in expected.items()):
        return frame
    return canonical(name, frame)


def _isin(values: pd.Series, allowed: pd.Series) -> np.ndarray:
    """Whether each value is one of `allowed`, as a boolean array."""
    # pyarrow's kernel: pandas' isin on arrow-backed strings is several times slower at this size.
    values, value_set = pa.array(values), pa.array(allowed)
    if isinstance(value_set, pa.ChunkedArray):
        value_set = value_set.combine_chunks()
    return np.asarray(pc.is_in(values, value_set=value_set.cast(values.type)), dtype=bool)


# --- ingest ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """The rows of one table that an ingest inserts and those it updates."""

    new: pd.DataFrame
    changed: pd.DataFrame
    into_empty: bool


def _row_hashes(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    # A 64-bit digest per row stands in for the row's values: the diff then holds keys and one
    # integer per row instead of two full copies of a table (collision odds ~ rows / 2**64).
    return pd.util.hash_pandas_object(frame[list(columns)], index=False).to_numpy()


def _value_columns(name: str) -> list[str]:
    return [c for c in COLUMNS[name] if c not in KEYS[name]]


def _stored_digests(conn: Connection, name: str) -> pd.DataFrame:
    """The stored table as its key columns plus a `_digest` of the other columns."""
    keys = list(KEYS[name])
    parts = [
        part[keys].assign(_digest=_row_hashes(part, _value_columns(name)))
        for part in _frames(conn, name, select(SCHEMA.tables[name]))
    ]
    return pd.concat(parts, ignore_index=True).astype({"_digest": "UInt64"})


def _has_rows(conn: Connection, name: str) -> bool:
    return conn.execute(select(1).select_from(SCHEMA.tables[name]).limit(1)).first() is not None


def _plan(conn: Connection, name: str, incoming: pd.DataFrame) -> _Plan:
    """Split incoming rows into new rows and rows whose values differ from the stored ones."""
    if not _has_rows(conn, name):
        return _Plan(new=incoming, changed=incoming.iloc[:0], into_empty=True)
    if incoming.empty:  # a partial export: nothing to compare, so the stored table is not read
        return _Plan(new=incoming, changed=incoming, into_empty=False)
    keys = list(KEYS[name])
    left = incoming[keys].assign(_digest=_row_hashes(incoming, _value_columns(name))).astype({"_digest": "UInt64"})
    try:
        merged = left.merge(_stored_digests(conn, name), on=keys, how="left", validate="one_to_one")
    except pd.errors.MergeError as error:
        raise StoreError(f"{name}: a key {tuple(keys)} occurs more than once in the dataset.") from error
    stored = merged["_digest_y"]
    new = stored.isna().to_numpy()
    changed = ~new & (merged["_digest_x"] != stored).fillna(False).to_numpy(dtype=bool)
    return _Plan(new=incoming[new], changed=incoming[changed], into_empty=False)


def _stored_rows(conn: Connection, name: str, candidates: Sequence[str], columns: Sequence[str]) -> list[tuple]:
    """The `columns` of the table's rows whose (single-column) key is one of the candidates, in batches."""
    table = SCHEMA.tables[name]
    key = table.c[KEYS[name][0]]
    selected = select(*(table.c[c] for c in columns))
    return [
        tuple(row)
        for batch in _batches(list(dict.fromkeys(candidates)), IN_LIST_SIZE)
        for row in conn.execute(selected.where(key.in_(batch))).all()
    ]


def _stored_keys(conn: Connection, name: str, candidates: pd.Series) -> pd.Series:
    """Those of the candidate keys that the table already holds."""
    found = _stored_rows(conn, name, candidates.tolist(), KEYS[name][:1])
    return pd.Series([k for (k,) in found], dtype="str")


def _check_references(conn: Connection, plans: dict[str, _Plan], dataset: dict[str, pd.DataFrame]) -> None:
    """Raise StoreError unless every written reference names a row in the dataset or in the store."""
    for name, references in PARENTS.items():
        for column, parent in references.items():
            ids = pd.concat([plans[name].new[column], plans[name].changed[column]], ignore_index=True)
            missing = ids[~_isin(ids, dataset[parent][KEYS[parent][0]])]
            if len(missing) and not plans[parent].into_empty:
                missing = missing[~_isin(missing, _stored_keys(conn, parent, missing))]
            if len(missing):
                # A count only: citizens' and caseworkers' ids never leave the store in a message.
                raise StoreError(
                    f"{name}.{column}: {missing.nunique()} id(s) exist neither in the dataset's {parent} "
                    f"nor in the store. Add them to {parent} and ingest again; nothing was stored."
                )


def _check_kept_citizens(conn: Connection, changed: pd.DataFrame) -> None:
    """Raise StoreError if a changed measurement would move to another citizen: a measurement_id names
    one citizen's round for good (a re-used id would silently take a round from one citizen's history
    and give it to another's)."""
    if changed.empty:
        return
    stored = dict(
        _stored_rows(conn, "measurements", changed["measurement_id"].tolist(), ["measurement_id", "citizen_id"])
    )
    moved = sum(stored[m] != c for m, c in zip(changed["measurement_id"], changed["citizen_id"], strict=True))
    if moved:
        raise StoreError(
            f"measurements.citizen_id: {moved} stored round(s) would move to another citizen. A measurement_id "
            "names one citizen's round; give the other citizen's round an id of its own. Nothing was stored."
        )


def _check_follow_up_kept(conn: Connection, changed: pd.DataFrame) -> None:
    """Raise StoreError if a changed outcome would end its follow-up before the stored one: an export
    older than what the store holds (ingested after a newer one) would take back events and reopen
    finished interventions. `ingest(..., allow_older=True)` takes such a correction on purpose."""
    if changed.empty:
        return
    stored = dict(_stored_rows(conn, "outcomes", changed["citizen_id"].tolist(), ["citizen_id", "followed_until"]))
    before = pd.to_datetime(changed["citizen_id"].map(stored))
    earlier = int((pd.to_datetime(changed["followed_until"]) < before).sum())
    if earlier:
        raise StoreError(
            f"outcomes.followed_until: {earlier} citizen(s) would be followed for a shorter time than the store "
            "says. The export looks older than what was ingested before it; ingest exports in the order they "
            "were made (or, to correct the follow-up on purpose, ingest with --allow-older). Nothing was stored."
        )


def _check_merged(conn: Connection, plans: dict[str, _Plan]) -> None:
    """Raise StoreError if the store, with the dataset written into it (not yet committed), breaks the
    contract for a citizen the dataset touched: an export is checked on its own, and rules across tables
    (no round before enrolment, say) also hold against rows it does not repeat. A first ingest into an
    empty store was checked whole already."""
    if all(plan.into_empty for plan in plans.values()):
        return
    touched = pd.concat(
        [
            part["citizen_id"]
            for name in TABLES
            if "citizen_id" in COLUMNS[name]
            for part in (plans[name].new, plans[name].changed)
        ],
        ignore_index=True,
    )
    ids = sorted(set(touched.dropna().tolist()))
    if not ids:
        return
    from features.contract import validate_dataset

    tables = {name: _load_table(conn, name, "citizen_id", ids) for name in TABLES if name != "caseworkers"}
    workers = sorted(set(tables["measurements"]["caseworker_id"].dropna().tolist()))
    tables["caseworkers"] = _load_table(conn, "caseworkers", "caseworker_id", workers)
    problems = validate_dataset(Dataset(**tables), max_problems=1000)
    if problems:
        # The rules broken and how often: rows of the store have no file row, and citizens' values stay out.
        counts = pd.Series([f"{p.table}.{p.column}: {p.message}" for p in problems]).value_counts()
        listed = "; ".join(f"{rule} ({n} row(s))" for rule, n in counts.items())
        raise StoreError(
            f"The dataset, merged with the store, would break the data contract for {len(ids)} citizen(s) it "
            f"touches: {listed}. Nothing was stored."
        )


def _insert(conn: Connection, name: str, frame: pd.DataFrame) -> None:
    """Insert the rows in key order and in batches: COPY on PostgreSQL with psycopg, executemany elsewhere."""
    if frame.empty:
        return
    columns, order = list(COLUMNS[name]), _key_order(frame, name)
    quote = conn.dialect.identifier_preparer.quote
    target = f"{quote(name)} ({', '.join(map(quote, columns))})"
    if _psycopg(conn):
        try:
            with conn.connection.driver_connection.cursor() as cursor, cursor.copy(f"COPY {target} FROM STDIN") as copy:
                for rows in _row_batches(frame, name, columns, dates_as_text=False, order=order):
                    for row in rows:
                        copy.write_row(row)
        except conn.dialect.loaded_dbapi.IntegrityError as error:  # the driver's own: SQLAlchemy is bypassed
            raise exc.IntegrityError(f"COPY {name}", None, error) from error
        return
    sql = f"INSERT INTO {target} VALUES ({', '.join([_placeholder(conn)] * len(columns))})"
    for rows in _row_batches(frame, name, columns, _dates_as_text(conn), order):
        conn.exec_driver_sql(sql, rows)


def _insert_into_empty(conn: Connection, name: str, frame: pd.DataFrame) -> None:
    """Insert into an empty table, building its secondary indexes once afterwards instead of row by row."""
    indexes = SCHEMA.tables[name].indexes
    for index in indexes:
        index.drop(conn)
    _insert(conn, name, frame)
    for index in indexes:
        index.create(conn)


def _update(conn: Connection, name: str, frame: pd.DataFrame) -> None:
    """Overwrite the non-key columns of the rows with these keys, in batches."""
    if frame.empty:
        return
    keys, values = list(KEYS[name]), _value_columns(name)
    quote, mark = conn.dialect.identifier_preparer.quote, _placeholder(conn)
    sql = (
        f"UPDATE {quote(name)} SET {', '.join(f'{quote(c)} = {mark}' for c in values)} "
        f"WHERE {' AND '.join(f'{quote(c)} = {mark}' for c in keys)}"
    )
    for rows in _row_batches(frame, name, values + keys, _dates_as_text(conn), _key_order(frame, name)):
        conn.exec_driver_sql(sql, rows)


def _placeholder(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _record_ingest(conn: Connection, source: str | None, added: dict, updated: dict) -> int:
    ingests = SCHEMA.tables["ingests"]
    row = {"ingested_at": datetime.now(UTC), "source": source, "added": added, "updated": updated}
    return conn.execute(ingests.insert().values(row).returning(ingests.c.id)).scalar_one()


class IngestRunning(UserError):
    """Another ingest holds the store's ingest lock for longer than this one would wait."""


def _sqlite_ingest_pragmas(conn: Connection, wait_seconds: float) -> None:
    """WAL (readers, such as the service, go on reading while an ingest writes; it persists in the file)
    and a busy timeout of `wait_seconds`, so a second ingest waits for the first instead of failing at once."""
    driver = conn.connection.driver_connection
    driver.execute(f"PRAGMA busy_timeout = {int(wait_seconds * 1000)}")
    driver.execute("PRAGMA journal_mode = WAL")


def _postgres_ingest_lock(conn: Connection, wait_seconds: float) -> None:
    """The store-wide ingest lock on PostgreSQL: a transaction-level advisory lock, taken before the
    first read, so the plan is made from what the previous ingest committed; freed at commit or rollback
    (or when a dead client's connection closes)."""
    deadline = time.monotonic() + wait_seconds
    while not conn.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": INGEST_LOCK_KEY}).scalar():
        if time.monotonic() >= deadline:
            raise IngestRunning(_INGEST_RUNNING.format(wait_seconds))
        time.sleep(0.2)


def _locked_by_another_writer(error: exc.OperationalError) -> bool:
    return "database is locked" in str(error.orig) or "database is busy" in str(error.orig)


def ingest(
    dataset: Dataset,
    url: str,
    source: str | None = None,
    wait_seconds: float = INGEST_WAIT_SECONDS,
    progress: Progress = QUIET,
    allow_older: bool = False,
) -> IngestSummary:
    """Add the dataset's new rows to the store and update its changed rows, in one transaction.

    Rows are matched by natural key; unchanged rows are neither written nor counted, so ingesting
    the same export twice changes nothing. Any error (a reference to a citizen or caseworker that is
    neither in the dataset nor in the store, a round moved to another citizen, a follow-up shorter
    than stored unless `allow_older`, a repeated key, a database failure) rolls everything back.
    One ingest writes at a time, store-wide: a second one waits up to `wait_seconds` for the first to
    commit and then plans from what it wrote, or raises IngestRunning. `progress` shows each table
    compared with the store and each table written.
    """
    frames = {name: _as_canonical(name, dataset.table(name)) for name in TABLES}
    try:
        with _write_transaction(url, bulk=True, busy_seconds=wait_seconds) as conn:
            if conn.dialect.name == "postgresql":
                _postgres_ingest_lock(conn, wait_seconds)
            SCHEMA.create_all(conn)
            plans = {name: _plan(conn, name, frames[name]) for name in tracked(progress, TABLES, "ingest: compare")}
            _check_references(conn, plans, frames)
            _check_kept_citizens(conn, plans["measurements"].changed)
            if not allow_older:
                _check_follow_up_kept(conn, plans["outcomes"].changed)
            for name in tracked(progress, TABLES, "ingest: write"):  # parents before children
                plan = plans[name]
                (_insert_into_empty if plan.into_empty else _insert)(conn, name, plan.new)
                _update(conn, name, plan.changed)
            _check_merged(conn, plans)
            added = {name: len(plans[name].new) for name in TABLES}
            updated = {name: len(plans[name].changed) for name in TABLES}
            ingest_id = _record_ingest(conn, source, added, updated)
    except exc.IntegrityError as error:
        # The driver's text can quote the conflicting key (a citizen id): name the kind of conflict only.
        raise StoreError(
            f"The dataset conflicts with the store ({type(error.orig).__name__}: a key or reference rule); "
            "nothing was stored."
        ) from error
    except exc.OperationalError as error:
        if url.startswith("sqlite") and _locked_by_another_writer(error):
            raise IngestRunning(_INGEST_RUNNING.format(wait_seconds)) from error
        raise
    return IngestSummary(added=added, updated=updated, ingest_id=ingest_id)


# --- reading ---------------------------------------------------------------------------------------


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _load_table(
    conn: Connection, name: str, column: str | None = None, ids: Sequence[str] | None = None
) -> pd.DataFrame:
    """A stored table sorted by key; with `ids`, only the rows whose `column` is one of them."""
    table = SCHEMA.tables[name]
    ordered = select(table).order_by(*(table.c[k] for k in KEYS[name]))
    if ids is None:
        return _read_table(conn, name, ordered)
    parts = [
        _read_table(conn, name, ordered.where(table.c[column].in_(batch)), stream=False)
        for batch in _batches(ids, IN_LIST_SIZE)
    ]
    if len(parts) <= 1:
        return parts[0] if parts else _empty(name)
    return pd.concat(parts, ignore_index=True).sort_values(list(KEYS[name]), ignore_index=True)


def _schema_exists(conn: Connection) -> bool:
    return set(TABLES) <= set(inspect(conn).get_table_names())


def load(url: str, citizen_ids: Sequence[str] | None = None) -> Dataset:
    """The stored dataset in canonical dtypes, each table sorted by its key.

    With `citizen_ids`, only those citizens' rows (and the caseworkers their measurements name):
    indexed lookups, cheap enough for a prediction request. An empty or new store gives an empty Dataset.
    """
    if isinstance(citizen_ids, str):
        raise TypeError("citizen_ids must be a sequence of ids, e.g. [citizen_id], not one string.")
    with _engine(url).connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")  # one snapshot for all five tables
        with conn.begin():
            if not _schema_exists(conn):
                return empty_dataset()
            ids = None if citizen_ids is None else sorted(set(citizen_ids))
            tables = {name: _load_table(conn, name, "citizen_id", ids) for name in TABLES if name != "caseworkers"}
            caseworker_ids = None if ids is None else sorted(tables["measurements"]["caseworker_id"].unique())
            tables["caseworkers"] = _load_table(conn, "caseworkers", "caseworker_id", caseworker_ids)
    return Dataset(**tables)


def citizen_bounds(url: str, citizens_per_part: int) -> list[str]:
    """The first citizen id of each run of `citizens_per_part` stored citizens in id order: the bounds of
    partitions by citizen. One query, numbered on the server, so no process fetches every id."""
    if citizens_per_part < 1:
        raise ValueError("citizens_per_part must be at least 1")
    key = SCHEMA.tables["citizens"].c.citizen_id
    ranked = select(key, func.row_number().over(order_by=key).label("n")).subquery()
    stmt = select(ranked.c.citizen_id).where((ranked.c.n - 1) % citizens_per_part == 0).order_by(ranked.c.citizen_id)
    with _engine(url).connect() as conn:
        if not _schema_exists(conn):
            return []
        return list(conn.execute(stmt).scalars())


def load_citizen_range(url: str, first: str | None, stop: str | None) -> Dataset:
    """The stored rows of the citizens with `first` <= citizen_id < `stop` (None: unbounded) and the
    caseworkers their measurements name, in canonical dtypes: one key-range query per table, in one
    snapshot. The partition reader of the distributed path (features/distributed.py)."""
    with _engine(url).connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            if not _schema_exists(conn):
                return empty_dataset()
            tables = {}
            for name in TABLES:
                table = SCHEMA.tables[name]
                ordered = select(table).order_by(*(table.c[k] for k in KEYS[name]))
                if name == "caseworkers":
                    named = select(SCHEMA.tables["measurements"].c.caseworker_id)
                    named = named.where(*_in_range(SCHEMA.tables["measurements"].c.citizen_id, first, stop))
                    tables[name] = _read_table(conn, name, ordered.where(table.c.caseworker_id.in_(named)))
                else:
                    tables[name] = _read_table(conn, name, ordered.where(*_in_range(table.c.citizen_id, first, stop)))
    return Dataset(**tables)


def _in_range(column: Column, first: str | None, stop: str | None) -> list[Any]:
    """Conditions first <= column < stop, leaving out an unbounded side."""
    conditions = []
    if first is not None:
        conditions.append(column >= first)
    if stop is not None:
        conditions.append(column < stop)
    return conditions


def _successor(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with `prefix` (None: no bound).

    Surrogate code points (U+D800-U+DFFF) are skipped: they are not characters and no driver can send one.
    """
    while prefix and prefix[-1] == chr(0x10FFFF):
        prefix = prefix[:-1]
    if not prefix:
        return None
    following = ord(prefix[-1]) + 1
    return prefix[:-1] + chr(0xE000 if 0xD800 <= following <= 0xDFFF else following)


def citizen_ids(url: str, prefix: str = "", limit: int = 20, jobcentres: Iterable[str] | None = None) -> list[str]:
    """Up to `limit` stored citizen ids that start with `prefix` (case-sensitive), in order, of the given
    job centres only (None: every job centre): a search box."""
    citizens = SCHEMA.tables["citizens"]
    key = citizens.c.citizen_id
    # A key range rather than LIKE: it uses the primary-key index on both backends and needs no escaping.
    stmt = select(key).where(key >= prefix).order_by(key).limit(limit)
    if (upper := _successor(prefix)) is not None:
        stmt = stmt.where(key < upper)
    if jobcentres is not None:
        stmt = stmt.where(citizens.c.jobcentre.in_(sorted(jobcentres)))
    with _engine(url).connect() as conn:
        if not _schema_exists(conn):
            return []
        return list(conn.execute(stmt).scalars())


def visible(url: str, citizen_id: str, jobcentres: Iterable[str] | None = None) -> bool:
    """Whether `citizen_id` is stored in one of `jobcentres` (None: any job centre). One look-up on the
    primary key, filtered by job centre in the same statement, so a citizen of another job centre costs
    what an unknown id costs: the caseworker page asks this before it reads a citizen."""
    citizens = SCHEMA.tables["citizens"]
    stmt = select(citizens.c.citizen_id).where(citizens.c.citizen_id == citizen_id)
    if jobcentres is not None:
        stmt = stmt.where(citizens.c.jobcentre.in_(sorted(jobcentres)))
    with _engine(url).connect() as conn:
        if not _schema_exists(conn):
            return False
        return conn.execute(stmt).first() is not None


def jobcentres(url: str) -> list[str]:
    """The job centres of the stored citizens, in order."""
    column = SCHEMA.tables["citizens"].c.jobcentre
    with _engine(url).connect() as conn:
        if not _schema_exists(conn):
            return []
        return list(conn.execute(select(column).distinct().order_by(column)).scalars())


def ingests(url: str) -> list[dict[str, Any]]:
    """The ingest log, oldest first: when, from where, and rows added and updated per table."""
    table = SCHEMA.tables["ingests"]
    with _engine(url).connect() as conn:
        if not inspect(conn).has_table("ingests"):
            return []
        rows = conn.execute(select(table).order_by(table.c.id)).mappings().all()
    return [{**row, "ingested_at": as_utc(row["ingested_at"])} for row in rows]


# --- time --------------------------------------------------------------------------------------------


def as_utc(moment: datetime) -> datetime:
    """A stored moment as an aware UTC datetime (SQLite keeps no time zone; every stored moment is UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
