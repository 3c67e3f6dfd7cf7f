"""Read, check and write datasets in the data contract (/work/shared/data-contract.md).

A dataset folder is read as text first and parsed column by column, so that every broken cell is
reported with its table, row and column, all in one pass, before anything is stored. The same
checks run on an in-memory `Dataset` (`validate_dataset`), which the simulator and the store use.

The check has three steps, each in its own module, all reporting into one list of `Problem`s
(`features.contract_problems`):
- reading the files (`features.contract_reading`: CSV or Parquet, encodings, headers, row counts;
  `write_dataset` writes them);
- parsing the cells into canonical dtypes (`features.contract_parsing`);
- the rules (`features.contract_rules`): each table's pandera schema, built from the declaration
  in `features.contract_declaration`, then the rules across tables.
The decisions taken where the contract is silent are written at the top of each of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bip.errors import UserError
from features.contract_parsing import normalised_warning, typed_table
from features.contract_problems import ContractError, Hits, Problem, found, merged
from features.contract_reading import (
    DEFAULT_MAX_BYTES,
    FORMATS,
    bom_message,
    extra_column_warnings,
    read_table,
    starts_with_bom,
    table_path,
    write_dataset,
)
from features.contract_rules import contract_schema, coverage_warnings, rule_hits
from features.dataset import TABLES, Dataset, canonical

DEFAULT_MAX_PROBLEMS = 1000

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PROBLEMS",
    "FORMATS",
    "ContractError",
    "Problem",
    "checked_dataset",
    "contract_schema",
    "read_dataset",
    "validate_dataset",
    "write_dataset",
]


def read_dataset(
    folder: Path, max_problems: int = DEFAULT_MAX_PROBLEMS, max_bytes: int = DEFAULT_MAX_BYTES, strict: bool = False
) -> tuple[Dataset, list[str]]:
    """Read and check a dataset folder; the Dataset in canonical dtypes and warnings for the user.

    Raises ContractError listing the first `max_problems` problems of all tables when any rule is
    broken, so that nothing half-checked reaches the store. Harmless variants (a BOM, spaces around a
    cell, `3.0` for 3) are read with a warning, or, with `strict`, are problems.
    """
    checked = checked_folder(folder, max_problems, max_bytes, strict)
    problems, total = merged(checked.hits, max_problems)
    if problems:
        raise ContractError(problems, total, checked.sources)
    dataset = Dataset(**{table: canonical(table, checked.typed.pop(table)) for table in TABLES})
    return dataset, checked.warnings + coverage_warnings(dataset)


@dataclass
class CheckedFolder:
    """What checking a folder found: the typed tables, every rule's hits (each with its full count), the
    warnings and the file name of each table."""

    typed: dict[str, pd.DataFrame]
    hits: list[Hits]
    warnings: list[str]
    sources: dict[str, str]


def checked_folder(folder: Path, max_problems: int, max_bytes: int, strict: bool = False) -> CheckedFolder:
    """Read and check every table of a dataset folder (see `read_dataset`), raising nothing for a
    broken dataset: `features.validation_report` groups its hits by rule."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"dataset folder {folder} does not exist; give a folder holding the five tables")
    sources: dict[str, str] = {}
    typed: dict[str, pd.DataFrame] = {}
    unreadable: dict[str, dict[str, np.ndarray]] = {}
    hits: list[Hits] = []
    warnings: list[str] = []
    for table in TABLES:
        path, missing = table_path(folder, table)
        sources[table] = path.name
        frame = None
        if missing:
            hits.append(found(missing))
        else:
            frame, found_in_file = read_table(path, table, max_bytes, max_problems)
            hits.append(found_in_file)
            if starts_with_bom(path):
                if strict:
                    hits.append(found([Problem(table, None, None, bom_message(path.name))]))
                else:
                    warnings.append(f"{bom_message(path.name)} (read without it; `--strict` refuses it)")
        if frame is not None:  # parsed at once, so that only one table's raw text is held
            warnings += extra_column_warnings(path.name, table, frame)
            typed[table], unreadable[table], found_in_cells, notes = typed_table(table, frame, max_problems, strict)
            hits += found_in_cells
            warnings += [normalised_warning(note, path.name) for note in notes]
    return CheckedFolder(typed, hits + rule_hits(typed, unreadable, max_problems), warnings, sources)


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
    hits: list[Hits] = []
    for table, frame in frames.items():
        rows = frame.set_axis(pd.RangeIndex(1, len(frame) + 1))
        typed[table], unreadable[table], found_in_cells, _ = typed_table(table, rows, max_problems)
        hits += found_in_cells
    problems, total = merged(hits + rule_hits(typed, unreadable, max_problems), max_problems)
    return typed, problems, total
