"""Every rule of the data contract, one bad input per test, on a small hand-made dataset.

Each test starts from `folder`, a valid 3-citizen dataset written as CSV, breaks one thing and
checks that the error names the right table, row (1-based data row) and column.

(About 800 lines: one short test per rule of the contract, 59 of them, on one shared fixture; the file
reads as the contract's rule list.)
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
import pytest

from bip.errors import UserError
from features.catalogue import CITIZEN_COLUMNS, SCORE_COLUMNS
from features.contract import (
    ContractError,
    Problem,
    contract_schema,
    read_dataset,
    validate_dataset,
    write_dataset,
)
from features.dataset import COLUMNS, TABLES, Dataset


def _scores(citizen: str, caseworker: str) -> dict[str, str]:
    return {c: (citizen if c in CITIZEN_COLUMNS else caseworker) for c in SCORE_COLUMNS}


VALID: dict[str, list[dict[str, str]]] = {
    "citizens": [
        {
            "citizen_id": "c1",
            "jobcentre": "Aarhus",
            "birth_year": "1970",
            "gender": "F",
            "origin": "danish",
            "civil_status": "single",
            "children": "2",
            "education": "basic",
            "benefit_share_5y": "0.8",
            "enrolled_on": "2013-03-01",
        },
        {
            "citizen_id": "c2",
            "jobcentre": "Odense",
            "birth_year": "1965",
            "gender": "M",
            "origin": "western",
            "civil_status": "couple",
            "children": "0",
            "education": "higher",
            "benefit_share_5y": "1",
            "enrolled_on": "2013-04-01",
        },
        {
            "citizen_id": "c3",
            "jobcentre": "København",
            "birth_year": "1980",
            "gender": "F",
            "origin": "non_western",
            "civil_status": "single",
            "children": "1",
            "education": "vocational",
            "benefit_share_5y": "0.25",
            "enrolled_on": "2013-05-15",
        },
    ],
    "caseworkers": [
        {"caseworker_id": "w1", "jobcentre": "Aarhus", "job_orientation": "3.5"},
        {"caseworker_id": "w2", "jobcentre": "Odense", "job_orientation": ""},
    ],
    "measurements": [
        {"measurement_id": "m1", "citizen_id": "c1", "caseworker_id": "w1", "measured_on": "2013-03-15"}
        | _scores("3", "4"),
        {"measurement_id": "m2", "citizen_id": "c2", "caseworker_id": "w2", "measured_on": "2013-04-20"}
        | _scores("", "2"),
        {"measurement_id": "m3", "citizen_id": "c3", "caseworker_id": "w1", "measured_on": "2013-06-01"}
        | _scores("5", "1"),
        {"measurement_id": "m4", "citizen_id": "c1", "caseworker_id": "w1", "measured_on": "2013-06-15"}
        | _scores("4", ""),
    ],
    "interventions": [
        {"citizen_id": "c1", "intervention": "wage_subsidy", "started_on": "2013-04-01", "ended_on": "2013-06-30"},
        {"citizen_id": "c2", "intervention": "mentor", "started_on": "2013-05-01", "ended_on": ""},
        {"citizen_id": "c3", "intervention": "social_mentor", "started_on": "2013-06-01", "ended_on": "2013-09-01"},
    ],
    "outcomes": [
        {"citizen_id": "c1", "event": "job", "event_on": "2014-01-10", "followed_until": "2016-12-31"},
        {"citizen_id": "c2", "event": "none", "event_on": "", "followed_until": "2016-12-31"},
        {"citizen_id": "c3", "event": "education", "event_on": "2015-02-01", "followed_until": "2016-12-31"},
    ],
}


def write_rows(folder: Path, table: str, rows: list[dict[str, str]], header: list[str] | None = None) -> None:
    with (folder / f"{table}.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header or list(rows[0]), lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_rows(folder: Path, table: str) -> list[dict[str, str]]:
    with (folder / f"{table}.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def set_cell(folder: Path, table: str, row: int, column: str, value: str) -> None:
    """Overwrite one cell; row is the 1-based data row, as in the contract's messages."""
    rows = read_rows(folder, table)
    rows[row - 1][column] = value
    write_rows(folder, table, rows)


