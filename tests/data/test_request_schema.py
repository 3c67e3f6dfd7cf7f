"""The API's request schema and the data contract declare the same data: every bound, code and
required field of the request equals the contract's, and a citizen the contract accepts (and the
store holds) becomes a request that validates, so that their page cannot fail on it.
"""

from __future__ import annotations

import csv
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from features.build import build_features
from features.catalogue import CITIZEN_COLUMNS, SCORE_COLUMNS
from features.contract import read_dataset
from features.contract_declaration import CODES, DATES, MAX_ID_LENGTH, OPTIONAL, RANGES
from features.dataset import COLUMNS
from serving.histories import history_dataset, history_from_dataset
from serving.schemas import (
    EXAMPLE_HISTORY,
    CaseworkerAnswers,
    Citizen,
    CitizenAnswers,
    Intervention,
    Measurement,
    PredictRequest,
)
from serving.schemas import Caseworker as CaseworkerSchema

# Where each contract column sits in the request: (model, field). Outcomes are never sent, and ids
# that only link tables (citizen_id outside citizens) are implied by the request's nesting.
FIELDS: dict[tuple[str, str], tuple[type[BaseModel], str]] = {
    **{("citizens", c): (Citizen, c) for c in COLUMNS["citizens"]},
    ("caseworkers", "caseworker_id"): (CaseworkerSchema, "caseworker_id"),
    ("caseworkers", "job_orientation"): (CaseworkerSchema, "job_orientation"),
    ("measurements", "measurement_id"): (Measurement, "measurement_id"),
    ("measurements", "caseworker_id"): (Measurement, "caseworker_id"),
    ("measurements", "measured_on"): (Measurement, "measured_on"),
    **{("measurements", c): (CitizenAnswers, c.removeprefix("cit_")) for c in CITIZEN_COLUMNS},
    **{("measurements", c): (CaseworkerAnswers, c.removeprefix("cw_")) for c in SCORE_COLUMNS if c.startswith("cw_")},
    ("interventions", "intervention"): (Intervention, "intervention"),
    ("interventions", "started_on"): (Intervention, "started_on"),
    ("interventions", "ended_on"): (Intervention, "ended_on"),
}


def field_schema(model: type[BaseModel], name: str) -> dict[str, Any]:
    """A field's JSON schema without the `null` branch of an optional field."""
    schema = model.model_json_schema()["properties"][name]
    branches = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    assert len(branches) == 1, schema
    return branches[0]


@pytest.mark.parametrize("column", sorted(RANGES), ids="/".join)
def test_request_bounds_are_the_contract_s(column: tuple[str, str]) -> None:
    model, name = FIELDS[column]
    low, high = RANGES[column]

    schema = field_schema(model, name)

    assert schema.get("minimum") == low
    assert schema.get("maximum") == high  # None: no upper bound in either


@pytest.mark.parametrize("column", sorted(c for c in CODES if c in FIELDS), ids="/".join)
def test_request_codes_are_the_contract_s(column: tuple[str, str]) -> None:
    model, name = FIELDS[column]

    assert tuple(field_schema(model, name)["enum"]) == CODES[column]


def test_every_contract_column_of_a_request_is_mapped() -> None:
    sent = {(t, c) for t in ("citizens", "caseworkers", "measurements", "interventions") for c in COLUMNS[t]}
    implied = {(t, "citizen_id") for t in ("measurements", "interventions")}
    unused = {("caseworkers", "jobcentre")}  # the caseworker's job centre is no feature: never asked for
    assert sent - implied - unused == set(FIELDS)


@pytest.mark.parametrize("column", sorted(FIELDS), ids="/".join)
def test_request_requires_what_the_contract_requires(column: tuple[str, str]) -> None:
    model, name = FIELDS[column]
    field = model.model_fields[name]
    # measurement_id may be left out of a request (rounds get `round-<n>`): a request convenience,
    # the one field the request may omit that the contract requires.
    may_be_empty = column in OPTIONAL or column == ("measurements", "measurement_id")

    assert (not field.is_required()) == may_be_empty


@pytest.mark.parametrize("model, name", [(Citizen, "enrolled_on"), (Measurement, "measured_on")])
def test_request_dates_span_the_contract_s(model: type[BaseModel], name: str) -> None:
    field = model.model_fields[name]
    limits = {type(m).__name__: m for m in field.metadata}

    assert (limits["Ge"].ge, limits["Le"].le) == DATES


def test_cpr_like_citizen_id_is_refused_by_the_request_without_echoing_it() -> None:
    body = json.loads(json.dumps(EXAMPLE_HISTORY))
    body["citizen"]["citizen_id"] = "010170-1234"

    with pytest.raises(ValidationError) as caught:
        PredictRequest.model_validate_json(json.dumps(body))

    assert [e["loc"] for e in caught.value.errors()] == [("citizen", "citizen_id")]
    assert "CPR" in str(caught.value) and "010170-1234" not in str(caught.value)


def with_value(path: tuple, value: object) -> dict[str, Any]:
    """EXAMPLE_HISTORY with the value at `path` (keys and list positions) replaced."""
    body = json.loads(json.dumps(EXAMPLE_HISTORY))
    *parents, last = path
    target = body
    for key in parents:
        target = target[key]
    target[last] = value
    return body


