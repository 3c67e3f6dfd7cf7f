"""Problems with a dataset: where each is (table, row, column), what it is, and how they are reported.

Every stage of the contract check (reading, parsing, rules) reports into the same `Problem` list,
so that one `ContractError` lists every problem of a dataset in table, row and column order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from typing import NamedTuple

import numpy as np
import pandas as pd

from bip.errors import UserError
from features.contract_declaration import CODES, PERSONAL
from features.dataset import COLUMNS, TABLES

SHOWN_PROBLEMS = 50


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
        # No "nothing was stored": validate and predict store nothing anyway (ingest stores nothing either).
        lines = [f"the dataset breaks the data contract ({self.total} {noun}):"]
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


class Hits(NamedTuple):
    """The first problems one rule found (at most the limit) and how many it found in all."""

    problems: list[Problem]
    count: int


def found_where(
    table: str,
    column: str | None,
    index: pd.Index,
    mask: np.ndarray,
    describe: Callable[..., str],
    *values: pd.Series | np.ndarray,
    limit: int,
) -> Hits:
    """Problems for the first `limit` rows where mask holds; describe gets those rows' values.

    The index holds the row numbers. Only the reported rows are turned into messages, so a
    column of a million bad cells costs one vectorised count.
    """
    positions = np.flatnonzero(mask)
    if not len(positions):
        return Hits([], 0)
    shown = positions[:limit]
    rows = index.to_numpy()[shown]
    cells = [
        series.iloc[shown].tolist() if isinstance(series, pd.Series) else series[shown].tolist() for series in values
    ]
    problems = [Problem(table, int(row), column, describe(*cell)) for row, *cell in zip(rows, *cells, strict=True)]
    return Hits(problems, len(positions))


def found(problems: list[Problem]) -> Hits:
    return Hits(problems, len(problems))


def merged(hits: Iterable[Hits], limit: int) -> tuple[list[Problem], int]:
    """The first `limit` problems in table, row, column order, and how many there are in all."""
    found_hits = list(hits)
    problems = sorted((p for h in found_hits for p in h.problems), key=_problem_order)
    return problems[:limit], sum(h.count for h in found_hits)


def _problem_order(problem: Problem) -> tuple[int, int, int]:
    order = list(COLUMNS[problem.table])
    column = order.index(problem.column) if problem.column in order else len(order)
    return TABLES.index(problem.table), problem.row or 0, column


def show(value: object) -> str:
    """A cell value as a message shows it: numbers and dates plain, text quoted and shortened."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d") if value.time() == datetime.min.time() else str(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return repr(shortened(value))
    if isinstance(value, float | np.floating) and float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def shown_safely(table: str, column: str, value: object) -> bool:
    """Whether a message may show `value` of this column: never in a column that describes a person
    (ids, birth years, answers, dates of people), and elsewhere only a value that is one of the column's
    codes but for case and spaces ('Job', ' job'). A file whose columns are out of place puts ids and
    answers under any header: 'C000123' under `event` is a citizen's id."""
    if (table, column) in PERSONAL or (table, column) not in CODES:
        return False
    return str(value).strip().casefold() in {code.casefold() for code in CODES[table, column]}


def cell(table: str, column: str, value: object) -> str:
    """A cell value as a message may show it: `show(value)` where `shown_safely`, else "the value"."""
    return show(value) if shown_safely(table, column, value) else "the value"


def shortened(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def byte_size(size: int) -> str:
    """A byte count as people read it: 512 bytes, 3.2 MiB, 4.0 GiB."""
    if size < 1024:
        return f"{size} bytes"
    units = ("KiB", "MiB", "GiB", "TiB")
    steps = min(int(np.log(size) // np.log(1024)), len(units))
    return f"{size / 1024**steps:.1f} {units[steps - 1]}"