def add_row(folder: Path, table: str, row: dict[str, str]) -> None:
    write_rows(folder, table, [*read_rows(folder, table), row])


def problems_of(folder: Path, **options: int) -> list[Problem]:
    with pytest.raises(ContractError) as caught:
        read_dataset(folder, **options)
    return caught.value.problems


def only_problem(folder: Path) -> Problem:
    problems = problems_of(folder)
    assert len(problems) == 1, problems
    return problems[0]


def where(problem: Problem) -> tuple[str, int | None, str | None]:
    return problem.table, problem.row, problem.column


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    out = tmp_path / "dataset"
    out.mkdir()
    for table, rows in VALID.items():
        write_rows(out, table, rows)
    return out


# --- valid input -----------------------------------------------------------------------------


def test_valid_dataset_reads_in_canonical_dtypes(folder: Path) -> None:
    dataset, warnings = read_dataset(folder)

    assert warnings == []
    assert [len(dataset.table(t)) for t in TABLES] == [3, 2, 4, 3, 3]
    for table in TABLES:
        frame = dataset.table(table)
        assert list(frame.columns) == list(COLUMNS[table])
        contract_schema(table).validate(frame)  # pandera's own run agrees: dtypes and rules
    assert dataset.measurements["cit_concentration"].tolist() == [3, pd.NA, 5, 4]
    assert pd.isna(dataset.caseworkers["job_orientation"].iloc[1])
    assert dataset.outcomes["event_on"].iloc[0] == pd.Timestamp("2014-01-10")
    assert validate_dataset(dataset) == []


def test_bom_is_accepted(folder: Path) -> None:
    path = folder / "citizens.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())

    dataset, _ = read_dataset(folder)

    assert dataset.citizens["citizen_id"].tolist() == ["c1", "c2", "c3"]


def test_extra_column_is_a_warning_only(folder: Path) -> None:
    rows = [row | {"notes": "x"} for row in read_rows(folder, "caseworkers")]
    write_rows(folder, "caseworkers", rows)

    dataset, warnings = read_dataset(folder)

    assert len(warnings) == 1 and "caseworkers.csv" in warnings[0] and "'notes'" in warnings[0]
    assert "notes" not in dataset.caseworkers.columns


def test_header_only_tables_are_a_valid_empty_dataset(folder: Path) -> None:
    for table in TABLES:
        (folder / f"{table}.csv").write_text(",".join(COLUMNS[table]) + "\n", encoding="utf-8")

    dataset, _ = read_dataset(folder)

    for table in TABLES:
        assert dataset.table(table).empty
        assert list(dataset.table(table).columns) == list(COLUMNS[table])
        contract_schema(table).validate(dataset.table(table))


def test_formula_string_is_kept_as_plain_text(folder: Path) -> None:
    formula = '=HYPERLINK("http://example.org","click")'
    set_cell(folder, "citizens", 1, "jobcentre", formula)

    dataset, _ = read_dataset(folder)

    assert dataset.citizens["jobcentre"].iloc[0] == formula


def test_formula_string_in_a_code_column_is_an_unknown_code(folder: Path) -> None:
    set_cell(folder, "citizens", 2, "gender", "=1+1")

    problem = only_problem(folder)

    assert where(problem) == ("citizens", 2, "gender")
    assert "the value is not one of F, M" in problem.message and "=1+1" not in problem.message


def test_na_text_is_text_not_missing(folder: Path) -> None:
    set_cell(folder, "citizens", 1, "jobcentre", "NA")

    dataset, _ = read_dataset(folder)

    assert dataset.citizens["jobcentre"].iloc[0] == "NA"


def test_trailing_blank_lines_are_ignored(folder: Path) -> None:
    path = folder / "outcomes.csv"
    path.write_text(path.read_text(encoding="utf-8") + "\n\n", encoding="utf-8")

    dataset, _ = read_dataset(folder)

    assert len(dataset.outcomes) == 3


