"""Reading and writing the tables of a dataset folder: CSV or Parquet files, as the contract has them.

Reading returns each table's cells as stored (all text for CSV, stored types for Parquet) with
their data rows numbered from 1, and the problems of the file itself (missing, unreadable, not
UTF-8, wrong field counts, repeated header names); `features.contract_parsing` types the cells.

Decisions where the contract is silent:
- Rows are data rows counted from 1 under the header; a quoted value may hold a line break, so a
  row number is not always a line number. Blank lines inside a CSV are rows with empty cells;
  blank lines at the end of the file are ignored.
- Spreadsheet formulas (`=HYPERLINK(...)`) are plain text: never evaluated, and still checked
  against their column's rule. `write_dataset` writes text as it is, so such a value round-trips.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bip.errors import UserError
from bip.files import partial_path
from features.contract_problems import Hits, Problem, byte_size, found, found_where, merged
from features.dataset import COLUMNS, TABLES, Dataset, canonical

DEFAULT_MAX_BYTES = 4 * 1024**3
FORMATS: tuple[str, ...] = ("csv", "parquet")
UTF8_BOM = b"\xef\xbb\xbf"


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
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file; give a folder to write the tables into")
    folder.mkdir(parents=True, exist_ok=True)
    # Every table is written beside its place first and moved in only once all five are written: an
    # interrupted export leaves the folder as it was, not some tables new and some old or half written.
    written = []
    try:
        for table in TABLES:
            arrow_table = _arrow_table(table, dataset.table(table))
            path = folder / f"{table}.{fmt}"
            written.append((partial_path(path), path))
            if fmt == "csv":
                pacsv.write_csv(arrow_table, written[-1][0])
            else:
                pq.write_table(arrow_table, written[-1][0])
        for partial, path in written:
            os.replace(partial, path)
    finally:
        for partial, _ in written:
            partial.unlink(missing_ok=True)


def table_path(folder: Path, table: str) -> tuple[Path, list[Problem]]:
    """The file holding a table, or the problems of finding it (missing, or in two formats)."""
    present = [folder / f"{table}.{fmt}" for fmt in FORMATS if (folder / f"{table}.{fmt}").is_file()]
    if len(present) == 1:
        return present[0], []
    if present:
        message = f"both {table}.csv and {table}.parquet exist; keep one so the table is unambiguous"
        return present[0], [Problem(table, None, None, message)]
    message = f"the table is missing: put {table}.csv or {table}.parquet in {folder}"
    return folder / f"{table}.csv", [Problem(table, None, None, message)]


def read_table(path: Path, table: str, max_bytes: int, limit: int) -> tuple[pd.DataFrame | None, Hits]:
    """The table's cells as read (text for CSV, stored types for Parquet), rows indexed from 1."""
    size = path.stat().st_size
    if size > max_bytes:
        message = (
            f"{path.name} is {byte_size(size)}, over the limit of {byte_size(max_bytes)} ({max_bytes} bytes); "
            "split the export or raise the limit"
        )
        return None, found([Problem(table, None, None, message)])
    if path.suffix == ".parquet":
        return _read_parquet(path, table)
    return _read_csv(path, table, limit)


def _read_parquet(path: Path, table: str) -> tuple[pd.DataFrame | None, Hits]:
    try:
        frame = pq.read_table(path).to_pandas(date_as_object=False)
    except (pyarrow.ArrowException, OSError) as error:
        return None, found([Problem(table, None, None, f"{path.name} cannot be read as Parquet: {error}")])
    repeated = _duplicate_header(table, list(frame.columns))
    return (None if repeated else frame.set_axis(pd.RangeIndex(1, len(frame) + 1))), found(repeated)


def _read_csv(path: Path, table: str, limit: int) -> tuple[pd.DataFrame | None, Hits]:
    """All cells of a CSV file as text ("" = empty), via Arrow's multi-threaded reader."""
    if path.stat().st_size == 0:
        message = f"{path.name} is empty (0 bytes); it needs at least a header row"
        return None, found([Problem(table, None, None, message)])
    header, header_problems = _csv_header(path, table)
    if header_problems:
        return None, found(header_problems)
    try:
        frame, ragged = _csv_cells(path, header, pyarrow.string())
    except pyarrow.ArrowInvalid as error:
        if "UTF8" not in str(error):
            return None, found([Problem(table, None, None, f"{path.name} cannot be read as CSV: {error}")])
        return None, _non_utf8_cells(path, table, header, limit)
    problems = [
        Problem(
            table, row, None, f"the row has {fields} fields, the header {len(header)}; quote a value that holds a comma"
        )
        for row, fields in ragged[:limit]
    ]
    return frame, Hits(problems, len(ragged))


def starts_with_bom(path: Path) -> bool:
    """Whether a CSV file starts with a UTF-8 byte-order mark, which Excel writes ("CSV UTF-8")."""
    if path.suffix != ".csv":
        return False
    with path.open("rb") as handle:
        return handle.read(3) == UTF8_BOM


def bom_message(name: str) -> str:
    return f"{name} starts with a UTF-8 byte-order mark (BOM); save it as plain UTF-8, without a BOM"


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


def _non_utf8_cells(path: Path, table: str, header: list[str], limit: int) -> Hits:
    """Each cell holding bytes that are not UTF-8, found by reading the file's cells as bytes."""
    cells, _ = _csv_cells(path, header, pyarrow.binary())
    found_hits = []
    for name in header:
        try:
            pyarrow.array(cells[name], type=pyarrow.binary()).cast(pyarrow.string())
            continue
        except pyarrow.ArrowInvalid:
            pass
        # Undecodable bytes are escaped in one decoding and dropped in the other.
        shown = cells[name].str.decode("utf-8", errors="backslashreplace")
        bad = (shown != cells[name].str.decode("utf-8", errors="ignore")).to_numpy(dtype=bool)
        found_hits.append(found_where(table, name, cells.index, bad, _not_utf8, shown, limit=limit))
    return Hits(*merged(found_hits, limit))


def _not_utf8(shown: str) -> str:
    # Never the value: bytes that are not UTF-8 are no code of the contract (`shown_safely`).
    return "the value holds bytes that are not UTF-8; save the file as UTF-8"


def extra_column_warnings(source: str, table: str, frame: pd.DataFrame) -> list[str]:
    return [
        f"{source}: extra column {name!r} is not in the data contract and is ignored"
        for name in frame.columns
        if name not in COLUMNS[table]
    ]


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
