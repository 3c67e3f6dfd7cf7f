"""Read, check and write datasets in the data contract (/work/shared/data-contract.md).

A dataset folder is read as text first and parsed column by column, so that every broken cell is
reported with its table, row and column, all in one pass, before anything is stored. The same
checks run on an in-memory `Dataset` (`validate_dataset`), which the simulator and the store use.

The rules are declared once, as one pandera `DataFrameSchema` per table (`contract_schema`): dtype,
required cells, ranges, codes and uniqueness. They are executed here column by column with the
schema's own `Check` objects rather than with `schema.validate`, because pandera collects every
failing cell into one frame: on 2.7M measurements with every score coded 0-4 that took 34 s and
3 GB, while this runner reports the first `max_problems` cells and only counts the rest. Rules
across tables (references, date order, events) are vectorised below the schemas. Text is parsed
with Arrow compute, each distinct value once, so no step loops over rows in Python.

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
  blank lines at the end of the file are ignored. Cells are not trimmed: ' 3' is not a number.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from functools import cache, partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.compute as pc
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

_TEXT = pd.StringDtype(na_value=np.nan)  # pandas' "str": the canonical dtype of text
_PANDERA_DTYPES = {"str": str, "Int64": "Int64", "float64": "float64", "date": "datetime64[s]"}
_WHOLE = r"-?\d{1,15}"
_NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?"
_DATE = r"[1-9]\d{3}-\d{2}-\d{2}"
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
        listed = ", ".join(codes) if len(codes) <= _LISTED_CODES else f"the {len(codes)} codes of the contract"
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
    sources: dict[str, str] = {}
    typed: dict[str, pd.DataFrame] = {}
    unreadable: dict[str, dict[str, np.ndarray]] = {}
    hits: list[_Hits] = []
    warnings: list[str] = []
    for table in TABLES:
        path, found = _table_path(folder, table)
        sources[table] = path.name
        frame = None
        if found:
            hits.append(_found(found))
        else:
            frame, found_in_file = _read_table(path, table, max_bytes, max_problems)
            hits.append(found_in_file)
        if frame is not None:  # parsed at once, so that only one table's raw text is held
            warnings += _extra_column_warnings(path.name, table, frame)
            typed[table], unreadable[table], found_in_cells = _typed_table(table, frame, max_problems)
            hits += found_in_cells
    problems, total = _merged(hits + _rule_hits(typed, unreadable, max_problems), max_problems)
    if problems:
        raise ContractError(problems, total, sources)
    dataset = Dataset(**{table: canonical(table, typed.pop(table)) for table in TABLES})
    return dataset, warnings + _coverage_warnings(dataset)


def validate_dataset(dataset: Dataset, max_problems: int = DEFAULT_MAX_PROBLEMS) -> list[Problem]:
    """The first `max_problems` contract problems of an in-memory dataset; empty when it is valid.

    Rows are counted from 1 by position, whatever the frames' index.
    """
    return _checked(dataset.tables(), max_problems)[1]


def checked_dataset(
    frames: Mapping[str, pd.DataFrame], sources: Mapping[str, str], max_problems: int = DEFAULT_MAX_PROBLEMS
) -> Dataset:
    """The five tables as another reader read them (a partition of a Parquet dataset: stored types),
    checked as `read_dataset` checks a folder and in canonical dtypes; ContractError naming `sources`."""
    typed, problems, total = _checked(frames, max_problems)
    if problems:
        raise ContractError(problems, total, sources)
    return Dataset(**{table: canonical(table, typed[table]) for table in TABLES})


def _checked(
    frames: Mapping[str, pd.DataFrame], max_problems: int
) -> tuple[dict[str, pd.DataFrame], list[Problem], int]:
    """The typed tables, the first problems and the number of problems of in-memory tables."""
    typed: dict[str, pd.DataFrame] = {}
    unreadable: dict[str, dict[str, np.ndarray]] = {}
    hits: list[_Hits] = []
    for table, frame in frames.items():
        rows = frame.set_axis(pd.RangeIndex(1, len(frame) + 1))
        typed[table], unreadable[table], found_in_cells = _typed_table(table, rows, max_problems)
        hits += found_in_cells
    problems, total = _merged(hits + _rule_hits(typed, unreadable, max_problems), max_problems)
    return typed, problems, total


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


def _read_table(path: Path, table: str, max_bytes: int, limit: int) -> tuple[pd.DataFrame | None, _Hits]:
    """The table's cells as read (text for CSV, stored types for Parquet), rows indexed from 1."""
    size = path.stat().st_size
    if size > max_bytes:
        message = (
            f"{path.name} is {_bytes(size)}, over the limit of {_bytes(max_bytes)} ({max_bytes} bytes); "
            "split the export or raise the limit"
        )
        return None, _found([Problem(table, None, None, message)])
    if path.suffix == ".parquet":
        return _read_parquet(path, table)
    return _read_csv(path, table, limit)


