"""Parsing a table's cells into the contract's canonical dtypes, reporting every unreadable cell.

Text is parsed with Arrow compute, each distinct value once (a score column holds a handful), so no
step loops over rows in Python. A column already stored typed (Parquet, or an in-memory frame) is
taken as it is where its type can hold the contract's.

Decisions where the contract is silent:
- Only an empty cell is missing. Text such as `NA`, `NULL` or `nan` is text: it is a valid id or
  name, and in a number or date column it is rejected with a hint to leave the cell empty.
- Whole numbers are written as digits (`3`, `-1`); `3.5` is rejected, so an export that averaged or
  shifted scores is caught rather than silently rounded. In Parquet an int column may be stored as
  float when every value is whole.
- Harmless variants that spreadsheets and SAS write (`HARMLESS_VARIANTS`): a whole number with zero
  decimals (`3.0`) and spaces around a cell (` 3 `) are read as `3`, each kind reported once per
  column as a `Normalised` note (a warning); with `strict` every such cell is a problem instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.compute as pc
from pandas.api import types as ptypes

from features.contract_problems import Hits, Problem, cell, found, found_where, show, shown_safely
from features.dataset import COLUMNS

_TEXT = pd.StringDtype(na_value=np.nan)  # pandas' "str": the canonical dtype of text
_WHOLE = r"-?\d{1,15}"
_NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?"
DATE_TEXT = r"[1-9]\d{3}-\d{2}-\d{2}"
_MISSING_WORDS = frozenset({"na", "n/a", "nan", "null", "none", "-", ".", "?"})
_ZERO_DECIMALS = r"-?\d{1,15}\.0*"
HARMLESS_VARIANTS: dict[str, str] = {
    "spaces": "spaces around the value",
    "decimals": "a whole number written with zero decimals",
}


class Normalised(NamedTuple):
    """Cells of one column read through a harmless variant (`HARMLESS_VARIANTS`): how many, the first row."""

    table: str
    column: str
    variant: str
    count: int
    first_row: int


def typed_table(
    table: str, frame: pd.DataFrame, limit: int, strict: bool = False
) -> tuple[pd.DataFrame, dict[str, np.ndarray], list[Hits], list[Normalised]]:
    """The contract columns present, in canonical dtypes; masks of unreadable cells; problems; the
    harmless variants read (with `strict`: none, each such cell is a problem and unreadable).

    A missing column, or one whose stored type cannot hold the contract's, is left out, so the
    rules that need it are skipped rather than reporting every row again.
    """
    columns: dict[str, pd.Series] = {}
    unreadable: dict[str, np.ndarray] = {}
    found_hits: list[Hits] = []
    notes: list[Normalised] = []
    for name, kind in COLUMNS[table].items():
        if name not in frame.columns:
            found_hits.append(found([Problem(table, None, name, "the required column is missing")]))
            continue
        values, variants = harmless_variants(kind, frame[name])
        refused = np.zeros(len(values), dtype=bool)
        for variant, mask in variants.items():
            if strict:
                describe = _variant_describer(table, name, variant)
                found_hits.append(found_where(table, name, frame.index, mask, describe, frame[name], limit=limit))
                refused |= mask
            else:
                notes.append(Normalised(table, name, variant, int(mask.sum()), int(frame.index[np.argmax(mask)])))
        if refused.any():  # read as empty and marked unreadable, so no other rule reports them again
            values = values.mask(refused, "")
        result = _typed_column(kind, values)
        if isinstance(result, str):
            found_hits.append(found([Problem(table, None, name, result)]))
            continue
        columns[name], bad = result
        if bad.any() or refused.any():
            unreadable[name] = bad | refused
            describe = _unreadable_describer(table, name, kind)
            found_hits.append(found_where(table, name, frame.index, bad, describe, frame[name], limit=limit))
    return pd.DataFrame(columns, index=frame.index), unreadable, found_hits, notes


def harmless_variants(kind: str, values: pd.Series) -> tuple[pd.Series, dict[str, np.ndarray]]:
    """A text column with its harmless variants normalised (`HARMLESS_VARIANTS`: spaces trimmed, and in
    a whole-number column zero decimals dropped), and the mask of the cells of each variant found.
    Columns stored typed, and text without variants, come back as they are."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(values.cat.categories.dtype)
    if _stored_as(values) != "text":
        return values, {}
    text = arrow_text(values)
    # Checked on the distinct values where a column holds few (scores, codes, dates), as parsing does.
    indices = None
    if kind != "str":
        encoded = pc.dictionary_encode(text)
        text, indices = encoded.dictionary, encoded.indices
    trimmed = pc.utf8_trim_whitespace(text)
    masks = {"spaces": pc.not_equal(text, trimmed)}
    normalised = trimmed
    if kind == "Int64":
        masks["decimals"] = pc.match_substring_regex(trimmed, f"^{_ZERO_DECIMALS}$")
        normalised = pc.if_else(masks["decimals"], pc.replace_substring_regex(trimmed, r"\.0*$", ""), trimmed)

    def per_row(values: pyarrow.Array) -> pyarrow.Array:
        return values if indices is None else values.take(indices)

    found_variants = {
        variant: per_row(mask).fill_null(False).to_numpy(zero_copy_only=False)
        for variant, mask in masks.items()
        if pc.any(mask).as_py()
    }
    if not found_variants:
        return values, {}
    rows = per_row(normalised).to_numpy(zero_copy_only=False)
    return pd.Series(rows, index=values.index, dtype=_TEXT), found_variants


