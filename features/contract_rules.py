"""The contract's rules, run on parsed tables: each table's pandera schema, then the rules across tables.

The per-column rules are declared once, as one pandera `DataFrameSchema` per table
(`contract_schema`), built from `features.contract_declaration`: dtype, required cells, ranges,
codes, dates, ids that are not CPR numbers, and uniqueness. They are executed here column by
column with the schema's own `Check` objects rather than with `schema.validate`, because pandera
collects every failing cell into one frame: on 2.7M measurements with every score coded 0-4 that
took 34 s and 3 GB, while this runner reports the first `limit` cells and only counts the rest.
Rules across tables (references, date order, events) are vectorised below the schemas.

Decisions where the contract is silent:
- Every column the contract lists must be present, also those whose cells may be empty.
- Interventions have no id: (citizen_id, intervention, started_on) is an episode's identity, so a
  repeat of it is an error.
- Outcomes have at most one row per citizen; a citizen without one is a warning, not an error,
  because such a citizen's measurements simply have no label.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache, partial

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow.compute as pc

from features.catalogue import EVENTS
from features.contract_declaration import (
    CODES,
    CONTROL_CHARACTERS,
    CPR_LIKE,
    CPR_MESSAGE,
    DATE_ORDER,
    DATES,
    FREE_TEXT,
    FREE_TEXT_MESSAGE,
    ID_TEXT,
    ID_TEXT_MESSAGE,
    MAX_ID_LENGTH,
    NO_EVENT,
    NOT_CPR,
    NUL,
    OPTIONAL,
    RANGES,
    REFERENCES,
)
from features.contract_parsing import arrow_text
from features.contract_problems import Hits, cell, found_where, show
from features.dataset import COLUMNS, KEYS, Dataset

_PANDERA_DTYPES = {"str": str, "Int64": "Int64", "float64": "float64", "date": "datetime64[s]"}
_LISTED_CODES = 6  # code lists up to this long are spelled out in messages


@cache
def contract_schema(table: str) -> pa.DataFrameSchema:
    """The pandera declaration of one table's per-column rules: dtype, required, range, codes, keys."""
    columns = {name: _column_schema(table, name, kind) for name, kind in COLUMNS[table].items()}
    keys = KEYS[table]
    return pa.DataFrameSchema(
        columns,
        name=table,
        unique=list(keys) if len(keys) > 1 else None,
        report_duplicates="exclude_first",
    )


def _column_schema(table: str, column: str, kind: str) -> pa.Column:
    checks = []
    if kind == "date":
        low, high = (np.datetime64(day, "s") for day in DATES)
        checks.append(
            pa.Check.in_range(
                low,
                high,
                error=f"is outside the years {DATES[0].year}-{DATES[1].year}; check the year, written YYYY-MM-DD",
            )
        )
    if (table, column) in NOT_CPR:
        checks.append(pa.Check(_not_cpr_like, error=CPR_MESSAGE))
    if (table, column) in ID_TEXT:
        checks.append(pa.Check(_plain_id, error=ID_TEXT_MESSAGE))
    if (table, column) in FREE_TEXT:
        checks.append(pa.Check(_plain_text, error=FREE_TEXT_MESSAGE))
    if (table, column) in RANGES:
        low, high = RANGES[table, column]
        if high is None:
            checks.append(pa.Check.ge(low, error=f"is below {show(low)}; write {show(low)} or more"))
        else:
            checks.append(
                pa.Check.in_range(
                    low,
                    high,
                    error=f"is outside {show(low)}-{show(high)}; write a value from {show(low)} to {show(high)}",
                )
            )
    if (table, column) in CODES:
        codes = CODES[table, column]
        listed = ", ".join(codes) if len(codes) <= _LISTED_CODES else f"the {len(codes)} codes of the contract"
        checks.append(pa.Check.isin(codes, error=f"is not one of {listed}; write one of them exactly as listed"))
    return pa.Column(
        _PANDERA_DTYPES[kind],
        checks=checks,
        nullable=(table, column) in OPTIONAL,
        unique=KEYS[table] == (column,),
        report_duplicates="exclude_first",
    )


def rule_hits(
    typed: Mapping[str, pd.DataFrame], unreadable: Mapping[str, Mapping[str, np.ndarray]], limit: int
) -> list[Hits]:
    """Every rule's hits on the parsed tables: each table's schema, then the rules across tables."""
    per_table = [_schema_hits(table, frame, unreadable[table], limit) for table, frame in typed.items()]
    return [
        *(hit for table_hits in per_table for hit in table_hits),
        *_reference_hits(typed, limit),
        *_date_order_hits(typed, limit),
        *_event_hits(typed, unreadable.get("outcomes", {}), limit),
    ]