def test_parquet_dataset_reads_the_same_as_csv(folder: Path, tmp_path: Path) -> None:
    typed, text = tmp_path / "typed", tmp_path / "text"
    from_csv, _ = read_dataset(folder)
    write_dataset(from_csv, typed, fmt="parquet")
    text.mkdir()
    for table in TABLES:  # a Parquet export that stores every column as text is read like CSV
        pd.DataFrame(read_rows(folder, table), dtype="str").to_parquet(text / f"{table}.parquet")

    for other in (typed, text):
        from_parquet, _ = read_dataset(other)
        for table in TABLES:
            pd.testing.assert_frame_equal(from_parquet.table(table), from_csv.table(table))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_written_dataset_reads_back_identical(folder: Path, tmp_path: Path, fmt: str) -> None:
    set_cell(folder, "citizens", 1, "jobcentre", 'Aarhus, "Nord"\n=SUM(A1)')
    set_cell(folder, "citizens", 3, "benefit_share_5y", "0.1234567890123")
    original, _ = read_dataset(folder)

    write_dataset(original, tmp_path / "out", fmt=fmt)
    again, _ = read_dataset(tmp_path / "out")

    for table in TABLES:
        pd.testing.assert_frame_equal(again.table(table), original.table(table))


def test_written_csv_has_plain_dates_ints_and_empty_cells(folder: Path, tmp_path: Path) -> None:
    write_dataset(read_dataset(folder)[0], tmp_path / "out")

    rows = read_rows(tmp_path / "out", "measurements")

    assert rows[1]["measured_on"] == "2013-04-20"
    assert rows[1]["cw_concentration"] == "2"
    assert rows[1]["cit_concentration"] == ""


def test_write_refuses_a_folder_holding_the_other_format(folder: Path, tmp_path: Path) -> None:
    dataset, _ = read_dataset(folder)
    write_dataset(dataset, tmp_path / "out", fmt="parquet")

    with pytest.raises(UserError, match="citizens.parquet"):
        write_dataset(dataset, tmp_path / "out", fmt="csv")


def test_validate_dataset_checks_an_in_memory_dataset(folder: Path) -> None:
    dataset, _ = read_dataset(folder)
    measurements = dataset.measurements.copy()
    measurements.loc[1, "cw_cooperation"] = 9
    # The simulator may hand over plain numpy and object columns: they are checked just the same.
    citizens = dataset.citizens.astype({"birth_year": "int64", "citizen_id": object})

    problems = validate_dataset(Dataset(**{**dataset.tables(), "measurements": measurements, "citizens": citizens}))

    assert problems == [
        Problem("measurements", 2, "cw_cooperation", "the value is outside 1-5; write a value from 1 to 5")
    ]


def test_runner_reports_the_cells_pandera_reports(folder: Path) -> None:
    dataset, _ = read_dataset(folder)
    citizens = dataset.citizens.copy()
    citizens.loc[0, "birth_year"] = 1900
    citizens.loc[1, "gender"] = "X"
    citizens.loc[2, "citizen_id"] = "c1"
    citizens.loc[2, "children"] = -1
    citizens.loc[1, "education"] = None
    frame = citizens.set_axis(pd.RangeIndex(1, 4))

    with pytest.raises(pa.errors.SchemaErrors) as caught:
        contract_schema("citizens").validate(frame, lazy=True)
    ours = validate_dataset(Dataset(**{**dataset.tables(), "citizens": citizens}))

    cases = caught.value.failure_cases
    assert {(int(i), c) for i, c in zip(cases["index"], cases["column"], strict=True)} == {
        (p.row, p.column) for p in ours if p.table == "citizens"
    }


# --- bad cells ---------------------------------------------------------------------------------


def test_score_out_of_range(folder: Path) -> None:
    set_cell(folder, "measurements", 3, "cit_concentration", "7")

    problem = only_problem(folder)

    assert where(problem) == ("measurements", 3, "cit_concentration")
    assert problem.message == "the value is outside 1-5; write a value from 1 to 5"  # an answer: named, not shown


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("w7", "the value is not a number (write decimals with a point, e.g. 0.5)"),  # e.g. shifted columns
        ("9", "the value is outside 1-5; write a value from 1 to 5"),
    ],
)
def test_a_caseworkers_job_orientation_is_named_not_shown(folder: Path, value: str, message: str) -> None:
    set_cell(folder, "caseworkers", 1, "job_orientation", value)

    problem = only_problem(folder)

    assert where(problem) == ("caseworkers", 1, "job_orientation")
    assert problem.message == message


