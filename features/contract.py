"""Read, check and write datasets in the data contract (/work/shared/data-contract.md).

A dataset folder is read as text first and parsed column by column, so that every broken cell is
reported with its table, row and column, all in one pass, before anything is stored. The same
checks run on an in-memory `Dataset` (`validate_dataset`), which the simulator and the store use.

The rules are declared once, as one pandera `DataFrameSchema` per table (`contract_schema`): dtype,
required cells, ranges, codes and uniqueness. They are executed here column by column with the
schema's own `Check` objects rather than with `schema.validate`, because pandera collects every
failing cell into one frame: on a broken 2.7M-row file (all scores coded 0-4) that took 34 s and
3 GB, while this runner reports the first `max_problems` cells and only counts the rest. Rules
across tables (references, date order, events) are vectorised pandas below the schemas.

Decisions where the contract is silent:
- Only an empty cell is missing. Text such as `NA`, `NULL` or `nan` is text: it is a valid id or
  name, and in a number or date column it is rejected with a hint to leave the cell empty.
- Whole numbers are written as digits (`3`, `-1`); `3.0` and `3.5` are both rejected in CSV, so an
  export that turned scores into floats is caught rather than silently rounded. In Parquet an int
  column may be stored as float when every value is whole.
- Every column the contract lists must be present, also those whose cells may be empty.
- Interventions have no id: (citizen_id, intervention, started_on) is an episode's identity, so a
  repeat of it is an error.
- Outcomes have at most one row per citizen; a citizen without one is a warning, not an error,
  because such a citizen's measurements simply have no label.
- Spreadsheet formulas (`=HYPERLINK(...)`) are plain text: never evaluated, and still checked
  against their column's rule. `write_dataset` writes text as it is, so such a value round-trips.
- Rows are data rows counted from 1 under the header; a quoted value may hold a line break, so a
  row number is not always a line number. Blank lines inside a CSV are rows with empty cells;
  blank lines at the end of the file are ignored.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Mapping
from functools import cache, partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pandas.api import types as ptypes

from bip.errors import UserError
from features.catalogue import (
    CIVIL_STATUSES,
    EDUCATIONS,
    EVENTS,
    GENDERS,
    INTERVENTION_CODES,
    ORIGINS,
    SCORE_COLUMNS,
    SCORE_MAX,
    SCORE_MIN,
)
from features.dataset import COLUMNS, KEYS, TABLES, Dataset, canonical

DEFAULT_MAX_PROBLEMS = 1000
DEFAULT_MAX_BYTES = 4 * 1024**3
SHOWN_PROBLEMS = 50
FORMATS: tuple[str, ...] = ("csv", "parquet")

NO_EVENT = "none"  # the outcomes.event code for "neither job nor education during follow-up"

# Cells that may be empty; every other cell of the contract is required.
OPTIONAL: frozenset[tuple[str, str]] = frozenset(
    {("caseworkers", "job_orientation"), ("interventions", "ended_on"), ("outcomes", "event_on")}
    | {("measurements", column) for column in SCORE_COLUMNS}
)
RANGES: dict[tuple[str, str], tuple[float, float | None]] = {
    ("citizens", "birth_year"): (1935, 2010),
    ("citizens", "children"): (0, None),
    ("citizens", "benefit_share_5y"): (0, 1),
    ("caseworkers", "job_orientation"): (1, 5),
    **{("measurements", column): (SCORE_MIN, SCORE_MAX) for column in SCORE_COLUMNS},
}
CODES: dict[tuple[str, str], tuple[str, ...]] = {
    ("citizens", "gender"): GENDERS,
    ("citizens", "origin"): ORIGINS,
    ("citizens", "civil_status"): CIVIL_STATUSES,
    ("citizens", "education"): EDUCATIONS,
    ("interventions", "intervention"): INTERVENTION_CODES,
    ("outcomes", "event"): EVENTS,
}
# (table, column, referenced table, referenced column): every value must exist there.
REFERENCES: tuple[tuple[str, str, str, str], ...] = (
    ("measurements", "citizen_id", "citizens", "citizen_id"),
    ("measurements", "caseworker_id", "caseworkers", "caseworker_id"),
    ("interventions", "citizen_id", "citizens", "citizen_id"),
    ("outcomes", "citizen_id", "citizens", "citizen_id"),
)
# (table, later date, table of the earlier date, earlier date): later >= earlier where both are
# set. An earlier date in another table is the citizen's, joined on citizen_id.
DATE_ORDER: tuple[tuple[str, str, str, str], ...] = (
    ("measurements", "measured_on", "citizens", "enrolled_on"),
    ("interventions", "ended_on", "interventions", "started_on"),
    ("outcomes", "followed_until", "outcomes", "event_on"),
    ("outcomes", "followed_until", "citizens", "enrolled_on"),
)

_PANDERA_DTYPES = {"str": str, "Int64": "Int64", "float64": "float64", "date": "datetime64[s]"}
_WHOLE = r"[+-]?\d{1,15}"  # 15 digits stay exact through float64
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?"
_DATE = r"\d{4}-\d{2}-\d{2}"
_MISSING_WORDS = frozenset({"na", "n/a", "nan", "null", "none", "-", ".", "?"})
_LISTED_CODES = 6  # code lists up to this long are spelled out in messages


class Problem(NamedTuple):
    """One break of the contract: row is the 1-based data row (None: the whole table or column)."""

    table: str
    row: int | None
    column: str | None
    message: str


class ContractError(UserError):
    """A dataset that breaks the contract; `.problems` holds the first problems found, in order."""

    def __init__(
        self,
        problems: list[Problem],
        total: int | None = None,
        sources: Mapping[str, str] | None = None,
        shown: int = SHOWN_PROBLEMS,
    ) -> None:
        self.problems = problems
        self.total = max(total or 0, len(problems))
        self.sources = dict(sources or {})
        self.shown = shown
        super().__init__(str(self))

    def __str__(self) -> str:
        noun = "problem" if self.total == 1 else "problems"
        lines = [f"the dataset breaks the data contract ({self.total} {noun}); nothing was stored:"]
        lines += [self.location(p) + f": {p.message}" for p in self.problems[: self.shown]]
        if self.total > self.shown:
            lines.append(f"... and {self.total - min(self.shown, len(self.problems))} more")
        return "\n".join(lines)

    def location(self, problem: Problem) -> str:
        """Where a problem is, e.g. `measurements.csv row 12, column cit_concentration`."""
        where = self.sources.get(problem.table, problem.table)
        if problem.row is not None:
            where += f" row {problem.row}"
        if problem.column is not None:
            where += f", column {problem.column}"
        return where


class _Hits(NamedTuple):
    """The first problems one rule found (at most the limit) and how many it found in all."""

    problems: list[Problem]
    count: int


# --- the rules, declared once --------------------------------------------------------------


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
    if (table, column) in RANGES:
        low, high = RANGES[table, column]
        if high is None:
            checks.append(pa.Check.ge(low, error=f"is below {_show(low)}"))
        else:
            checks.append(pa.Check.in_range(low, high, error=f"is outside {_show(low)}-{_show(high)}"))
    if (table, column) in CODES:
        codes = CODES[table, column]
        listed = (
            ", ".join(codes) if len(codes) <= _LISTED_CODES else f"the {len(codes)} codes of the contract"
        )
        checks.append(pa.Check.isin(codes, error=f"is not one of {listed}"))
    return pa.Column(
        _PANDERA_DTYPES[kind],
        checks=checks,
        nullable=(table, column) in OPTIONAL,
        unique=KEYS[table] == (column,),
        report_duplicates="exclude_first",
    )


# --- public entry points -------------------------------------------------------------------


def read_dataset(
    folder: Path, max_problems: int = DEFAULT_MAX_PROBLEMS, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[Dataset, list[str]]:
    """Read and check a dataset folder; the Dataset in canonical dtypes and warnings for the user.

    Raises ContractError listing the first `max_problems` problems of all tables when any rule is
    broken, so that nothing half-checked reaches the store.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"dataset folder {folder} does not exist; give a folder holding the five tables")
    frames: dict[str, pd.DataFrame] = {}
    sources: dict[str, str] = {}
    hits: list[_Hits] = []
    warnings: list[str] = []
    for table in TABLES:
        path, found = _table_path(folder, table)
        sources[table] = path.name
        if found:
            hits.append(_Hits(found, len(found)))
            continue
        frame, found = _read_table(path, table, max_bytes, max_problems)
        hits.append(_Hits(found, len(found)))
        if frame is not None:
            frames[table] = frame
            warnings += _extra_column_warnings(path.name, table, frame)
    typed, checked = _checked_tables(frames, max_problems)
    problems, total = _merged(hits + checked, max_problems)
    if problems:
        raise ContractError(problems, total, sources)
    dataset = Dataset(**{table: canonical(table, typed[table]) for table in TABLES})
    return dataset, warnings + _coverage_warnings(dataset)


