"""A dataset folder's CSV tables as plain rows, for the tests that edit an export cell by cell."""

from __future__ import annotations

import csv
from pathlib import Path


def read_rows(folder: Path, table: str) -> list[dict[str, str]]:
    """The rows of `folder/table.csv`, each a dict of column to text."""
    with (folder / f"{table}.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(folder: Path, table: str, rows: list[dict[str, str]]) -> None:
    """Write `rows` as `folder/table.csv`, the columns those of the first row."""
    with (folder / f"{table}.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