@pytest.mark.parametrize("value", ["m" * 129, "m\x07x", "m\tx"], ids=["long", "bell", "tab"])
def test_an_id_is_plain_text_of_at_most_128_characters(folder: Path, value: str) -> None:
    set_cell(folder, "measurements", 2, "measurement_id", value)

    problem = only_problem(folder)

    assert where(problem) == ("measurements", 2, "measurement_id")
    assert problem.message.startswith("the value is longer than 128 characters or holds a control character")


def test_score_not_whole(folder: Path) -> None:
    set_cell(folder, "measurements", 2, "cw_job_search", "3.5")

    problem = only_problem(folder)

    assert where(problem) == ("measurements", 2, "cw_job_search")
    assert problem.message == "the value is not a whole number (write digits only, e.g. 3)"


def test_score_written_with_decimals_is_rejected_under_strict(folder: Path) -> None:
    """Read with a warning by default (tests/data/test_normalisation.py); a problem with `strict`."""
    set_cell(folder, "measurements", 1, "cw_job_search", "3.0")

    (problem,) = problems_of(folder, strict=True)

    assert where(problem) == ("measurements", 1, "cw_job_search")
    assert problem.message == "the value is a whole number written with decimals (e.g. 3.0); write digits only, e.g. 3"


def test_na_text_in_a_score_is_rejected_with_a_hint(folder: Path) -> None:
    set_cell(folder, "measurements", 4, "cit_self_efficacy", "NA")

    problem = only_problem(folder)

    assert where(problem) == ("measurements", 4, "cit_self_efficacy")
    # 'NA' is nobody's answer, so it is shown, with the hint.
    assert problem.message.startswith("'NA' is not a whole number")
    assert problem.message.endswith("; leave the cell empty when the value is missing")


def test_unknown_citizen_in_measurements(folder: Path) -> None:
    set_cell(folder, "measurements", 2, "citizen_id", "c99")

    problem = only_problem(folder)

    assert where(problem) == ("measurements", 2, "citizen_id")
    assert problem.message == "the value is not a citizen_id in citizens; add it to citizens or correct it"


def test_unknown_caseworker_in_measurements(folder: Path) -> None:
    set_cell(folder, "measurements", 4, "caseworker_id", "w9")

    problem = only_problem(folder)

    assert where(problem) == ("measurements", 4, "caseworker_id")
    assert "the value is not a caseworker_id in caseworkers" in problem.message
    assert "w9" not in problem.message  # a caseworker's id, like a citizen's, stays out of messages


def test_duplicate_measurement_id(folder: Path) -> None:
    set_cell(folder, "measurements", 3, "measurement_id", "m1")

    problem = only_problem(folder)

    assert where(problem) == ("measurements", 3, "measurement_id")
    assert "the value is already on row 1" in problem.message
    assert "m1" not in problem.message


def test_duplicate_citizen(folder: Path) -> None:
    add_row(folder, "citizens", VALID["citizens"][1])

    problem = only_problem(folder)

    assert where(problem) == ("citizens", 4, "citizen_id")
    assert problem.message == "the value is already on row 2; citizen_id must be unique: give each row its own"


def test_duplicate_intervention_episode(folder: Path) -> None:
    add_row(folder, "interventions", VALID["interventions"][0] | {"ended_on": "2013-05-01"})

    problem = only_problem(folder)

    assert where(problem) == ("interventions", 4, "citizen_id, intervention, started_on")
    assert "repeats row 1" in problem.message


def test_second_outcome_for_a_citizen(folder: Path) -> None:
    add_row(folder, "outcomes", VALID["outcomes"][1])

    problem = only_problem(folder)

    assert where(problem) == ("outcomes", 4, "citizen_id")
    assert problem.message == "the value is already on row 2; citizen_id must be unique: give each row its own"