def validate_dataset(dataset: Dataset, max_problems: int = DEFAULT_MAX_PROBLEMS) -> list[Problem]:
    """The first `max_problems` contract problems of an in-memory dataset; empty when it is valid.

    Rows are counted from 1 by position, whatever the frames' index.
    """
    frames = {
        table: frame.set_axis(pd.RangeIndex(1, len(frame) + 1)) for table, frame in dataset.tables().items()
    }
    _, hits = _checked_tables(frames, max_problems)
    return _merged(hits, max_problems)[0]


def write_dataset(dataset: Dataset, folder: Path, fmt: str = "csv") -> None:
    """Write the five tables into `folder` (created) as NAME.csv or NAME.parquet, in the contract.

    CSV holds dates as YYYY-MM-DD, whole numbers without decimals and empty cells for missing
    values; Parquet holds the same columns typed (date32, int64, float64, string).
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    folder = Path(folder)
    clashes = [folder / f"{table}.{other}" for table in TABLES for other in FORMATS if other != fmt]
    existing = [path.name for path in clashes if path.exists()]
    if existing:
        raise UserError(
            f"{folder} already holds {', '.join(existing)}; write {fmt} into an empty folder "
            "so that each table exists in one format only"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for table in TABLES:
        arrow_table = _arrow_table(table, dataset.table(table))
        path = folder / f"{table}.{fmt}"
        if fmt == "csv":
            pacsv.write_csv(arrow_table, path)
        else:
            pq.write_table(arrow_table, path)


# --- reading files -------------------------------------------------------------------------


def _table_path(folder: Path, table: str) -> tuple[Path, list[Problem]]:
    """The file holding a table, or the problems of finding it (missing, or in two formats)."""
    present = [folder / f"{table}.{fmt}" for fmt in FORMATS if (folder / f"{table}.{fmt}").is_file()]
    if len(present) == 1:
        return present[0], []
    if present:
        message = f"both {table}.csv and {table}.parquet exist; keep one so the table is unambiguous"
        return present[0], [Problem(table, None, None, message)]
    message = f"the table is missing: put {table}.csv or {table}.parquet in {folder}"
    return folder / f"{table}.csv", [Problem(table, None, None, message)]


def _read_table(
    path: Path, table: str, max_bytes: int, limit: int
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """The table's cells as read (text for CSV, stored types for Parquet), rows indexed from 1."""
    size = path.stat().st_size
    if size > max_bytes:
        message = (
            f"{path.name} is {_bytes(size)}, over the limit of {_bytes(max_bytes)} ({max_bytes} bytes); "
            "split the export or raise the limit"
        )
        return None, [Problem(table, None, None, message)]
    if path.suffix == ".parquet":
        return _read_parquet(path, table)
    return _read_csv(path, table, limit)


