"""Store fixtures: a fresh, empty store per test on SQLite and, when configured, on PostgreSQL.

Set BIP_TEST_POSTGRES_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test) to run the
PostgreSQL cases; each test then gets its own PostgreSQL schema, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pandas as pd
import pytest
from sqlalchemy import create_engine, make_url, text

from features.catalogue import CASEWORKER_COLUMNS, CITIZEN_COLUMNS
from features.dataset import Dataset, canonical

POSTGRES_URL = os.environ.get("BIP_TEST_POSTGRES_URL")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(not POSTGRES_URL, reason="set BIP_TEST_POSTGRES_URL to test on PostgreSQL"),
        ),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """The URL of an empty store that only this test uses."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    schema = f"test_store_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def measurement(
    measurement_id: str,
    citizen_id: str,
    caseworker_id: str,
    measured_on: str,
    citizen: int | None,
    caseworker: int | None,
) -> dict[str, object]:
    """One measurement row: every citizen answer `citizen`, every caseworker answer `caseworker` (None: unanswered)."""
    return {
        "measurement_id": measurement_id,
        "citizen_id": citizen_id,
        "caseworker_id": caseworker_id,
        "measured_on": measured_on,
        **dict.fromkeys(CITIZEN_COLUMNS, citizen),
        **dict.fromkeys(CASEWORKER_COLUMNS, caseworker),
    }


def small_dataset() -> Dataset:
    """Three citizens (ids whose byte order differs from case-insensitive order), two caseworkers.

    It covers every kind of empty cell: an unanswered round, a running intervention, an outcome
    without event, a caseworker without job orientation.
    """
    citizens = pd.DataFrame(
        {
            "citizen_id": ["c10", "C2", "c2"],
            "jobcentre": ["Aarhus", "Odense", "Aarhus"],
            "birth_year": [1970, 1981, 1962],
            "gender": ["F", "M", "F"],
            "origin": ["danish", "non_western", "western"],
            "civil_status": ["single", "couple", "single"],
            "children": [0, 2, 1],
            "education": ["basic", "vocational", "higher"],
            "benefit_share_5y": [0.8, 0.35, 1.0],
            "enrolled_on": ["2013-03-01", "2013-05-15", "2014-01-06"],
        }
    )
    caseworkers = pd.DataFrame(
        {"caseworker_id": ["cw-1", "cw-2"], "jobcentre": ["Aarhus", "Odense"], "job_orientation": [3.5, None]}
    )
    measurements = pd.DataFrame(
        [
            measurement("m1", "c10", "cw-1", "2013-03-10", citizen=2, caseworker=3),
            measurement("m2", "c10", "cw-1", "2013-06-12", citizen=None, caseworker=4),
            measurement("m3", "C2", "cw-2", "2013-05-20", citizen=5, caseworker=None),
            measurement("m4", "c2", "cw-1", "2014-01-10", citizen=1, caseworker=1),
        ]
    )
    interventions = pd.DataFrame(
        {
            "citizen_id": ["c10", "c10", "C2", "c2"],
            "intervention": ["mentor", "wage_subsidy", "diet_exercise", "mentor"],
            "started_on": ["2013-04-01", "2013-08-01", "2013-06-01", "2014-02-01"],
            "ended_on": ["2013-07-01", None, "2013-09-30", None],
        }
    )
    outcomes = pd.DataFrame(
        {
            "citizen_id": ["c10", "C2", "c2"],
            "event": ["job", "none", "education"],
            "event_on": ["2014-02-01", None, "2014-09-01"],
            "followed_until": ["2016-12-31", "2016-12-31", "2016-12-31"],
        }
    )
    frames = {
        "citizens": citizens,
        "caseworkers": caseworkers,
        "measurements": measurements,
        "interventions": interventions,
        "outcomes": outcomes,
    }
    return Dataset(**{name: canonical(name, frame) for name, frame in frames.items()})


@pytest.fixture
def dataset() -> Dataset:
    return small_dataset()