def test_required_cell_empty(folder: Path) -> None:
    set_cell(folder, "measurements", 1, "measured_on", "")

    problem = only_problem(folder)

    assert where(problem) == ("measurements", 1, "measured_on")
    assert problem.message == "the cell is empty but required; fill it in"


def test_impossible_date(folder: Path) -> None:
    set_cell(folder, "citizens", 2, "enrolled_on", "2013-02-30")

    problem = only_problem(folder)

    assert where(problem) == ("citizens", 2, "enrolled_on")
    assert problem.message == "the value is not a real date"


@pytest.mark.parametrize("text", ["2013/01/05", "05-01-2013", "2013-1-5", "2013-01-05 00:00"])
def test_wrong_date_format(folder: Path, text: str) -> None:
    set_cell(folder, "interventions", 2, "started_on", text)

    problem = only_problem(folder)

    assert where(problem) == ("interventions", 2, "started_on")
    assert problem.message == "the value is not a date written YYYY-MM-DD"


def test_ended_on_before_started_on(folder: Path) -> None:
    set_cell(folder, "interventions", 3, "ended_on", "2013-05-31")

    problem = only_problem(folder)

    assert where(problem) == ("interventions", 3, "ended_on")
    assert problem.message == "ended_on is before the row's started_on; correct one of the two dates"


def test_measured_on_before_enrolled_on(folder: Path) -> None:
    set_cell(folder, "measurements", 3, "measured_on", "2013-05-14")

    problem = only_problem(folder)

    assert where(problem) == ("measurements", 3, "measured_on")
    assert problem.message == "measured_on is before the citizen's enrolled_on; correct one of the two dates"


def test_event_on_set_with_event_none(folder: Path) -> None:
    set_cell(folder, "outcomes", 2, "event_on", "2014-02-02")

    problem = only_problem(folder)

    assert where(problem) == ("outcomes", 2, "event_on")
    assert problem.message == "event_on is set but event is none; leave it empty or set the event"


def test_event_on_empty_with_event_job(folder: Path) -> None:
    set_cell(folder, "outcomes", 1, "event_on", "")

    problem = only_problem(folder)

    assert where(problem) == ("outcomes", 1, "event_on")
    assert "event_on is empty but event is job" in problem.message


def test_followed_until_before_event_on(folder: Path) -> None:
    set_cell(folder, "outcomes", 3, "followed_until", "2015-01-31")

    problem = only_problem(folder)

    assert where(problem) == ("outcomes", 3, "followed_until")
    assert problem.message == "followed_until is before the row's event_on; correct one of the two dates"


def test_followed_until_before_enrolled_on(folder: Path) -> None:
    set_cell(folder, "outcomes", 2, "followed_until", "2013-03-31")

    problem = only_problem(folder)

    assert where(problem) == ("outcomes", 2, "followed_until")
    assert problem.message == "followed_until is before the citizen's enrolled_on; correct one of the two dates"


def test_unknown_intervention_code(folder: Path) -> None:
    set_cell(folder, "interventions", 1, "intervention", "yoga")

    problem = only_problem(folder)

    assert where(problem) == ("interventions", 1, "intervention")
    assert problem.message.startswith("the value is not one of the 21")


def test_unknown_gender(folder: Path) -> None:
    set_cell(folder, "citizens", 3, "gender", "K")

    problem = only_problem(folder)

    assert where(problem) == ("citizens", 3, "gender")
    assert problem.message == "the value is not one of F, M; write one of them exactly as listed"


def test_birth_year_out_of_range(folder: Path) -> None:
    set_cell(folder, "citizens", 1, "birth_year", "1934")

    problem = only_problem(folder)

    assert where(problem) == ("citizens", 1, "birth_year")
    assert problem.message == "the value is outside 1935-2010; write a value from 1935 to 2010"


def test_non_utf8_bytes(folder: Path) -> None:
    path = folder / "citizens.csv"
    path.write_bytes(path.read_bytes().replace(b"Odense", "Århus".encode("latin-1")))

    problem = only_problem(folder)

    assert where(problem) == ("citizens", 2, "jobcentre")
    assert "not UTF-8" in problem.message and "rhus" not in problem.message