def _variant_describer(table: str, column: str, variant: str) -> Callable[[object], str]:
    """The message for a harmless variant refused under `strict`: what was found and what to write."""

    def describe(value: object) -> str:
        personal = not shown_safely(table, column, value)
        text = str(value)
        if variant == "spaces":
            if personal:
                return "the value has spaces around it; write it without spaces before or after"
            return f"{show(text)} has spaces around it; write {show(text.strip())}"
        whole = re.sub(r"\.0*$", "", text.strip())
        if personal:
            return "the value is a whole number written with decimals (e.g. 3.0); write digits only, e.g. 3"
        return f"{show(text)} is a whole number written with decimals; write {whole}"

    return describe


def normalised_warning(note: Normalised, source: str) -> str:
    """The warning for a harmless variant read: what was found, where first, and what to write."""
    cells = "cell" if note.count == 1 else "cells"
    fix = {
        "spaces": "trimmed; write values without spaces before or after",
        "decimals": "read as whole numbers; write whole numbers as digits only (3, not 3.0)",
    }[note.variant]
    return (
        f"{source}, column {note.column}: {note.count} {cells} with {HARMLESS_VARIANTS[note.variant]} "
        f"(first at row {note.first_row}), {fix}; `--strict` refuses them"
    )


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
        text = arrow_text(values)
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
    dates = pc.strptime(_matching(distinct, DATE_TEXT), format="%Y-%m-%d", unit="s", error_is_null=True)
    # Arrow rolls 2013-02-30 over to 2013-03-02: a real date prints back as it was written.
    real = pc.equal(pc.strftime(dates, format="%Y-%m-%d"), distinct)
    return pc.if_else(real, dates, pyarrow.scalar(None, type=dates.type))


_TEXT_PARSERS: dict[str, Callable[[pyarrow.Array], pyarrow.Array]] = {
    "Int64": _whole_numbers,
    "float64": _numbers,
    "date": _dates,
}


def _unreadable_describer(table: str, column: str, kind: str) -> Callable[[object], str]:
    """The message for a cell that cannot be read as `kind`, given the cell as stored."""

    def describe(value: object) -> str:
        missing_word = isinstance(value, str) and value.strip().lower() in _MISSING_WORDS
        shown = show(value) if missing_word else cell(table, column, value)  # 'NA' is nobody's value
        if kind == "date" and isinstance(value, str) and re.fullmatch(DATE_TEXT, value):
            message = f"{shown} is not a real date"
        elif kind == "date" and isinstance(value, datetime):
            message = f"{shown} has a time of day; the contract needs a date"
        elif kind == "date":
            message = f"{shown} is not a date written YYYY-MM-DD"
        elif kind == "Int64":
            message = f"{shown} is not a whole number (write digits only, e.g. 3)"
        else:
            message = f"{shown} is not a number (write decimals with a point, e.g. 0.5)"
        if missing_word:
            message += "; leave the cell empty when the value is missing"
        return message

    return describe


def arrow_text(values: pd.Series) -> pyarrow.Array:
    """A text column as one Arrow array (zero-copy when pandas already holds it in Arrow)."""
    text = pyarrow.array(values, type=pyarrow.large_string(), from_pandas=True)
    return text.combine_chunks() if isinstance(text, pyarrow.ChunkedArray) else text