def _read_parquet(path: Path, table: str) -> tuple[pd.DataFrame | None, list[Problem]]:
    try:
        frame = pq.read_table(path).to_pandas(date_as_object=False)
    except (pyarrow.ArrowException, OSError) as error:
        return None, [Problem(table, None, None, f"{path.name} cannot be read as Parquet: {error}")]
    return frame.set_axis(pd.RangeIndex(1, len(frame) + 1)), _duplicate_header(table, list(frame.columns))


def _read_csv(path: Path, table: str, limit: int) -> tuple[pd.DataFrame | None, list[Problem]]:
    """All cells of a CSV file as text ("" = empty), via Arrow's multi-threaded reader."""
    if path.stat().st_size == 0:
        return None, [
            Problem(table, None, None, f"{path.name} is empty (0 bytes); it needs at least a header row")
        ]
    header, found = _csv_header(path, table)
    if found:
        return None, found
    try:
        frame, ragged = _arrow_csv(path, header, threads=True)
    except pyarrow.ArrowInvalid as error:
        if "UTF8" not in str(error):
            return None, [Problem(table, None, None, f"{path.name} cannot be read as CSV: {error}")]
        return None, _non_utf8_cells(path, table, header, limit)
    if ragged:
        # Arrow numbers rows only when reading on one thread; this path is for broken files only.
        frame, ragged = _arrow_csv(path, header, threads=False)
        skipped = np.array([number - 1 for number, _ in ragged])
        problems = [
            Problem(table, number - 1, None, f"the row has {fields} fields, the header {len(header)}")
            for number, fields in ragged[:limit]
        ]
        rows = np.setdiff1d(np.arange(1, len(frame) + len(skipped) + 1), skipped)
        return frame.set_axis(rows), problems
    return frame, []