def test_line_break_in_a_quoted_value_does_not_shift_row_numbers(folder: Path) -> None:
    set_cell(folder, "citizens", 1, "jobcentre", "Aarhus\nNord")
    set_cell(folder, "citizens", 3, "gender", "X")

    problem = only_problem(folder)

    assert where(problem) == ("citizens", 3, "gender")


def test_windows_line_endings_are_accepted(folder: Path) -> None:
    path = folder / "outcomes.csv"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))

    dataset, _ = read_dataset(folder)

    assert dataset.outcomes["followed_until"].iloc[2] == pd.Timestamp("2016-12-31")


def test_row_with_wrong_field_count_keeps_later_rows_numbered(folder: Path) -> None:
    set_cell(folder, "measurements", 3, "cw_concentration", "9")
    path = folder / "measurements.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] += ",extra"  # data row 2
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    problems = problems_of(folder)

    assert [where(p) for p in problems] == [
        ("measurements", 2, None),
        ("measurements", 3, "cw_concentration"),
    ]
    assert "26 fields, the header 25" in problems[0].message


# --- bad files ----------------------------------------------------------------------------------


def test_missing_column(folder: Path) -> None:
    rows = read_rows(folder, "citizens")
    write_rows(folder, "citizens", rows, header=[c for c in rows[0] if c != "children"])

    problem = only_problem(folder)

    assert where(problem) == ("citizens", None, "children")
    assert "missing" in problem.message


def test_semicolon_separated_file(folder: Path) -> None:
    path = folder / "caseworkers.csv"
    path.write_text(path.read_text(encoding="utf-8").replace(",", ";"), encoding="utf-8")

    problem = only_problem(folder)

    assert where(problem) == ("caseworkers", None, None)
    assert "semicolons" in problem.message


def test_missing_table(folder: Path) -> None:
    (folder / "outcomes.csv").unlink()

    problem = only_problem(folder)

    assert where(problem) == ("outcomes", None, None)
    assert "outcomes.csv or outcomes.parquet" in problem.message


def test_empty_file(folder: Path) -> None:
    (folder / "caseworkers.csv").write_bytes(b"")

    problem = only_problem(folder)

    assert where(problem) == ("caseworkers", None, None)
    assert "caseworkers.csv is empty (0 bytes)" in problem.message


def test_too_large_file_is_refused(folder: Path) -> None:
    limit = (folder / "caseworkers.csv").stat().st_size  # the smallest table, just within the limit
    larger = {t for t in TABLES if (folder / f"{t}.csv").stat().st_size > limit}

    problems = problems_of(folder, max_bytes=limit)

    assert "measurements" in larger
    assert {where(p) for p in problems} == {(t, None, None) for t in larger}
    assert all(f"over the limit of {limit} bytes" in p.message for p in problems)


def test_csv_and_parquet_of_one_table_is_an_error(folder: Path) -> None:
    pd.DataFrame(VALID["caseworkers"]).to_parquet(folder / "caseworkers.parquet")

    problem = only_problem(folder)

    assert where(problem) == ("caseworkers", None, None)
    assert "both caseworkers.csv and caseworkers.parquet" in problem.message


def test_parquet_column_of_the_wrong_type(folder: Path) -> None:
    rows = pd.DataFrame(VALID["caseworkers"]).assign(caseworker_id=[1, 2])
    rows.to_parquet(folder / "caseworkers.parquet")
    (folder / "caseworkers.csv").unlink()

    problems = problems_of(folder)

    assert where(problems[0]) == ("caseworkers", None, "caseworker_id")
    assert "holds int64 values; the contract needs text" in problems[0].message


def test_missing_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        read_dataset(tmp_path / "nowhere")


# --- reporting ----------------------------------------------------------------------------------


