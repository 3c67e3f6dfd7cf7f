"""Harmless variants that spreadsheets and SAS write are read with a warning, and refused with `strict`:
a whole number written with zero decimals (`3.0`), spaces around a value (` 3 `, ` F`), a UTF-8 BOM.
Every message says what was found and what to write instead, and never shows a citizen's value."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from bip_cli import run_bip
from csv_tables import read_rows, write_rows

from features.contract import ContractError, read_dataset, write_dataset
from simulator.simulation import simulate

SCORE = "cit_self_efficacy"


def bip(*args: str, home: Path) -> subprocess.CompletedProcess:
    return run_bip(*args, home=home)


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("valid") / "data"
    write_dataset(simulate(30, seed=5, truth_draws=0).dataset, out)
    return out


@pytest.fixture
def folder(valid: Path, tmp_path: Path) -> Path:
    out = tmp_path / "data"
    out.mkdir()
    for path in valid.iterdir():
        (out / path.name).write_bytes(path.read_bytes())
    return out


def set_cells(folder: Path, table: str, column: str, values: dict[int, str]) -> dict[int, str]:
    """Overwrite cells (1-based data rows); the values they held."""
    table_rows = read_rows(folder, table)
    before = {row: table_rows[row - 1][column] for row in values}
    for row, value in values.items():
        table_rows[row - 1][column] = value
    write_rows(folder, table, table_rows)
    return before


def answered_rows(folder: Path, count: int) -> list[int]:
    return [i for i, row in enumerate(read_rows(folder, "measurements"), start=1) if row[SCORE]][:count]


def test_a_score_written_3_0_is_read_as_3_with_a_warning(folder: Path) -> None:
    first, second = answered_rows(folder, 2)
    before = set_cells(folder, "measurements", SCORE, {first: "3.0", second: "4.00"})

    dataset, warnings = read_dataset(folder)

    scores = dataset.measurements[SCORE]
    assert (scores.iloc[first - 1], scores.iloc[second - 1]) == (3, 4)
    (warning,) = [w for w in warnings if SCORE in w]
    assert "measurements.csv" in warning and "2 cells" in warning and f"first at row {first}" in warning
    assert "write whole numbers as digits only (3, not 3.0)" in warning
    assert before  # the values replaced are the citizens' answers: none is in the warning
    assert "4.00" not in warning


def test_spaces_around_a_score_an_id_and_a_code_are_trimmed_with_a_warning(folder: Path) -> None:
    (row,) = answered_rows(folder, 1)
    set_cells(folder, "measurements", SCORE, {row: " 3 "})
    ids = set_cells(folder, "citizens", "gender", {1: " F", 2: "M "})
    citizen = read_rows(folder, "citizens")[0]["citizen_id"]
    set_cells(folder, "citizens", "jobcentre", {1: " Aarhus "})

    dataset, warnings = read_dataset(folder)

    assert dataset.measurements[SCORE].iloc[row - 1] == 3
    assert dataset.citizens["gender"].iloc[:2].tolist() == ["F", "M"]
    assert dataset.citizens["jobcentre"].iloc[0] == "Aarhus"
    assert dataset.citizens["citizen_id"].iloc[0] == citizen
    spaced = [w for w in warnings if "spaces around the value" in w]
    assert {w.split(": ")[0] for w in spaced} == {
        f"measurements.csv, column {SCORE}",
        "citizens.csv, column gender",
        "citizens.csv, column jobcentre",
    }
    assert all("write values without spaces before or after" in w for w in spaced)
    assert ids


def test_an_id_with_spaces_is_trimmed_and_still_referenced(folder: Path) -> None:
    citizen = read_rows(folder, "citizens")[0]["citizen_id"]
    set_cells(folder, "citizens", "citizen_id", {1: f"{citizen} "})

    dataset, warnings = read_dataset(folder)

    assert dataset.citizens["citizen_id"].iloc[0] == citizen
    (warning,) = [w for w in warnings if "citizen_id" in w]
    assert citizen not in warning


def test_strict_refuses_3_0_and_spaces_saying_what_to_write(folder: Path) -> None:
    first, second = answered_rows(folder, 2)
    set_cells(folder, "measurements", SCORE, {first: "3.0", second: " 3 "})
    set_cells(folder, "citizens", "gender", {1: " F"})

    with pytest.raises(ContractError) as caught:
        read_dataset(folder, strict=True)

    found = {(p.table, p.row, p.column): p.message for p in caught.value.problems}
    assert found == {
        ("citizens", 1, "gender"): "' F' has spaces around it; write 'F'",
        ("measurements", first, SCORE): "the value is a whole number written with decimals (e.g. 3.0); "
        "write digits only, e.g. 3",
        ("measurements", second, SCORE): "the value has spaces around it; write it without spaces before or after",
    }


def test_a_bom_is_read_with_a_warning_and_refused_with_strict(folder: Path) -> None:
    path = folder / "citizens.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())

    dataset, warnings = read_dataset(folder)
    assert len(dataset.citizens) == 30
    assert any("citizens.csv starts with a UTF-8 byte-order mark" in w and "without a BOM" in w for w in warnings)

    with pytest.raises(ContractError) as caught:
        read_dataset(folder, strict=True)
    (problem,) = caught.value.problems
    assert (problem.table, problem.row) == ("citizens", None)
    assert "save it as plain UTF-8, without a BOM" in problem.message


def test_3_5_is_still_refused_without_strict(folder: Path) -> None:
    (row,) = answered_rows(folder, 1)
    set_cells(folder, "measurements", SCORE, {row: "3.5"})

    with pytest.raises(ContractError) as caught:
        read_dataset(folder)

    (problem,) = caught.value.problems
    assert problem.message == "the value is not a whole number (write digits only, e.g. 3)"


def test_bip_validate_warns_and_strict_exits_with_the_problems(folder: Path, tmp_path: Path) -> None:
    first, second = answered_rows(folder, 2)
    set_cells(folder, "measurements", SCORE, {first: "3.0", second: " 3 "})

    lenient = bip("validate", str(folder), home=tmp_path / "home")
    strict = bip("validate", str(folder), "--strict", home=tmp_path / "home")

    assert lenient.returncode == 0, lenient.stderr
    assert "valid:" in lenient.stdout and "warning:" in lenient.stderr and "3, not 3.0" in lenient.stderr
    assert strict.returncode != 0 and "valid:" not in strict.stdout
    assert "written with decimals" in strict.stderr and "has spaces around it" in strict.stderr


def test_bip_ingest_normalises_with_a_warning_and_strict_stores_nothing(folder: Path, tmp_path: Path) -> None:
    from sqlalchemy import create_engine, inspect

    (row,) = answered_rows(folder, 1)
    set_cells(folder, "measurements", SCORE, {row: "3.0"})
    strict_home, home = tmp_path / "strict", tmp_path / "home"

    refused = bip("ingest", str(folder), "--strict", home=strict_home)
    loaded = bip("ingest", str(folder), home=home)

    assert refused.returncode != 0 and "written with decimals" in refused.stderr
    store = strict_home / "store.db"
    assert not store.exists() or "measurements" not in inspect(create_engine(f"sqlite:///{store}")).get_table_names()
    assert loaded.returncode == 0, loaded.stderr
    assert "3, not 3.0" in loaded.stderr