def _csv_header(path: Path, table: str) -> tuple[list[str], list[Problem]]:
    """The column names of a CSV file's first line (a UTF-8 byte-order mark is dropped)."""
    with path.open("rb") as handle:
        first = handle.readline()
    try:
        line = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [], [
            Problem(table, None, None, f"the header row of {path.name} is not UTF-8; save the file as UTF-8")
        ]
    header = next(csv.reader([line]), [])
    if not any(header):
        return [], [Problem(table, None, None, f"{path.name} has no header row")]
    return header, _duplicate_header(table, header)


def _duplicate_header(table: str, header: list[str]) -> list[Problem]:
    names = pd.Series(header)
    return [
        Problem(table, None, str(name), "the column appears more than once in the header")
        for name in names[names.duplicated()].unique()
    ]


def _arrow_csv(path: Path, header: list[str], threads: bool) -> tuple[pd.DataFrame, list[tuple[int, int]]]:
    """Every column as text, and the rows with a wrong field count as (row number incl. header, fields)."""
    ragged: list[tuple[int, int]] = []

    def keep_ragged(row: pacsv.InvalidRow) -> str:
        ragged.append((row.number or 0, row.actual_columns))
        return "skip"

    read = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(use_threads=threads),
        parse_options=pacsv.ParseOptions(
            newlines_in_values=True, ignore_empty_lines=False, invalid_row_handler=keep_ragged
        ),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pyarrow.string() for name in header},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    frame = _without_trailing_blank_rows(read.to_pandas())
    return frame.set_axis(pd.RangeIndex(1, len(frame) + 1)), ragged