def test_several_problems_are_collected_in_one_pass(folder: Path) -> None:
    set_cell(folder, "citizens", 2, "gender", "X")
    set_cell(folder, "measurements", 1, "cw_self_efficacy", "0")
    set_cell(folder, "interventions", 3, "intervention", "yoga")
    set_cell(folder, "outcomes", 3, "event_on", "2015-13-01")
    (folder / "caseworkers.csv").write_bytes(b"")

    problems = problems_of(folder)

    assert [where(p) for p in problems] == [
        ("citizens", 2, "gender"),
        ("caseworkers", None, None),
        ("measurements", 1, "cw_self_efficacy"),
        ("interventions", 3, "intervention"),
        ("outcomes", 3, "event_on"),
    ]


def test_problems_are_capped(folder: Path) -> None:
    rows = [row | dict.fromkeys(SCORE_COLUMNS, "9") for row in read_rows(folder, "measurements")]
    write_rows(folder, "measurements", rows)  # 4 rows x 21 columns = 84 problems

    with pytest.raises(ContractError) as caught:
        read_dataset(folder)
    capped = problems_of(folder, max_problems=10)

    lines = str(caught.value).splitlines()
    assert caught.value.total == 84
    where = "measurements.csv row 1, column cit_job_market_knowledge"
    assert lines[1] == f"{where}: the value is outside 1-5; write a value from 1 to 5"
    assert len(lines) == 1 + 50 + 1 and lines[-1] == "... and 34 more"
    assert len(capped) == 10 and [p.row for p in capped] == [1] * 10


def test_message_names_file_row_and_column(folder: Path) -> None:
    set_cell(folder, "measurements", 2, "cw_concentration", "7")

    with pytest.raises(ContractError) as caught:
        read_dataset(folder)

    assert "measurements.csv row 2, column cw_concentration: the value is outside 1-5" in str(caught.value)


def test_dictionary_encoded_parquet_column_is_read(folder: Path) -> None:
    rows = pd.DataFrame(VALID["outcomes"]).astype({"event": "category"})
    rows.to_parquet(folder / "outcomes.parquet")
    (folder / "outcomes.csv").unlink()

    dataset, _ = read_dataset(folder)

    assert dataset.outcomes["event"].tolist() == ["job", "none", "education"]


def test_parquet_int_column_stored_as_float_must_hold_whole_numbers(folder: Path) -> None:
    rows = pd.DataFrame(VALID["citizens"]).assign(birth_year=[1970.0, 1965.5, 1980.0])
    rows.to_parquet(folder / "citizens.parquet")
    (folder / "citizens.csv").unlink()

    problem = only_problem(folder)

    assert where(problem) == ("citizens", 2, "birth_year")
    assert problem.message.startswith("the value is not a whole number")


# --- citizen ids are never CPR numbers, and messages never show values of people ------------


def rename_citizen(folder: Path, old: str, new: str) -> None:
    """Give a citizen another id in every table that has citizen_id."""
    for table in TABLES:
        if "citizen_id" in COLUMNS[table]:
            rows = [row | {"citizen_id": new} if row["citizen_id"] == old else row for row in read_rows(folder, table)]
            write_rows(folder, table, rows)


@pytest.mark.parametrize("cpr", ["0101701234", "010170-1234", "311299-0000"])
def test_cpr_like_citizen_id_is_refused_in_every_table(folder: Path, cpr: str) -> None:
    rename_citizen(folder, "c1", cpr)

    with pytest.raises(ContractError) as caught:
        read_dataset(folder)

    # c1 has one row in citizens, interventions and outcomes and two in measurements.
    assert [where(p) for p in caught.value.problems] == [
        ("citizens", 1, "citizen_id"),
        ("measurements", 1, "citizen_id"),
        ("measurements", 4, "citizen_id"),
        ("interventions", 1, "citizen_id"),
        ("outcomes", 1, "citizen_id"),
    ]
    assert all(p.message.startswith("the value looks like a CPR number") for p in caught.value.problems)
    assert cpr not in str(caught.value)


@pytest.mark.parametrize("citizen_id", ["010170-123", "01017012345", "0101701234x", "010170 1234", "c0101701234"])
def test_ids_that_are_not_ten_digits_are_accepted(folder: Path, citizen_id: str) -> None:
    rename_citizen(folder, "c1", citizen_id)

    dataset, _ = read_dataset(folder)

    assert citizen_id in dataset.citizens["citizen_id"].tolist()