def _schema_hits(table: str, frame: pd.DataFrame, unreadable: Mapping[str, np.ndarray], limit: int) -> list[Hits]:
    """Run the table's pandera declaration column by column, vectorised, counting every failure."""
    schema = contract_schema(table)
    hits = []
    for name, column in schema.columns.items():
        if name not in frame.columns:
            continue
        values = frame[name]
        present = values.notna().to_numpy(dtype=bool)
        if not column.nullable:
            empty = ~present & ~unreadable.get(name, np.zeros(len(values), dtype=bool))
            hits.append(found_where(table, name, frame.index, empty, _empty_message, values, limit=limit))
        if column.unique:
            hits.append(_repeat_hits(table, frame, [name], limit))
        for check in column.checks:
            passed = _passed(check, values, present)
            describe = partial(_value_message, table, name, check.error)
            hits.append(found_where(table, name, frame.index, present & ~passed, describe, values, limit=limit))
    keys = list(schema.unique or [])
    if keys and all(key in frame.columns for key in keys):
        hits.append(_repeat_hits(table, frame, keys, limit))
    return hits


def _passed(check: pa.Check, values: pd.Series, present: np.ndarray) -> np.ndarray:
    """Which cells pass a pandera check; empty cells pass (required cells are checked apart)."""
    output = check(values).check_output.to_numpy(dtype=bool, na_value=True)
    if len(output) == len(values):
        return output
    # pandera leaves empty cells out of the output, keeping the order of the others.
    passed = np.ones(len(values), dtype=bool)
    passed[present] = output
    return passed


def _empty_message(_: object) -> str:
    return "the cell is empty but required; fill it in"


def _value_message(table: str, column: str, rule: str, value: object) -> str:
    return f"{cell(table, column, value)} {rule}"


def _not_cpr_like(values: pd.Series) -> pd.Series:
    """True where a text is not ten digits with an optional dash after the sixth (a CPR number's shape)."""
    text = arrow_text(values)
    return pd.Series(pc.invert(pc.match_substring_regex(text, f"^(?:{CPR_LIKE})$")), index=values.index)


def _plain_id(values: pd.Series) -> pd.Series:
    """True where a text is at most MAX_ID_LENGTH characters long and holds no control character."""
    text = arrow_text(values)
    ok = pc.and_(
        pc.less_equal(pc.utf8_length(text), MAX_ID_LENGTH),
        pc.invert(pc.match_substring_regex(text, CONTROL_CHARACTERS)),
    )
    return pd.Series(pc.fill_null(ok, True), index=values.index)  # an empty cell is another rule's


def _plain_text(values: pd.Series) -> pd.Series:
    """True where a text holds no NUL."""
    ok = pc.invert(pc.match_substring(arrow_text(values), NUL))
    return pd.Series(pc.fill_null(ok, True), index=values.index)


def _repeat_hits(table: str, frame: pd.DataFrame, keys: list[str], limit: int) -> Hits:
    """Rows whose key repeats an earlier row's (a key with an empty part repeats nothing)."""
    codes = _key_codes(frame, keys)
    # Codes number keys in order of first appearance, so a row is a key's first exactly when
    # its code exceeds every code before it: no sort needed.
    earlier = np.concatenate(([-1], np.maximum.accumulate(codes)[:-1]))
    first = codes > earlier
    repeated = (codes >= 0) & ~first
    first_row = frame.index.to_numpy()[np.flatnonzero(first)][np.maximum(codes, 0)] if first.any() else codes
    if len(keys) == 1:
        describe = partial(_repeated_value_message, table, keys[0])
        return found_where(table, keys[0], frame.index, repeated, describe, frame[keys[0]], first_row, limit=limit)
    together = " and ".join([", ".join(keys[:-1]), keys[-1]])
    describe = partial(_repeated_row_message, together)
    return found_where(table, ", ".join(keys), frame.index, repeated, describe, first_row, limit=limit)


def _repeated_value_message(table: str, key: str, value: object, row: int) -> str:
    return f"{cell(table, key, value)} is already on row {row}; {key} must be unique: give each row its own"


def _repeated_row_message(keys: str, row: int) -> str:
    return f"the row repeats row {row}: the same {keys}; remove one of the two"


def _key_codes(frame: pd.DataFrame, keys: list[str]) -> np.ndarray:
    """Per row, its key numbered in order of first appearance; -1 where a key part is empty."""
    codes = pd.factorize(frame[keys[0]])[0].astype(np.int64)
    for key in keys[1:]:
        part, distinct = pd.factorize(frame[key])
        empty = (codes < 0) | (part < 0)
        # Both codes are below the row count, so the pair fits in int64 for any real table.
        pairs = codes * (len(distinct) + 1) + part
        codes = np.full(len(pairs), -1, dtype=np.int64)
        codes[~empty] = pd.factorize(pairs[~empty])[0]
    return codes


