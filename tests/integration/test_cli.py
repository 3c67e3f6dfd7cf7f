"""The `bip` command line end to end: simulate → validate → ingest → export round-trips."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from bip_cli import run_bip

from features.contract import read_dataset


def bip(*args: str, home: Path) -> subprocess.CompletedProcess:
    return run_bip(*args, home=home)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "data"
    result = bip("simulate", "--out", str(out), "--citizens", "150", "--seed", "11", home=out.parent / "home")
    assert result.returncode == 0, result.stderr
    return out


def test_simulate_writes_contract_tables_and_truth_beside(simulated):
    assert sorted(p.name for p in simulated.iterdir()) == [
        "caseworkers.csv",
        "citizens.csv",
        "interventions.csv",
        "measurements.csv",
        "outcomes.csv",
    ]
    truth = pd.read_csv(simulated.with_name("data-truth") / "true_probabilities.csv")
    assert len(truth) == len(pd.read_csv(simulated / "measurements.csv"))


def test_validate_ingest_export_round_trip(simulated, tmp_path):
    home = tmp_path / "home"
    assert bip("validate", str(simulated), home=home).returncode == 0
    first = bip("ingest", str(simulated), home=home)
    assert first.returncode == 0, first.stderr
    assert "measurements   added" in first.stdout
    again = bip("ingest", str(simulated), home=home)
    assert all(" added 0, updated 0" in line for line in again.stdout.strip().splitlines())
    exported = tmp_path / "exported"
    assert bip("export", str(exported), home=home).returncode == 0, "export failed"
    original, _ = read_dataset(simulated)
    round_trip, _ = read_dataset(exported)
    for name, frame in original.tables().items():
        key = list(frame.columns[:1]) if name != "interventions" else ["citizen_id", "intervention", "started_on"]
        pd.testing.assert_frame_equal(
            frame.sort_values(key).reset_index(drop=True),
            round_trip.table(name).sort_values(key).reset_index(drop=True),
            obj=name,
        )


def test_a_broken_dataset_is_one_clear_message_and_stores_nothing(simulated, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for table in simulated.iterdir():
        (broken / table.name).write_bytes(table.read_bytes())
    with (simulated / "measurements.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    rows[1][rows[0].index("cit_self_efficacy")] = "9"
    with (broken / "measurements.csv").open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    home = tmp_path / "home"
    result = bip("ingest", str(broken), home=home)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "row 1" in result.stderr and "cit_self_efficacy" in result.stderr
    exported = tmp_path / "exported"
    assert bip("export", str(exported), home=home).returncode == 0
    assert len(pd.read_csv(exported / "measurements.csv")) == 0


def command_paths(command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """Every leaf command of a Typer app's click command, with its path of names: a subcommand
    group (e.g. `bip users`) is walked into, so a command added anywhere is listed."""
    children = getattr(command, "commands", None)
    if not children:
        return [(path, command)]
    paths = [(path, command)] if path else []  # a group has help of its own too
    for name, child in sorted(children.items()):
        paths += command_paths(child, (*path, name))
    return paths


def test_every_command_has_help(tmp_path):
    from typer.main import get_command
    from typer.testing import CliRunner

    from bip.cli import build_app

    app = build_app()
    paths = command_paths(get_command(app))
    names = {path[0] for path, _ in paths}
    assert {"simulate", "validate", "ingest", "train", "serve", "report"} <= names, names  # the walk finds them
    runner = CliRunner()
    for path, command in paths:
        assert (command.help or "").strip(), f"bip {' '.join(path)} has no help text"
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, (path, result.output)
    # And through the installed entry point, which lists every top-level command.
    top = bip("--help", home=tmp_path)
    assert top.returncode == 0, top.stderr
    for name in names:
        assert name in top.stdout, name