def _without_trailing_blank_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop empty rows at the end, which blank lines before end of file make."""
    if frame.empty or (frame.iloc[-1] != "").any():
        return frame
    filled = np.flatnonzero((frame != "").any(axis=1).to_numpy())
    return frame.iloc[: filled[-1] + 1 if len(filled) else 0]


def _non_utf8_cells(path: Path, table: str, header: list[str], limit: int) -> list[Problem]:
    """Each cell holding bytes that are not UTF-8, found by reading the file as bytes."""
    read = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(use_threads=True),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(column_types={name: pyarrow.binary() for name in header}),
    )
    hits = []
    for name in header:
        column = read.column(name)
        try:
            column.cast(pyarrow.string())
            continue
        except pyarrow.ArrowInvalid:
            pass
        text = pd.Series(column.to_pandas(), index=pd.RangeIndex(1, len(column) + 1)).str.decode(
            "utf-8", errors="surrogateescape"
        )
        bad = text.str.contains("[\udc80-\udcff]", regex=True)
        hits.append(_hits(table, name, bad, _not_utf8, text, limit=limit))
    return _merged(hits, limit)[0]


def _not_utf8(text: str) -> str:
    shown = text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")
    return f"{_show(shown)} holds bytes that are not UTF-8; save the file as UTF-8"


def _extra_column_warnings(source: str, table: str, frame: pd.DataFrame) -> list[str]:
    return [
        f"{source}: extra column {name!r} is not in the data contract and is ignored"
        for name in frame.columns
        if name not in COLUMNS[table]
    ]


def _coverage_warnings(dataset: Dataset) -> list[str]:
    without = ~dataset.citizens["citizen_id"].isin(dataset.outcomes["citizen_id"])
    if not without.any():
        return []
    return [f"{int(without.sum())} citizens have no outcomes row; their measurements have no label"]


# --- parsing cells into canonical dtypes ---------------------------------------------------


def _checked_tables(
    frames: Mapping[str, pd.DataFrame], limit: int
) -> tuple[dict[str, pd.DataFrame], list[_Hits]]:
    """Every table parsed to canonical dtypes and every rule's hits, within and across tables."""
    typed: dict[str, pd.DataFrame] = {}
    unreadable: dict[tuple[str, str], pd.Series] = {}
    hits: list[_Hits] = []
    for table, frame in frames.items():
        typed[table], bad, found = _typed_table(table, frame, limit)
        unreadable |= {(table, column): mask for column, mask in bad.items()}
        hits += found
        hits += _schema_hits(table, typed[table], bad, limit)
    hits += _reference_hits(typed, limit)
    hits += _date_order_hits(typed, limit)
    hits += _event_hits(typed, unreadable, limit)
    return typed, hits


def _typed_table(
    table: str, frame: pd.DataFrame, limit: int
) -> tuple[pd.DataFrame, dict[str, pd.Series], list[_Hits]]:
    """The contract columns present, in canonical dtypes; masks of unreadable cells; problems.

    A missing column, or one whose stored type cannot hold the contract's, is left out, so the
    rules that need it are skipped rather than reporting every row again.
    """
    columns: dict[str, pd.Series] = {}
    unreadable: dict[str, pd.Series] = {}
    hits: list[_Hits] = []
    for name, kind in COLUMNS[table].items():
        if name not in frame.columns:
            hits.append(_Hits([Problem(table, None, name, "the required column is missing")], 1))
            continue
        result = _typed_column(kind, frame[name])
        if isinstance(result, str):
            hits.append(_Hits([Problem(table, None, name, result)], 1))
            continue
        columns[name], bad = result
        if bad is not None and bad.any():
            unreadable[name] = bad
            describe = _unreadable_describer(kind)
            hits.append(_hits(table, name, bad, describe, frame[name], limit=limit))
    return pd.DataFrame(columns, index=frame.index), unreadable, hits


def _typed_column(kind: str, values: pd.Series) -> tuple[pd.Series, pd.Series | None] | str:
    """A column in its canonical dtype with a mask of cells that cannot be read as that kind;
    or, when the stored type cannot hold the kind at all, why not."""
    stored = _stored_as(values)
    if stored == "text":
        text = values.astype("str")
        if kind == "str":
            return text.mask(text == ""), None
        return _parsed_text(text, _TEXT_PARSERS[kind])
    if kind == "Int64" and stored == "number":
        numbers = values.astype("float64")
        bad = values.notna() & (~np.isfinite(numbers) | (numbers != np.round(numbers)))
        return numbers.mask(bad).astype("Int64"), bad
    if kind == "float64" and stored == "number":
        numbers = values.astype("float64")
        bad = values.notna() & ~np.isfinite(numbers)
        return numbers.mask(bad), bad
    if kind == "date" and stored == "datetime":
        dates = pd.to_datetime(values)
        if dates.dt.tz is not None:
            dates = dates.dt.tz_localize(None)
        bad = dates.notna() & (dates != dates.dt.normalize())
        return dates.mask(bad).astype("datetime64[s]"), bad
    wanted = {"str": "text", "Int64": "whole numbers", "float64": "numbers", "date": "dates"}[kind]
    return f"the column holds {values.dtype} values; the contract needs {wanted}"