def _read_parquet(path: Path, table: str) -> tuple[pd.DataFrame | None, _Hits]:
    try:
        frame = pq.read_table(path).to_pandas(date_as_object=False)
    except (pyarrow.ArrowException, OSError) as error:
        return None, _found([Problem(table, None, None, f"{path.name} cannot be read as Parquet: {error}")])
    repeated = _duplicate_header(table, list(frame.columns))
    return (None if repeated else frame.set_axis(pd.RangeIndex(1, len(frame) + 1))), _found(repeated)


def _read_csv(path: Path, table: str, limit: int) -> tuple[pd.DataFrame | None, _Hits]:
    """All cells of a CSV file as text ("" = empty), via Arrow's multi-threaded reader."""
    if path.stat().st_size == 0:
        message = f"{path.name} is empty (0 bytes); it needs at least a header row"
        return None, _found([Problem(table, None, None, message)])
    header, found = _csv_header(path, table)
    if found:
        return None, _found(found)
    try:
        frame, ragged = _csv_cells(path, header, pyarrow.string())
    except pyarrow.ArrowInvalid as error:
        if "UTF8" not in str(error):
            return None, _found([Problem(table, None, None, f"{path.name} cannot be read as CSV: {error}")])
        return None, _non_utf8_cells(path, table, header, limit)
    problems = [
        Problem(table, row, None, f"the row has {fields} fields, the header {len(header)}")
        for row, fields in ragged[:limit]
    ]
    return frame, _Hits(problems, len(ragged))


def _csv_header(path: Path, table: str) -> tuple[list[str], list[Problem]]:
    """The column names of a CSV file's first line (a UTF-8 byte-order mark is dropped)."""
    with path.open("rb") as handle:
        first = handle.readline()
    try:
        line = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        message = f"the header row of {path.name} is not UTF-8; save the file as UTF-8"
        return [], [Problem(table, None, None, message)]
    header = next(csv.reader([line]), [])
    if not any(header):
        return [], [Problem(table, None, None, f"{path.name} has no header row")]
    if len(header) == 1 and ";" in header[0]:  # a spreadsheet saved with a Danish list separator
        message = f"{path.name} is separated by semicolons; the contract needs commas"
        return [], [Problem(table, None, None, message)]
    return header, _duplicate_header(table, header)


def _duplicate_header(table: str, header: list[str]) -> list[Problem]:
    repeated = [name for name, count in Counter(header).items() if count > 1]
    return [Problem(table, None, str(name), "the column appears more than once in the header") for name in repeated]


def _csv_cells(
    path: Path, header: list[str], cell_type: pyarrow.DataType
) -> tuple[pd.DataFrame, list[tuple[int, int]]]:
    """Every cell as `cell_type` (string or binary), indexed by data row, and the rows skipped
    for a wrong field count as (data row, fields)."""
    frame, ragged = _arrow_csv(path, header, cell_type, threads=True)
    if not ragged:
        return frame, []
    # Arrow numbers rows only when reading on one thread; this path is for broken files only.
    frame, ragged = _arrow_csv(path, header, cell_type, threads=False)
    skipped = [row for row, _ in ragged]
    return frame.set_axis(np.setdiff1d(np.arange(1, len(frame) + len(skipped) + 1), skipped)), ragged