ID_PATHS = [
    ("citizen", "citizen_id"),
    ("measurements", 0, "measurement_id"),
    ("measurements", 0, "caseworker_id"),
    ("caseworkers", 0, "caseworker_id"),
]


@pytest.mark.parametrize("path", ID_PATHS, ids=lambda p: ".".join(map(str, p)))
@pytest.mark.parametrize("bad", ["C\x00X", "C1\nC2", "x" * (MAX_ID_LENGTH + 1)], ids=["nul", "newline", "long"])
def test_an_id_is_plain_text_of_at_most_the_contract_s_length(path: tuple, bad: str) -> None:
    """As in an export (features.contract_declaration.ID_TEXT): a NUL could not be stored in PostgreSQL's
    audit trail, where it would fail the other requests committed with it."""
    with pytest.raises(ValidationError) as caught:
        PredictRequest.model_validate_json(json.dumps(with_value(path, bad)))

    assert [e["loc"] for e in caught.value.errors()] == [path]
    assert bad not in str(caught.value)
    longest = "x" * MAX_ID_LENGTH if path[-1] != "measurement_id" else "m" * MAX_ID_LENGTH
    assert PredictRequest.model_validate_json(json.dumps(with_value(path, longest)))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("citizen", "benefit_share_5y"), "0.8"),
        (("caseworkers", 0, "job_orientation"), "3.6"),
        (("feature_contributions",), "yes"),
        (("feature_contributions",), 1),
        (("feature_contributions",), "true"),
    ],
)
def test_numbers_and_flags_are_not_coerced_from_other_json_types(path: tuple, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        PredictRequest.model_validate_json(json.dumps(with_value(path, value)))

    assert [e["loc"] for e in caught.value.errors()] == [path]


def test_a_whole_number_is_a_number() -> None:
    request = PredictRequest.model_validate_json(json.dumps(with_value(("citizen", "benefit_share_5y"), 1)))

    assert request.citizen.benefit_share_5y == 1.0


# --- a stored citizen the contract accepts is a valid request ---------------------------------

LONG_ID = "citizen-" + "x" * 90  # longer than the 64 characters the API used to allow


def write_table(folder: Path, table: str, rows: list[dict[str, Any]]) -> None:
    with (folder / f"{table}.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS[table]), lineterminator="\n", restval="")
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def stored(tmp_path: Path):
    """A contract dataset, read as `bip ingest` reads it, whose one citizen broke the old API:
    31 children, two rounds on one day, a long id and dates before 1990."""
    folder = tmp_path / "dataset"
    folder.mkdir()
    register = {"jobcentre": "Aarhus", "birth_year": 1950, "gender": "M", "origin": "danish"}
    register |= {"civil_status": "couple", "children": 31, "education": "basic", "benefit_share_5y": 0.9}
    write_table(folder, "citizens", [{"citizen_id": LONG_ID, **register, "enrolled_on": "1988-02-01"}])
    write_table(folder, "caseworkers", [{"caseworker_id": "w1", "jobcentre": "Aarhus", "job_orientation": 4}])
    rounds = [("m1", "1988-03-01", 2), ("m2", "1988-06-01", 3), ("m3", "1988-06-01", 4)]
    write_table(
        folder,
        "measurements",
        [
            {"measurement_id": m, "citizen_id": LONG_ID, "caseworker_id": "w1", "measured_on": day}
            | dict.fromkeys(SCORE_COLUMNS, score)
            for m, day, score in rounds
        ],
    )
    episode = {"citizen_id": LONG_ID, "intervention": "mentor", "started_on": "1988-04-01"}
    write_table(folder, "interventions", [episode])
    write_table(folder, "outcomes", [{"citizen_id": LONG_ID, "event": "none", "followed_until": "1990-01-01"}])
    dataset, _ = read_dataset(folder)  # the contract accepts it
    return dataset


def test_a_stored_citizen_the_contract_accepts_is_a_valid_request(stored) -> None:
    history = history_from_dataset(stored, LONG_ID)

    request = PredictRequest.model_validate_json(history.model_dump_json())

    assert request.citizen.children == 31
    assert [m.measured_on for m in request.measurements][-2:] == [date(1988, 6, 1)] * 2


def test_two_rounds_on_one_day_are_ordered_by_measurement_id(stored) -> None:
    history = history_from_dataset(stored, LONG_ID)

    rows = build_features(history_dataset([history]))

    assert rows["measurement_id"].tolist() == ["m1", "m2", "m3"]


def test_the_request_refuses_just_outside_the_contract_s_bounds() -> None:
    body = json.loads(json.dumps(EXAMPLE_HISTORY))
    low, high = RANGES["citizens", "birth_year"]
    for birth_year, valid in [(low, True), (high, True), (low - 1, False), (high + 1, False)]:
        body["citizen"]["birth_year"] = birth_year
        try:
            PredictRequest.model_validate_json(json.dumps(body))
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted == valid, birth_year
    first = DATES[0]
    body["citizen"]["birth_year"] = 1970
    body["citizen"]["enrolled_on"] = (first - timedelta(days=1)).isoformat()
    with pytest.raises(ValidationError):
        PredictRequest.model_validate(body)