def _stored_as(values: pd.Series) -> str:
    """How a column's values are stored: text, number, datetime or other."""
    if ptypes.is_string_dtype(values.dtype) and not ptypes.is_object_dtype(values.dtype):
        return "text"
    if ptypes.is_bool_dtype(values.dtype):
        return "other"
    if ptypes.is_numeric_dtype(values.dtype):
        return "number"
    if ptypes.is_datetime64_any_dtype(values.dtype):
        return "datetime"
    if ptypes.is_object_dtype(values.dtype):
        inferred = ptypes.infer_dtype(values, skipna=True)
        kinds = {"string": "text", "empty": "text", "integer": "number", "floating": "number"}
        kinds |= {"mixed-integer-float": "number", "date": "datetime", "datetime": "datetime"}
        return kinds.get(inferred, "other")
    return "other"


def _parsed_text(text: pd.Series, parse: Callable[[pd.Series], pd.Series]) -> tuple[pd.Series, pd.Series]:
    """Parse each distinct text once (scores hold a handful), then spread the results to rows."""
    codes, uniques = pd.factorize(text)
    distinct = pd.Series(uniques)
    parsed = parse(distinct)
    bad_distinct = np.append(((distinct != "") & parsed.isna()).to_numpy(dtype=bool), False)
    values = pd.Series(parsed.array.take(codes, allow_fill=True), index=text.index)
    return values, pd.Series(bad_distinct[codes], index=text.index)


def _whole_numbers(text: pd.Series) -> pd.Series:
    readable = text.str.fullmatch(_WHOLE)
    return pd.to_numeric(text.where(readable), errors="coerce").astype("Int64")


def _numbers(text: pd.Series) -> pd.Series:
    numbers = pd.to_numeric(text.where(text.str.fullmatch(_NUMBER)), errors="coerce").astype("float64")
    return numbers.where(np.isfinite(numbers))


def _dates(text: pd.Series) -> pd.Series:
    readable = text.where(text.str.fullmatch(_DATE))
    return pd.to_datetime(readable, format="%Y-%m-%d", errors="coerce").astype("datetime64[s]")


_TEXT_PARSERS: dict[str, Callable[[pd.Series], pd.Series]] = {
    "Int64": _whole_numbers,
    "float64": _numbers,
    "date": _dates,
}


def _unreadable_describer(kind: str) -> Callable[[object], str]:
    """The message for a cell that cannot be read as `kind`, given the cell as stored."""

    def describe(value: object) -> str:
        if kind == "date" and isinstance(value, str) and re.fullmatch(_DATE, value):
            message = f"{_show(value)} is not a real date"
        elif kind == "date" and isinstance(value, pd.Timestamp):
            message = f"{value} has a time of day; the contract needs a date"
        elif kind == "date":
            message = f"{_show(value)} is not a date written YYYY-MM-DD"
        elif kind == "Int64":
            message = f"{_show(value)} is not a whole number (write digits only, e.g. 3)"
        else:
            message = f"{_show(value)} is not a number (write decimals with a point, e.g. 0.5)"
        if isinstance(value, str) and value.strip().lower() in _MISSING_WORDS:
            message += "; leave the cell empty when the value is missing"
        return message

    return describe


# --- rules within a table: the pandera schema ----------------------------------------------