def _arrow_csv(
    path: Path, header: list[str], cell_type: pyarrow.DataType, threads: bool
) -> tuple[pd.DataFrame, list[tuple[int, int]]]:
    ragged: list[tuple[int, int]] = []

    def skip_ragged(row: pacsv.InvalidRow) -> str:
        ragged.append(((row.number or 1) - 1, row.actual_columns))  # Arrow counts the header
        return "skip"

    read = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(use_threads=threads),
        parse_options=pacsv.ParseOptions(
            newlines_in_values=True, ignore_empty_lines=False, invalid_row_handler=skip_ragged
        ),
        convert_options=pacsv.ConvertOptions(
            column_types={name: cell_type for name in header},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    frame = _without_trailing_blank_rows(read.to_pandas(), b"" if cell_type == pyarrow.binary() else "")
    return frame.set_axis(pd.RangeIndex(1, len(frame) + 1)), ragged


def _without_trailing_blank_rows(frame: pd.DataFrame, blank: str | bytes) -> pd.DataFrame:
    """Drop empty rows at the end, which blank lines before end of file make."""
    if frame.empty or any(frame[name].iat[-1] != blank for name in frame.columns):
        return frame
    filled = np.flatnonzero((frame != blank).any(axis=1).to_numpy())
    return frame.iloc[: filled[-1] + 1 if len(filled) else 0]


def _non_utf8_cells(path: Path, table: str, header: list[str], limit: int) -> _Hits:
    """Each cell holding bytes that are not UTF-8, found by reading the file's cells as bytes."""
    cells, _ = _csv_cells(path, header, pyarrow.binary())
    hits = []
    for name in header:
        try:
            pyarrow.array(cells[name], type=pyarrow.binary()).cast(pyarrow.string())
            continue
        except pyarrow.ArrowInvalid:
            pass
        # Undecodable bytes are escaped in one decoding and dropped in the other.
        shown = cells[name].str.decode("utf-8", errors="backslashreplace")
        bad = (shown != cells[name].str.decode("utf-8", errors="ignore")).to_numpy(dtype=bool)
        hits.append(_hits(table, name, cells.index, bad, _not_utf8, shown, limit=limit))
    return _Hits(*_merged(hits, limit))


def _not_utf8(shown: str) -> str:
    # Not _show: repr would double the backslashes that mark the bytes.
    return f"'{_shortened(shown)}' holds bytes that are not UTF-8; save the file as UTF-8"


def _extra_column_warnings(source: str, table: str, frame: pd.DataFrame) -> list[str]:
    return [
        f"{source}: extra column {name!r} is not in the data contract and is ignored"
        for name in frame.columns
        if name not in COLUMNS[table]
    ]


def _coverage_warnings(dataset: Dataset) -> list[str]:
    without = int((_positions(dataset.citizens["citizen_id"], dataset.outcomes["citizen_id"]) < 0).sum())
    if not without:
        return []
    return [f"{without} citizens have no outcomes row; their measurements have no label"]


# --- parsing cells into canonical dtypes ---------------------------------------------------


def _typed_table(
    table: str, frame: pd.DataFrame, limit: int
) -> tuple[pd.DataFrame, dict[str, np.ndarray], list[_Hits]]:
    """The contract columns present, in canonical dtypes; masks of unreadable cells; problems.

    A missing column, or one whose stored type cannot hold the contract's, is left out, so the
    rules that need it are skipped rather than reporting every row again.
    """
    columns: dict[str, pd.Series] = {}
    unreadable: dict[str, np.ndarray] = {}
    hits: list[_Hits] = []
    for name, kind in COLUMNS[table].items():
        if name not in frame.columns:
            hits.append(_found([Problem(table, None, name, "the required column is missing")]))
            continue
        result = _typed_column(kind, frame[name])
        if isinstance(result, str):
            hits.append(_found([Problem(table, None, name, result)]))
            continue
        columns[name], bad = result
        if bad.any():
            unreadable[name] = bad
            describe = _unreadable_describer(kind)
            hits.append(_hits(table, name, frame.index, bad, describe, frame[name], limit=limit))
    return pd.DataFrame(columns, index=frame.index), unreadable, hits


def _typed_column(kind: str, values: pd.Series) -> tuple[pd.Series, np.ndarray] | str:
    """A column in its canonical dtype with a mask of the cells that cannot be read as `kind`;
    or, when the stored type cannot hold `kind` at all, why not. A column already in its
    canonical dtype is returned as it is, without a copy."""
    if isinstance(values.dtype, pd.CategoricalDtype):  # e.g. a dictionary-encoded Parquet column
        values = values.astype(values.cat.categories.dtype)
    stored = _stored_as(values)
    none_bad = np.zeros(len(values), dtype=bool)
    if stored == "text":
        # Arrow compute, not pandas: per column it costs microseconds rather than a millisecond.
        text = _arrow_text(values)
        if kind != "str":
            return _parsed_text(text, kind, values.index)
        empty = pc.equal(text, "")
        if values.dtype == _TEXT and not pc.any(empty).as_py():
            return values, none_bad
        kept = pc.if_else(empty, pyarrow.scalar(None, type=text.type), text)
        return kept.to_pandas().set_axis(values.index), none_bad
    if kind == "Int64" and ptypes.is_integer_dtype(values.dtype):
        return values.astype("Int64", copy=False), none_bad
    if kind in ("Int64", "float64") and stored == "number":
        numbers = values.astype("float64", copy=False)
        bad = (numbers.notna() & ~np.isfinite(numbers)).to_numpy(dtype=bool)
        if kind == "Int64":
            bad = bad | (numbers.notna() & (numbers != np.round(numbers))).to_numpy(dtype=bool)
        return (numbers.mask(bad) if bad.any() else numbers).astype(kind, copy=False), bad
    if kind == "date" and stored == "datetime":
        dates = pd.to_datetime(values)
        if dates.dt.tz is not None:
            dates = dates.dt.tz_localize(None)
        bad = (dates.notna() & (dates != dates.dt.normalize())).to_numpy(dtype=bool)
        return (dates.mask(bad) if bad.any() else dates).astype("datetime64[s]", copy=False), bad
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


def _parsed_text(text: pyarrow.Array, kind: str, index: pd.Index) -> tuple[pd.Series, np.ndarray]:
    """Parse each distinct text once (a score column holds a handful), then spread to the rows."""
    encoded = pc.dictionary_encode(text)  # a missing cell has a null index
    distinct = encoded.dictionary
    parsed = _TEXT_PARSERS[kind](distinct)  # null where empty or unreadable
    unreadable = pc.and_(pc.invert(parsed.is_valid()), pc.not_equal(distinct, ""))
    bad = unreadable.take(encoded.indices).fill_null(False).to_numpy(zero_copy_only=False)
    return pd.Series(_from_arrow(kind, parsed.take(encoded.indices)), index=index), bad


def _from_arrow(kind: str, values: pyarrow.Array) -> pd.api.extensions.ExtensionArray | np.ndarray:
    """Arrow values as the canonical pandas array: Int64, float64 or datetime64[s] (null: missing)."""
    if kind == "Int64":
        return pd.Int64Dtype().__from_arrow__(values)
    return values.to_numpy(zero_copy_only=False)


def _matching(distinct: pyarrow.Array, pattern: str) -> pyarrow.Array:
    """The texts that match the pattern whole; null for the others."""
    matches = pc.match_substring_regex(distinct, f"^(?:{pattern})$")
    return pc.if_else(matches, distinct, pyarrow.scalar(None, type=distinct.type))


def _whole_numbers(distinct: pyarrow.Array) -> pyarrow.Array:
    return pc.cast(_matching(distinct, _WHOLE), pyarrow.int64())


def _numbers(distinct: pyarrow.Array) -> pyarrow.Array:
    numbers = pc.cast(_matching(distinct, _NUMBER), pyarrow.float64())
    return pc.if_else(pc.is_finite(numbers), numbers, pyarrow.scalar(None, type=pyarrow.float64()))


def _dates(distinct: pyarrow.Array) -> pyarrow.Array:
    dates = pc.strptime(_matching(distinct, _DATE), format="%Y-%m-%d", unit="s", error_is_null=True)
    # Arrow rolls 2013-02-30 over to 2013-03-02: a real date prints back as it was written.
    real = pc.equal(pc.strftime(dates, format="%Y-%m-%d"), distinct)
    return pc.if_else(real, dates, pyarrow.scalar(None, type=dates.type))


_TEXT_PARSERS: dict[str, Callable[[pyarrow.Array], pyarrow.Array]] = {
    "Int64": _whole_numbers,
    "float64": _numbers,
    "date": _dates,
}


def _unreadable_describer(kind: str) -> Callable[[object], str]:
    """The message for a cell that cannot be read as `kind`, given the cell as stored."""

    def describe(value: object) -> str:
        if kind == "date" and isinstance(value, str) and re.fullmatch(_DATE, value):
            message = f"{_show(value)} is not a real date"
        elif kind == "date" and isinstance(value, datetime):
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


# --- rules: each table's pandera schema, then the rules across tables --------------------


def _rule_hits(
    typed: Mapping[str, pd.DataFrame], unreadable: Mapping[str, Mapping[str, np.ndarray]], limit: int
) -> list[_Hits]:
    """Every rule's hits on the parsed tables: each table's schema, then the rules across tables."""
    hits = [_schema_hits(table, frame, unreadable[table], limit) for table, frame in typed.items()]
    return [
        *(hit for table_hits in hits for hit in table_hits),
        *_reference_hits(typed, limit),
        *_date_order_hits(typed, limit),
        *_event_hits(typed, unreadable.get("outcomes", {}), limit),
    ]


def _schema_hits(table: str, frame: pd.DataFrame, unreadable: Mapping[str, np.ndarray], limit: int) -> list[_Hits]:
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
            hits.append(_hits(table, name, frame.index, empty, _empty_message, values, limit=limit))
        if column.unique:
            hits.append(_repeat_hits(table, frame, [name], limit))
        for check in column.checks:
            passed = _passed(check, values, present)
            describe = partial(_value_message, check.error)
            hits.append(_hits(table, name, frame.index, present & ~passed, describe, values, limit=limit))
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
    return "the cell is empty but required"


def _value_message(rule: str, value: object) -> str:
    return f"{_show(value)} {rule}"


def _repeat_hits(table: str, frame: pd.DataFrame, keys: list[str], limit: int) -> _Hits:
    """Rows whose key repeats an earlier row's (a key with an empty part repeats nothing)."""
    codes = _key_codes(frame, keys)
    # Codes number keys in order of first appearance, so a row is a key's first exactly when
    # its code exceeds every code before it: no sort needed.
    earlier = np.concatenate(([-1], np.maximum.accumulate(codes)[:-1]))
    first = codes > earlier
    repeated = (codes >= 0) & ~first
    first_row = frame.index.to_numpy()[np.flatnonzero(first)][np.maximum(codes, 0)] if first.any() else codes
    if len(keys) == 1:
        describe = partial(_repeated_value_message, keys[0])
        return _hits(table, keys[0], frame.index, repeated, describe, frame[keys[0]], first_row, limit=limit)
    together = " and ".join([", ".join(keys[:-1]), keys[-1]])
    describe = partial(_repeated_row_message, together)
    return _hits(table, ", ".join(keys), frame.index, repeated, describe, first_row, limit=limit)


def _repeated_value_message(key: str, value: object, row: int) -> str:
    return f"{_show(value)} is already on row {row}; {key} must be unique"


def _repeated_row_message(keys: str, row: int) -> str:
    return f"the row repeats row {row}: the same {keys}"


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


def _reference_hits(typed: Mapping[str, pd.DataFrame], limit: int) -> list[_Hits]:
    """Ids that do not exist in the table they refer to."""
    hits = []
    for table, column, target, key in REFERENCES:
        if not (_has(typed, table, column) and _has(typed, target, key)):
            continue
        values = typed[table][column]
        unknown = values.notna().to_numpy(dtype=bool) & (_positions(values, typed[target][key]) < 0)
        describe = partial(_value_message, f"is not a {key} in {target}")
        hits.append(_hits(table, column, values.index, unknown, describe, values, limit=limit))
    return hits


def _date_order_hits(typed: Mapping[str, pd.DataFrame], limit: int) -> list[_Hits]:
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
        index = typed[table].index
        hits.append(_hits(table, later, index, after < before, describe, after, before, limit=limit))
    return hits


def _order_message(later: str, earlier: str, after: object, before: object) -> str:
    return f"{later} {_show(after)} is before {earlier} {_show(before)}"


def _citizen_values(typed: Mapping[str, pd.DataFrame], table: str, source: str, column: str) -> np.ndarray:
    """Each row's citizen's `column` in `source` (the first row where an id repeats); NaT if none."""
    position = _positions(typed[table]["citizen_id"], typed[source]["citizen_id"])
    values = typed[source][column].to_numpy()
    found = values[np.maximum(position, 0)] if len(values) else np.full(len(position), np.datetime64("NaT"))
    return np.where(position >= 0, found, np.datetime64("NaT"))


def _event_hits(typed: Mapping[str, pd.DataFrame], unreadable: Mapping[str, np.ndarray], limit: int) -> list[_Hits]:
    """event_on is empty exactly when event is none."""
    if not (_has(typed, "outcomes", "event") and _has(typed, "outcomes", "event_on")):
        return []
    outcomes = typed["outcomes"]
    event, event_on = outcomes["event"], outcomes["event_on"]
    dated = event_on.notna().to_numpy(dtype=bool)
    none = (event == NO_EVENT).to_numpy(dtype=bool, na_value=False)
    some = event.isin([e for e in EVENTS if e != NO_EVENT]).to_numpy(dtype=bool, na_value=False)
    misread = unreadable.get("event_on", np.zeros(len(event), dtype=bool))
    return [
        _hits("outcomes", "event_on", outcomes.index, none & dated, _dated_none_message, event_on, limit=limit),
        _hits("outcomes", "event_on", outcomes.index, some & ~dated & ~misread, _undated_message, event, limit=limit),
    ]


def _dated_none_message(event_on: object) -> str:
    return f"event_on {_show(event_on)} is set but event is {NO_EVENT}; leave it empty or set the event"


def _undated_message(event: object) -> str:
    return f"event_on is empty but event is {event}; give the date of the {event} entry"


def _positions(values: pd.Series, targets: pd.Series) -> np.ndarray:
    """Each text value's position among `targets` (the first equal one); -1 where there is none.

    Arrow's hash lookup: pandas' isin and map on Arrow strings build the lookup set in Python,
    which made the references of the 2.7M-row benchmark take tens of seconds.
    """
    found = pc.index_in(_arrow_text(values), value_set=_arrow_text(targets))
    return found.fill_null(-1).to_numpy(zero_copy_only=False)


def _arrow_text(values: pd.Series) -> pyarrow.Array:
    """A text column as one Arrow array (zero-copy when pandas already holds it in Arrow)."""
    text = pyarrow.array(values, type=pyarrow.large_string(), from_pandas=True)
    return text.combine_chunks() if isinstance(text, pyarrow.ChunkedArray) else text


def _has(typed: Mapping[str, pd.DataFrame], table: str, column: str) -> bool:
    return table in typed and column in typed[table].columns


# --- problems ------------------------------------------------------------------------------


def _hits(
    table: str,
    column: str | None,
    index: pd.Index,
    mask: np.ndarray,
    describe: Callable[..., str],
    *values: pd.Series | np.ndarray,
    limit: int,
) -> _Hits:
    """Problems for the first `limit` rows where mask holds; describe gets those rows' values.

    The index holds the row numbers. Only the reported rows are turned into messages, so a
    column of a million bad cells costs one vectorised count.
    """
    positions = np.flatnonzero(mask)
    if not len(positions):
        return _Hits([], 0)
    shown = positions[:limit]
    rows = index.to_numpy()[shown]
    cells = [
        series.iloc[shown].tolist() if isinstance(series, pd.Series) else series[shown].tolist() for series in values
    ]
    problems = [Problem(table, int(row), column, describe(*cell)) for row, *cell in zip(rows, *cells, strict=True)]
    return _Hits(problems, len(positions))


def _found(problems: list[Problem]) -> _Hits:
    return _Hits(problems, len(problems))


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
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d") if value.time() == datetime.min.time() else str(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return repr(_shortened(value))
    if isinstance(value, float | np.floating) and float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _shortened(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