# --- rules across tables -------------------------------------------------------------------


def _reference_hits(typed: Mapping[str, pd.DataFrame], limit: int) -> list[Hits]:
    """Ids that do not exist in the table they refer to."""
    hits = []
    for table, column, target, key in REFERENCES:
        if not (_has(typed, table, column) and _has(typed, target, key)):
            continue
        values = typed[table][column]
        unknown = values.notna().to_numpy(dtype=bool) & (_positions(values, typed[target][key]) < 0)
        describe = partial(
            _value_message, table, column, f"is not a {key} in {target}; add it to {target} or correct it"
        )
        hits.append(found_where(table, column, values.index, unknown, describe, values, limit=limit))
    return hits


def _date_order_hits(typed: Mapping[str, pd.DataFrame], limit: int) -> list[Hits]:
    """Dates that come before the date they must follow (rows where either is empty pass)."""
    hits = []
    for table, later, source, earlier in DATE_ORDER:
        if not (_has(typed, table, later) and _has(typed, source, earlier)):
            continue
        if source != table and not (_has(typed, table, "citizen_id") and _has(typed, source, "citizen_id")):
            continue
        after = typed[table][later].to_numpy()
        if source == table:
            before, whose = typed[table][earlier].to_numpy(), "the row's"
        else:
            before, whose = _citizen_values(typed, table, source, earlier), "the citizen's"
        describe = partial(_order_message, later, f"{whose} {earlier}")
        hits.append(found_where(table, later, typed[table].index, after < before, describe, limit=limit))
    return hits


def _order_message(later: str, earlier: str) -> str:
    return f"{later} is before {earlier}; correct one of the two dates"  # a citizen's dates: named, not shown


def _citizen_values(typed: Mapping[str, pd.DataFrame], table: str, source: str, column: str) -> np.ndarray:
    """Each row's citizen's `column` in `source` (the first row where an id repeats); NaT if none."""
    position = _positions(typed[table]["citizen_id"], typed[source]["citizen_id"])
    values = typed[source][column].to_numpy()
    found = values[np.maximum(position, 0)] if len(values) else np.full(len(position), np.datetime64("NaT"))
    return np.where(position >= 0, found, np.datetime64("NaT"))


def _event_hits(typed: Mapping[str, pd.DataFrame], unreadable: Mapping[str, np.ndarray], limit: int) -> list[Hits]:
    """event_on is empty exactly when event is none."""
    if not (_has(typed, "outcomes", "event") and _has(typed, "outcomes", "event_on")):
        return []
    outcomes = typed["outcomes"]
    event, event_on = outcomes["event"], outcomes["event_on"]
    dated = event_on.notna().to_numpy(dtype=bool)
    none = (event == NO_EVENT).to_numpy(dtype=bool, na_value=False)
    some = event.isin([e for e in EVENTS if e != NO_EVENT]).to_numpy(dtype=bool, na_value=False)
    misread = unreadable.get("event_on", np.zeros(len(event), dtype=bool))
    rows = outcomes.index
    return [
        found_where("outcomes", "event_on", rows, none & dated, _dated_none_message, limit=limit),
        found_where("outcomes", "event_on", rows, some & ~dated & ~misread, _undated_message, event, limit=limit),
    ]


def _dated_none_message() -> str:
    return f"event_on is set but event is {NO_EVENT}; leave it empty or set the event"


def _undated_message(event: object) -> str:
    return f"event_on is empty but event is {event}; give the date of the {event} entry"


def _positions(values: pd.Series, targets: pd.Series) -> np.ndarray:
    """Each text value's position among `targets` (the first equal one); -1 where there is none.

    Arrow's hash lookup: pandas' isin and map on Arrow strings build the lookup set in Python,
    which made the references of the 2.7M-row benchmark take tens of seconds.
    """
    found = pc.index_in(arrow_text(values), value_set=arrow_text(targets))
    return found.fill_null(-1).to_numpy(zero_copy_only=False)


def _has(typed: Mapping[str, pd.DataFrame], table: str, column: str) -> bool:
    return table in typed and column in typed[table].columns


def coverage_warnings(dataset: Dataset) -> list[str]:
    """A warning when citizens have no outcomes row (not an error: their rounds just have no label)."""
    without = int((_positions(dataset.citizens["citizen_id"], dataset.outcomes["citizen_id"]) < 0).sum())
    if not without:
        return []
    return [f"{without} citizens have no outcomes row; their measurements have no label"]