def _schema_hits(
    table: str, frame: pd.DataFrame, unreadable: Mapping[str, pd.Series], limit: int
) -> list[_Hits]:
    """Run the table's pandera declaration column by column, vectorised, counting every failure."""
    schema = contract_schema(table)
    hits = []
    for name, column in schema.columns.items():
        if name not in frame.columns:
            continue
        values = frame[name]
        if not column.nullable:
            empty = values.isna() & ~_flags(unreadable, name, values.index)
            hits.append(_hits(table, name, empty, _empty_message, values, limit=limit))
        if column.unique:
            hits.append(_repeat_hits(table, frame, [name], limit))
        for check in column.checks:
            failed = values.notna() & ~check(values).check_output.fillna(True).astype(bool)
            hits.append(_hits(table, name, failed, partial(_value_message, check.error), values, limit=limit))
    keys = list(schema.unique or [])
    if keys and all(key in frame.columns for key in keys):
        hits.append(_repeat_hits(table, frame, keys, limit))
    return hits


def _empty_message(_: object) -> str:
    return "the cell is empty but required"


def _value_message(rule: str, value: object) -> str:
    return f"{_show(value)} {rule}"


def _repeat_hits(table: str, frame: pd.DataFrame, keys: list[str], limit: int) -> _Hits:
    """Rows whose key repeats an earlier row's (rows with an empty key part are not repeats)."""
    key = frame[keys]
    repeated = key.duplicated(keep="first") & key.notna().all(axis=1)
    if not repeated.any():
        return _Hits([], 0)
    group = key.groupby(keys, sort=False, dropna=False).ngroup()
    first = pd.Series(frame.index, index=frame.index).groupby(group).transform("first")
    if len(keys) == 1:
        name = keys[0]
        return _hits(
            table,
            name,
            repeated,
            lambda value, row: f"{_show(value)} is already on row {row}; {name} must be unique",
            frame[name],
            first,
            limit=limit,
        )
    together = " and ".join([", ".join(keys[:-1]), keys[-1]])
    return _hits(
        table,
        ", ".join(keys),
        repeated,
        lambda row: f"the row repeats row {row}: the same {together}",
        first,
        limit=limit,
    )


# --- rules across tables -------------------------------------------------------------------


def _reference_hits(typed: Mapping[str, pd.DataFrame], limit: int) -> list[_Hits]:
    """Ids that do not exist in the table they refer to."""
    hits = []
    for table, column, target, key in REFERENCES:
        if not (_has(typed, table, column) and _has(typed, target, key)):
            continue
        values = typed[table][column]
        unknown = values.notna() & ~values.isin(typed[target][key].dropna())
        describe = partial(_value_message, f"is not a {key} in {target}")
        hits.append(_hits(table, column, unknown, describe, values, limit=limit))
    return hits


def _date_order_hits(typed: Mapping[str, pd.DataFrame], limit: int) -> list[_Hits]:
    """Dates that come before the date they must follow."""
    hits = []
    for table, later, source, earlier in DATE_ORDER:
        if not (_has(typed, table, later) and _has(typed, source, earlier)):
            continue
        if source != table and not (_has(typed, table, "citizen_id") and _has(typed, source, "citizen_id")):
            continue
        after = typed[table][later]
        before = typed[table][earlier] if source == table else _citizen_values(typed, table, source, earlier)
        whose = "the row's" if source == table else "the citizen's"
        describe = partial(_order_message, later, f"{whose} {earlier}")
        hits.append(_hits(table, later, after < before, describe, after, before, limit=limit))
    return hits


def _order_message(later: str, earlier: str, after: pd.Timestamp, before: pd.Timestamp) -> str:
    return f"{later} {_show(after)} is before {earlier} {_show(before)}"


def _citizen_values(typed: Mapping[str, pd.DataFrame], table: str, source: str, column: str) -> pd.Series:
    """Each row's citizen's value of `column` in `source` (the first row where an id repeats)."""
    by_citizen = typed[source].drop_duplicates("citizen_id").dropna(subset=["citizen_id"])
    return typed[table]["citizen_id"].map(by_citizen.set_index("citizen_id")[column])