def test_cpr_like_id_is_refused_in_memory_too(folder: Path) -> None:
    dataset, _ = read_dataset(folder)
    citizens = dataset.citizens.assign(citizen_id=["0101701234", "c2", "c3"])

    problems = validate_dataset(Dataset(**{**dataset.tables(), "citizens": citizens}))

    assert ("citizens", 1, "citizen_id") in [where(p) for p in problems]


def test_messages_never_show_values_of_people(folder: Path) -> None:
    """Every rule on a column that describes a citizen is broken once, with a distinctive value;
    the error names table, row and column of each, and holds none of the values."""
    set_cell(folder, "citizens", 1, "birth_year", "1919")  # a real birth year, outside the range
    set_cell(folder, "citizens", 2, "children", "4.5")
    set_cell(folder, "citizens", 3, "benefit_share_5y", "1.75")
    add_row(folder, "citizens", VALID["citizens"][1] | {"citizen_id": "c2", "enrolled_on": "2013-04-09"})
    set_cell(folder, "measurements", 1, "cit_concentration", "8")
    set_cell(folder, "measurements", 2, "citizen_id", "secret-person-17")
    set_cell(folder, "measurements", 3, "measured_on", "2013-05-11")  # before c3's enrolment
    set_cell(folder, "interventions", 1, "started_on", "2013-13-40")
    set_cell(folder, "outcomes", 2, "event_on", "2014-07-03")  # set while event is none

    with pytest.raises(ContractError) as caught:
        read_dataset(folder)

    message = str(caught.value)
    assert caught.value.total == 9, message
    for value in ["1919", "4.5", "1.75", "2013-04-09", "8", "secret-person-17", "2013-05-11", "2013-13-40"]:
        assert value not in message
    assert "2014-07-03" not in message and "2013-05-15" not in message  # nor the date it was compared with


def test_a_wrong_code_is_not_shown_a_misplaced_column_can_hold_anyones_value(folder: Path) -> None:
    set_cell(folder, "citizens", 2, "education", "phd")

    assert only_problem(folder).message.startswith(
        "the value is not one of basic, upper_secondary, vocational, higher;"
    )


def test_columns_out_of_place_put_no_id_in_a_message(folder: Path) -> None:
    """Headers swapped: citizen ids under `event`, codes under `citizen_id`; the messages name the rows
    and columns, never an id."""
    path = folder / "outcomes.csv"
    lines = path.read_text().split("\n")
    header = lines[0].split(",")
    first, second = header.index("citizen_id"), header.index("event")
    header[first], header[second] = header[second], header[first]
    path.write_text("\n".join([",".join(header), *lines[1:]]))
    with pytest.raises(ContractError) as refused:
        read_dataset(folder)
    ids = set(read_rows(folder, "citizens")[k]["citizen_id"] for k in range(3))
    assert refused.value.problems and not any(i in str(refused.value) for i in ids)


def test_a_nul_in_a_job_centre_is_refused_naming_the_cell(folder: Path) -> None:
    set_cell(folder, "citizens", 2, "jobcentre", "Aar\x00hus")

    problem = only_problem(folder)

    assert where(problem) == ("citizens", 2, "jobcentre")
    assert (
        problem.message == "the value holds a NUL character, which the store cannot hold; export the name as plain text"
    )


def test_parquet_date_outside_the_years_of_yyyy_mm_dd_is_refused(folder: Path) -> None:
    from datetime import date

    rows = pd.DataFrame(VALID["citizens"]).astype({"birth_year": "int64", "children": "int64"})
    rows["benefit_share_5y"] = rows["benefit_share_5y"].astype(float)
    rows["enrolled_on"] = [date(2013, 3, 1), date(999, 12, 31), date(2013, 5, 15)]
    rows.to_parquet(folder / "citizens.parquet")
    (folder / "citizens.csv").unlink()

    problems = problems_of(folder)

    assert (
        "citizens",
        2,
        "enrolled_on",
        "the value is outside the years 1000-9999; check the year, written YYYY-MM-DD",
    ) in problems
