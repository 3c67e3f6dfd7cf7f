"""`bip validate DIR --report FILE.json|.html` on a broken export lists every problem, not the first 50,
grouped by rule with the count of each and a few examples, and shows no citizen's value."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from bip_cli import run_bip
from csv_tables import read_rows, write_rows

from features.contract import write_dataset
from features.validation_report import rule_of, validation_report, write_report
from simulator.simulation import simulate

BAD_SCORES, BAD_DATES = 70, 12
SCORE = "cit_self_efficacy"


def bip(*args: str, home: Path) -> subprocess.CompletedProcess:
    return run_bip(*args, home=home)


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> tuple[Path, list[str]]:
    """A simulated export with 70 scores of 7 (out of 1-5) and 12 enrolment dates written 05/01/2013;
    the scores it overwrote (which the report must not show) too."""
    out = tmp_path_factory.mktemp("broken") / "data"
    write_dataset(simulate(60, seed=3, truth_draws=0).dataset, out)
    measurements = read_rows(out, "measurements")
    answered = [row for row in measurements if row[SCORE]][:BAD_SCORES]
    assert len(answered) == BAD_SCORES
    for row in answered:
        row[SCORE] = "7"
    write_rows(out, "measurements", measurements)
    citizens = read_rows(out, "citizens")
    for row in citizens[:BAD_DATES]:
        row["enrolled_on"] = "05/01/2013"
    write_rows(out, "citizens", citizens)
    return out, [row["citizen_id"] for row in citizens]


def test_the_report_lists_every_problem_grouped_by_rule(broken) -> None:
    folder, _ = broken

    report, dataset = validation_report(folder)

    assert dataset is None and not report.valid
    assert report.total == BAD_SCORES + BAD_DATES == len(report.problems)
    by_rule = {(g.table, g.column): g for g in report.groups}
    assert set(by_rule) == {("measurements", SCORE), ("citizens", "enrolled_on")}
    scores, dates = by_rule["measurements", SCORE], by_rule["citizens", "enrolled_on"]
    assert (scores.count, dates.count) == (BAD_SCORES, BAD_DATES)
    assert scores.rule == "a value is outside 1-5; write a value from 1 to 5" and len(scores.examples) == 5
    assert dates.rule == "a value is not a date written YYYY-MM-DD"
    # Only the first 50 reach the terminal; the report holds them all.
    assert len(report.error().problems) == 50 and report.error().total == BAD_SCORES + BAD_DATES


@pytest.mark.parametrize("name", ["report.json", "report.html"])
def test_bip_validate_writes_the_report_and_fails(broken, tmp_path: Path, name: str) -> None:
    folder, citizen_ids = broken
    out = tmp_path / name

    result = bip("validate", str(folder), "--report", str(out), home=tmp_path / "home")

    assert result.returncode != 0 and "valid:" not in result.stdout
    assert f"{BAD_SCORES + BAD_DATES} problems" in result.stderr and "... and 32 more" in result.stderr
    text = out.read_text(encoding="utf-8")
    if name.endswith(".json"):
        found = json.loads(text)
        assert found["valid"] is False and found["total_problems"] == len(found["problems"]) == 82
        counts = {(r["file"], r["column"]): r["count"] for r in found["rules"]}
        assert counts == {("measurements.csv", SCORE): BAD_SCORES, ("citizens.csv", "enrolled_on"): BAD_DATES}
        rows = sorted(p["row"] for p in found["problems"] if p["column"] == SCORE)
        assert len(set(rows)) == BAD_SCORES
    else:
        assert text.count("<tr><td>measurements.csv row") == BAD_SCORES
        assert "a value is outside 1-5" in text and '<td class="num">70</td>' in text
    # Citizens' answers and dates are masked as in the terminal; no id is in the report.
    assert "7 is outside" not in text and "05/01/2013" not in text
    assert not any(citizen in text for citizen in citizen_ids)


def test_a_valid_folder_gets_a_valid_report_with_its_warnings(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    write_dataset(simulate(20, seed=4, truth_draws=0).dataset, folder)
    path = folder / "caseworkers.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())

    report, dataset = validation_report(folder)
    written = json.loads(write_report(report, tmp_path / "ok.json").read_text())

    assert dataset is not None and report.valid and written["valid"] is True and written["rules"] == []
    assert any("byte-order mark" in w for w in written["warnings"])


def test_a_report_of_another_format_is_refused_before_any_work(tmp_path: Path) -> None:
    result = bip("validate", str(tmp_path / "nowhere"), "--report", str(tmp_path / "r.txt"), home=tmp_path / "h")

    assert result.returncode != 0 and "name a .json or .html file" in result.stderr


def test_rule_of_drops_the_value_a_message_starts_with() -> None:
    assert rule_of("the value is outside 1-5") == "a value is outside 1-5"
    assert rule_of("'x y' is not one of F, M") == "a value is not one of F, M"
    assert rule_of("2031-01-01 is outside the years 1990-2030") == "a value is outside the years 1990-2030"
    assert rule_of("the required column is missing") == "the required column is missing"