def _event_hits(
    typed: Mapping[str, pd.DataFrame], unreadable: Mapping[tuple[str, str], pd.Series], limit: int
) -> list[_Hits]:
    """event_on is empty exactly when event is none."""
    if not (_has(typed, "outcomes", "event") and _has(typed, "outcomes", "event_on")):
        return []
    event, event_on = typed["outcomes"]["event"], typed["outcomes"]["event_on"]
    dated_none = (event == NO_EVENT) & event_on.notna()
    undated = event.isin([e for e in EVENTS if e != NO_EVENT]) & event_on.isna()
    undated &= ~_flags(unreadable, ("outcomes", "event_on"), event.index)
    return [
        _hits(
            "outcomes",
            "event_on",
            dated_none,
            lambda on: (
                f"event_on {_show(on)} is set but event is {NO_EVENT}; leave it empty or give the event"
            ),
            event_on,
            limit=limit,
        ),
        _hits(
            "outcomes",
            "event_on",
            undated,
            lambda e: f"event_on is empty but event is {e}; give the date of the {e} entry",
            event,
            limit=limit,
        ),
    ]


def _flags(masks: Mapping, key: object, index: pd.Index) -> pd.Series:
    """The mask stored under key, or all False: cells that already have a problem."""
    return masks[key] if key in masks else pd.Series(False, index=index)


def _has(typed: Mapping[str, pd.DataFrame], table: str, column: str) -> bool:
    return table in typed and column in typed[table].columns


# --- problems ------------------------------------------------------------------------------


def _hits(
    table: str,
    column: str | None,
    mask: pd.Series,
    describe: Callable[..., str],
    *values: pd.Series,
    limit: int,
) -> _Hits:
    """Problems for the first `limit` rows where mask holds; describe gets those rows' values.

    Only the reported rows are turned into messages, so a column of a million bad cells costs
    one vectorised count.
    """
    flags = mask.fillna(False).to_numpy(dtype=bool) if mask.dtype != bool else mask.to_numpy()
    positions = np.flatnonzero(flags)
    shown = positions[:limit]
    rows = mask.index.to_numpy()[shown]
    cells = [series.iloc[shown].tolist() for series in values]
    problems = [
        Problem(table, int(row), column, describe(*cell)) for row, *cell in zip(rows, *cells, strict=True)
    ]
    return _Hits(problems, len(positions))


def _merged(hits: Iterable[_Hits], limit: int) -> tuple[list[Problem], int]:
    """The first `limit` problems in table, row, column order, and how many there are in all."""
    hits = list(hits)
    problems = sorted((p for h in hits for p in h.problems), key=_problem_order)
    return problems[:limit], sum(h.count for h in hits)


def _problem_order(problem: Problem) -> tuple[int, int, int]:
    order = list(COLUMNS[problem.table])
    column = order.index(problem.column) if problem.column in order else len(order)
    return TABLES.index(problem.table), problem.row or 0, column


def _show(value: object) -> str:
    """A cell value as a message shows it: numbers and dates plain, text quoted and shortened."""
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d") if value == value.normalize() else str(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, float | np.floating) and float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _bytes(size: int) -> str:
    """A byte count as people read it: 512 bytes, 3.2 MiB, 4.0 GiB."""
    if size < 1024:
        return f"{size} bytes"
    units = ("KiB", "MiB", "GiB", "TiB")
    steps = min(int(np.log(size) // np.log(1024)), len(units))
    return f"{size / 1024**steps:.1f} {units[steps - 1]}"


# --- writing -------------------------------------------------------------------------------

_ARROW_TYPES = {
    "str": pyarrow.string(),
    "Int64": pyarrow.int64(),
    "float64": pyarrow.float64(),
    "date": pyarrow.date32(),
}


def _arrow_table(table: str, frame: pd.DataFrame) -> pyarrow.Table:
    """One table's contract columns as an Arrow table with the contract's types."""
    schema = pyarrow.schema([(name, _ARROW_TYPES[kind]) for name, kind in COLUMNS[table].items()])
    return pyarrow.Table.from_pandas(canonical(table, frame), schema=schema, preserve_index=False)
