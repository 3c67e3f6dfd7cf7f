"""Feature building: each family on a small history written by hand, labels and IPCW weights,
point-in-time truncation, one code path for a register and for one citizen, and the catalogue."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.build import (
    OUTPUT_COLUMNS,
    build_features,
    label_within_horizon,
    numeric_features,
    sorted_rounds,
    truncate_dataset,
)
from features.catalogue import INTERVENTION_CODES, SCORE_COLUMNS
from features.dataset import COLUMNS, Dataset, canonical
from features.feature_catalogue import (
    FEATURE_COLUMNS,
    ID_COLUMNS,
    LABEL_COLUMNS,
    feature_catalogue,
    feature_catalogue_markdown,
    feature_columns,
)
from features.labels import add_months, horizon_labels, ipcw_weights
from features.tables import tables_of

NAN = np.nan
DOCS = Path(__file__).resolve().parents[2] / "docs" / "feature-catalogue.md"


def table(name: str, rows: list[dict]) -> pd.DataFrame:
    """A contract table in canonical dtypes from a few rows; absent columns are empty."""
    return canonical(name, pd.DataFrame(rows, columns=list(COLUMNS[name])))


def citizen(citizen_id: str, enrolled_on: str, birth_year: int, **other) -> dict:
    row = {"citizen_id": citizen_id, "enrolled_on": enrolled_on, "birth_year": birth_year, "jobcentre": "Aarhus"}
    row.update({"gender": "F", "origin": "danish", "civil_status": "single", "children": 0, "education": "basic"})
    return row | {"benefit_share_5y": 0.5} | other


def hand_dataset() -> Dataset:
    """Citizen A: four rounds 90 days apart, a caseworker change and back, five episodes; citizen B:
    one round with an episode ending that day; citizen C: an episode but no measurements."""
    measurements = [
        # id, citizen, caseworker, date, cit_self_efficacy, cw_self_efficacy, cit_job_search, cw_job_search
        ("a1", "A", "W1", "2014-01-10", 2, 3, None, 2),
        ("a2", "A", "W1", "2014-04-10", 3, None, 4, 2),
        ("a3", "A", "W2", "2014-07-09", 5, 4, None, 3),
        ("a4", "A", "W1", "2014-10-07", 4, 4, 4, 3),
        ("b1", "B", "W3", "2015-01-05", None, None, None, None),
    ]
    keys = ("measurement_id", "citizen_id", "caseworker_id", "measured_on")
    keys += ("cit_self_efficacy", "cw_self_efficacy", "cit_job_search", "cw_job_search")
    episodes = [
        ("A", "wage_subsidy", "2014-01-01", "2014-03-31"),
        ("A", "mentor", "2014-06-01", None),
        ("A", "social_skills", "2014-05-01", "2014-05-31"),
        ("A", "diet_exercise", "2014-07-20", "2014-08-10"),
        ("A", "mentor", "2014-06-15", "2014-06-30"),
        ("B", "rehabilitation", "2014-12-01", "2015-01-05"),
        ("B", "job_search_course", "2014-03-01", "2014-03-10"),
        ("B", "addiction_treatment", "2015-02-01", None),
        ("C", "wage_subsidy", "2014-01-01", None),
    ]
    return Dataset(
        citizens=table(
            "citizens",
            [
                citizen("A", "2014-01-01", 1980, children=2),
                citizen("B", "2014-02-01", 1990, gender="M", origin="non_western", jobcentre="Odense"),
                citizen("C", "2014-01-01", 1970),
            ],
        ),
        caseworkers=table(
            "caseworkers",
            [
                {"caseworker_id": "W1", "jobcentre": "Aarhus", "job_orientation": 4.0},
                {"caseworker_id": "W2", "jobcentre": "Aarhus", "job_orientation": None},
                {"caseworker_id": "W3", "jobcentre": "Odense", "job_orientation": 2.5},
            ],
        ),
        measurements=table("measurements", [dict(zip(keys, m, strict=True)) for m in measurements]),
        interventions=table(
            "interventions",
            [dict(zip(("citizen_id", "intervention", "started_on", "ended_on"), e, strict=True)) for e in episodes],
        ),
        outcomes=table(
            "outcomes",
            [
                {"citizen_id": "A", "event": "job", "event_on": "2014-12-01", "followed_until": "2014-12-01"},
                {"citizen_id": "B", "event": "none", "event_on": None, "followed_until": "2016-01-04"},
                {"citizen_id": "C", "event": "none", "event_on": None, "followed_until": "2016-12-31"},
            ],
        ),
    )


@pytest.fixture(scope="module")
def hand() -> pd.DataFrame:
    return build_features(hand_dataset()).set_index("measurement_id")


def column(frame: pd.DataFrame, name: str) -> list[float]:
    return frame[name].tolist()


def assert_values(frame: pd.DataFrame, expected: dict[str, list[float]]) -> None:
    for name, values in expected.items():
        np.testing.assert_array_equal(frame[name].to_numpy(dtype=float), np.array(values, dtype=float), err_msg=name)


def test_layout_ids_features_labels(hand):
    frame = hand.reset_index()
    assert tuple(frame.columns) == OUTPUT_COLUMNS
    assert feature_columns(frame) == list(FEATURE_COLUMNS)
    assert list(frame["measurement_id"]) == ["a1", "a2", "a3", "a4", "b1"]
    assert frame["measured_on"].dtype == "datetime64[s]"
    assert not set(FEATURE_COLUMNS) & {"event", "event_on", "followed_until", *LABEL_COLUMNS}


def test_levels_and_changes_by_hand(hand):
    a = hand.loc[["a1", "a2", "a3", "a4"]]
    assert_values(
        a,
        {
            "cit_self_efficacy": [2, 3, 5, 4],
            "cit_self_efficacy__change_prev": [NAN, 1, 2, -1],
            "cit_self_efficacy__change_first": [0, 1, 3, 2],
            # least squares over the last three rounds, per 90 days: (2,3)->1, (2,3,5)->1.5, (3,5,4)->0.5
            "cit_self_efficacy__slope_3r": [NAN, 1.0, 1.5, 0.5],
            "cw_self_efficacy": [3, NAN, 4, 4],
            "cw_self_efficacy__change_prev": [NAN, NAN, NAN, 0],
            "cw_self_efficacy__change_first": [0, NAN, 1, 1],
            "cw_self_efficacy__slope_3r": [NAN, NAN, 0.5, 0.0],
            "cit_job_search": [NAN, 4, NAN, 4],
            "cit_job_search__change_prev": [NAN, NAN, NAN, NAN],
            "cit_job_search__change_first": [NAN, NAN, NAN, NAN],
            "cit_job_search__slope_3r": [NAN, NAN, NAN, 0.0],
            "cw_job_search__change_prev": [NAN, 0, 1, 0],
        },
    )


def test_missing_answers_stay_missing(hand):
    b1 = hand.loc["b1"]
    for score in SCORE_COLUMNS:
        assert np.isnan(b1[score]), score
        for change in ("change_prev", "change_first", "slope_3r"):
            assert np.isnan(b1[f"{score}__{change}"]), (score, change)
    # A never answered cit_health_coping: NaN everywhere, never 0.
    assert hand["cit_health_coping"].isna().all()


def test_rounds_caseworker_and_background_by_hand(hand):
    assert_values(
        hand,
        {
            "rounds": [1, 2, 3, 4, 1],
            "days_since_enrolment": [9, 99, 189, 279, 338],
            "days_since_prev": [NAN, 90, 90, 90, NAN],
            "caseworker_job_orientation": [4.0, 4.0, NAN, 4.0, 2.5],
            "caseworker_changed": [0, 0, 1, 1, 0],
            "caseworker_changes": [0, 0, 1, 2, 0],
            "age": [34, 34, 34, 34, 25],
            "children": [2, 2, 2, 2, 0],
            "benefit_share_5y": [0.5] * 5,
        },
    )
    assert list(hand["gender"]) == ["F", "F", "F", "F", "M"]
    assert list(hand["origin"]) == ["danish"] * 4 + ["non_western"]
    assert list(hand["jobcentre"]) == ["Aarhus"] * 4 + ["Odense"]


def test_intervention_history_by_hand(hand):
    assert_values(
        hand,
        {
            # A: wage subsidy Jan 1-Mar 31; mentor from Jun 1 (running) and Jun 15-30 (parallel);
            # B: job search course Mar 1-10 2014, ended 301 days before b1.
            "grp_job__active": [1, 0, 1, 1, 0],
            "grp_job__days_91": [10, 81, 39, 91, 0],
            "grp_job__days_182": [10, 90, 121, 129, 0],
            "grp_job__days_365": [10, 90, 129, 219, 10],
            "grp_job__episodes": [1, 1, 3, 3, 1],
            "int_mentor__episodes": [0, 0, 2, 2, 0],
            "int_wage_subsidy__episodes": [1, 1, 1, 1, 0],
            "days_since_job_intervention": [0, 10, 0, 0, 301],
            # A: social skills May 1-31; B: rehabilitation Dec 1 - Jan 5, ending on the day of b1.
            "grp_social__days_91": [0, 0, 31, 0, 0],
            "grp_social__days_182": [0, 0, 31, 31, 0],
            "grp_social__episodes": [0, 0, 1, 1, 0],
            "grp_upskilling__active": [0, 0, 0, 0, 1],
            "grp_upskilling__days_91": [0, 0, 0, 0, 36],
            # A: diet and exercise Jul 20 - Aug 10 starts after a3; B's addiction treatment after b1.
            "grp_health__days_91": [0, 0, 0, 22, 0],
            "grp_health__active": [0, 0, 0, 0, 0],
            "grp_health__episodes": [0, 0, 0, 1, 0],
            "int_addiction_treatment__episodes": [0] * 5,
            "pattern_3m__job_only": [1, 1, 0, 0, 0],
            "pattern_3m__job_and_other": [0, 0, 1, 1, 0],
            "pattern_3m__other_only": [0, 0, 0, 0, 1],
            "pattern_3m__none": [0] * 5,
        },
    )
    assert list(hand["pattern_3m"]) == ["job_only", "job_only", "job_and_other", "job_and_other", "other_only"]
    assert list(hand["pattern_3m"].cat.categories) == ["job_and_other", "job_only", "other_only", "none"]


def test_labels_by_hand(hand):
    # A's job on 2014-12-01 lies within 12 months of every round; B is followed to 2016-01-04, one
    # day short of b1 + 12 months, so b1 is censored, not a no.
    assert_values(hand, {"label": [1, 1, 1, 1, NAN], "time_to_event_days": [325, 235, 145, 55, 364]})
    assert list(hand["censored"]) == [False] * 4 + [True]
    assert list(hand["event_observed"]) == [True] * 4 + [False]
    assert hand.loc["b1", "ipcw_weight"] == 0.0


def days(*dates: str | None) -> np.ndarray:
    return np.array([NAN if d is None else pd.Timestamp(d).value // 86_400_000_000_000 for d in dates], dtype=float)


def test_label_rules():
    t = days(*["2014-06-01"] * 7).astype(np.int64)
    event = days("2015-03-01", "2015-06-01", "2015-06-02", None, None, "2014-06-01", None)
    followed = days("2015-03-01", "2015-06-01", "2015-06-02", "2015-06-01", "2015-05-31", "2016-12-31", None)
    out = horizon_labels(t, event, followed, 12)
    # inside; on the horizon; a day after; followed to the horizon; a day short; on t; no outcome
    np.testing.assert_array_equal(out["label"], [1, 1, 0, 0, NAN, 0, NAN])
    np.testing.assert_array_equal(out["censored"], [False, False, False, False, True, False, True])
    np.testing.assert_array_equal(out["event_observed"], [True, True, True, False, False, False, False])
    np.testing.assert_array_equal(out["time_to_event_days"], [273, 365, 366, 365, 364, 944, NAN])
    assert not ((out["label"] == 0) & out["censored"]).any()


def test_add_months_matches_pandas_date_offset():
    rng = np.random.default_rng(3)
    day = rng.integers(15_000, 20_000, 2_000)
    day = np.concatenate([day, days("2014-01-31", "2015-08-31", "2016-02-29", "2015-12-31").astype(np.int64)])
    for months in (1, 6, 12, 13, 24):
        expected = (pd.to_datetime(day.astype("datetime64[D]")) + pd.DateOffset(months=months)).values
        np.testing.assert_array_equal(add_months(day, months), expected.astype("datetime64[D]").astype(np.int64))


def test_ipcw_weights_by_hand():
    # rows: event 100; censored 200; followed 400 without event; event 300; censored 50;
    # followed 500 without event; event 200 (tied with a censoring).
    time = np.array([100, 200, 400, 300, 50, 500, 200], dtype=float)
    event = np.array([True, False, False, True, False, False, True])
    label = np.array([1, NAN, 0, 1, NAN, 0, 1])
    horizon = np.full(7, 365.0)
    # Censoring KM: G = 6/7 after 50, 6/7 * 4/5 = 24/35 after 200, 12/35 after 400.
    # Left limits: G(100-) = G(200-) = 6/7; G(300-) = G(365-) = 24/35.
    expected = [7 / 6, 0, 35 / 24, 35 / 24, 0, 35 / 24, 7 / 6]
    np.testing.assert_allclose(ipcw_weights(label, time, event, horizon), expected)


def random_dataset(citizens: int, seed: int) -> Dataset:
    """A random contract dataset with the awkward cases: missing answers, same-day rounds,
    caseworker changes, overlapping and running episodes, events and censoring."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"C{k:04d}" for k in rng.permutation(citizens)])
    enrolled = 16_000 + rng.integers(0, 700, citizens)
    register = pd.DataFrame(
        {
            "citizen_id": ids,
            "jobcentre": rng.choice(["Aarhus", "Odense", "Vejle"], citizens),
            "birth_year": rng.integers(1950, 1985, citizens),
            "gender": rng.choice(["F", "M"], citizens),
            "origin": rng.choice(["danish", "western", "non_western"], citizens),
            "civil_status": rng.choice(["single", "couple"], citizens),
            "children": rng.integers(0, 4, citizens),
            "education": rng.choice(["basic", "vocational", "higher"], citizens),
            "benefit_share_5y": rng.random(citizens).round(2),
            "enrolled_on": enrolled.astype("datetime64[D]"),
        }
    )
    rounds = rng.integers(1, 10, citizens)
    who = np.repeat(np.arange(citizens), rounds)
    gaps = rng.integers(0, 130, len(who))  # 0: two rounds on one day
    first = np.r_[0, np.cumsum(rounds)[:-1]]
    day = enrolled[who] + np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first] - gaps[first], rounds)
    scores = rng.integers(1, 6, (len(who), len(SCORE_COLUMNS))).astype(float)
    scores[rng.random(scores.shape) < 0.15] = NAN
    measurements = pd.DataFrame(
        {
            "measurement_id": [f"M{k:05d}" for k in rng.permutation(len(who))],
            "citizen_id": ids[who],
            "caseworker_id": np.array([f"W{k}" for k in range(12)])[(who + (rng.random(len(who)) < 0.2)) % 12],
            "measured_on": day.astype("datetime64[D]"),
            **{name: pd.array(scores[:, k]).astype("Int64") for k, name in enumerate(SCORE_COLUMNS)},
        }
    )
    episodes = rng.integers(0, 12, citizens)
    owner = np.repeat(np.arange(citizens), episodes)
    start = enrolled[owner] + rng.integers(-200, 900, len(owner))
    end = (start + rng.integers(0, 200, len(owner))).astype(float)
    end[rng.random(len(owner)) < 0.2] = NAN
    interventions = pd.DataFrame(
        {
            "citizen_id": ids[owner],
            "intervention": rng.choice(INTERVENTION_CODES, len(owner)),
            "started_on": start.astype("datetime64[D]"),
            "ended_on": pd.to_datetime(pd.Series(end), unit="D"),
        }
    ).drop_duplicates(["citizen_id", "intervention", "started_on"])
    last = pd.Series(day).groupby(who).max().to_numpy()
    followed = last + rng.integers(-30, 500, citizens)
    has_event = rng.random(citizens) < 0.4
    event_day = np.where(has_event, followed - rng.integers(0, 60, citizens), 0)
    outcomes = pd.DataFrame(
        {
            "citizen_id": ids,
            "event": np.where(has_event, rng.choice(["job", "education"], citizens), "none"),
            "event_on": pd.to_datetime(pd.Series(np.where(has_event, event_day, NAN)), unit="D"),
            "followed_until": followed.astype("datetime64[D]"),
        }
    )
    caseworkers = pd.DataFrame(
        {
            "caseworker_id": [f"W{k}" for k in range(12)],
            "jobcentre": "Aarhus",
            "job_orientation": np.r_[NAN, rng.uniform(1, 5, 11)],
        }
    )
    tables = {"citizens": register, "caseworkers": caseworkers, "measurements": measurements}
    tables |= {"interventions": interventions, "outcomes": outcomes}
    return Dataset(**{name: canonical(name, frame) for name, frame in tables.items()})


@pytest.fixture(scope="module")
def register() -> Dataset:
    return random_dataset(200, seed=11)


@pytest.fixture(scope="module")
def register_features(register) -> pd.DataFrame:
    return build_features(register)


def one_citizen_datasets(dataset: Dataset, citizen_ids: list[str]) -> list[Dataset]:
    """What serving requests hold: for each citizen, that citizen's rows (and every caseworker)."""
    rows = {
        name: dataset.table(name).groupby("citizen_id").indices
        for name in ("citizens", "measurements", "interventions", "outcomes")
    }
    out = []
    for citizen_id in citizen_ids:
        tables = {
            name: dataset.table(name).iloc[at.get(citizen_id, [])].reset_index(drop=True) for name, at in rows.items()
        }
        out.append(Dataset(caseworkers=dataset.caseworkers, **tables))
    return out


def test_one_citizen_gives_the_rows_of_the_register(register, register_features):
    citizen_ids = sorted(register.citizens["citizen_id"])[::3]
    singles = [build_features(one) for one in one_citizen_datasets(register, citizen_ids)]
    # ipcw_weight is estimated over the rows built together: it differs by design.
    together = pd.concat(singles, ignore_index=True).drop(columns="ipcw_weight")
    expected = register_features[register_features["citizen_id"].isin(citizen_ids)].drop(columns="ipcw_weight")
    assert len(expected) > 250
    pd.testing.assert_frame_equal(together, expected.reset_index(drop=True))


def test_chunking_rows_never_changes_a_value(register):
    tables = tables_of(register)
    rounds = sorted_rounds(tables)
    whole, whole_pattern = numeric_features(tables, rounds)
    chunked, chunked_pattern = numeric_features(tables, rounds, chunk_rows=7)
    np.testing.assert_array_equal(chunked, whole)
    np.testing.assert_array_equal(chunked_pattern, whole_pattern)


def test_row_order_and_input_order_do_not_matter(register, register_features):
    shuffled = replace(
        register,
        measurements=register.measurements.sample(frac=1, random_state=1).reset_index(drop=True),
        interventions=register.interventions.sample(frac=1, random_state=2).reset_index(drop=True),
        citizens=register.citizens.sample(frac=1, random_state=3).reset_index(drop=True),
    )
    pd.testing.assert_frame_equal(build_features(shuffled), register_features)


@pytest.mark.parametrize("on", [date(2014, 3, 1), date(2015, 1, 15), date(2015, 9, 30)])
def test_features_are_point_in_time(register, register_features, on):
    truncated = build_features(truncate_dataset(register, on))
    full = register_features[register_features["measured_on"] <= pd.Timestamp(on)]
    assert len(truncated) == len(full) > 0
    keep = [*ID_COLUMNS, *FEATURE_COLUMNS]
    pd.testing.assert_frame_equal(truncated[keep], full[keep].reset_index(drop=True))
    pd.testing.assert_frame_equal(build_features(register, as_of=on), truncated)


def test_truncate_dataset_is_an_export_of_that_day():
    cut = truncate_dataset(hand_dataset(), date(2014, 7, 31))
    assert list(cut.citizens["citizen_id"]) == ["A", "B", "C"]
    assert list(cut.measurements["measurement_id"]) == ["a1", "a2", "a3"]
    e = cut.interventions.set_index(["citizen_id", "started_on"])["ended_on"]
    assert pd.isna(e[("A", pd.Timestamp("2014-07-20"))])  # ends Aug 10: still running that day
    assert e[("A", pd.Timestamp("2014-05-01"))] == pd.Timestamp("2014-05-31")
    assert ("B", pd.Timestamp("2014-12-01")) not in e.index
    o = cut.outcomes.set_index("citizen_id")
    assert o.loc["A", "event"] == "none" and pd.isna(o.loc["A", "event_on"])
    assert (o["followed_until"] == pd.Timestamp("2014-07-31")).all()


def test_register_labels_and_weights(register, register_features):
    f = register_features
    assert set(f["label"].dropna().unique()) <= {0.0, 1.0}
    assert (f["censored"] == f["label"].isna()).all()
    assert (f.loc[f["censored"], "ipcw_weight"] == 0).all()
    assert (f.loc[~f["censored"], "ipcw_weight"] >= 1).all()
    assert f["censored"].any() and (f["label"] == 1).any() and (f["label"] == 0).any()
    labels = label_within_horizon(register, 12)
    pd.testing.assert_frame_equal(labels, f[["measurement_id", *LABEL_COLUMNS]])


def test_missing_scores_stay_missing_in_a_register(register, register_features):
    by_id = register.measurements.set_index("measurement_id").loc[register_features["measurement_id"]]
    for score in SCORE_COLUMNS:
        np.testing.assert_array_equal(register_features[score].isna().to_numpy(), by_id[score].isna().to_numpy())


def test_missing_required_column_is_a_clear_error():
    dataset = hand_dataset()
    broken = replace(dataset, measurements=dataset.measurements.drop(columns=["measured_on", "cw_job_search"]))
    with pytest.raises(ValueError, match=r"measurements\.measured_on, measurements\.cw_job_search"):
        build_features(broken)


def test_unknown_intervention_code_is_a_clear_error():
    dataset = hand_dataset()
    interventions = dataset.interventions.copy()
    interventions.loc[0, "intervention"] = "yoga"
    with pytest.raises(ValueError, match="yoga"):
        build_features(replace(dataset, interventions=interventions))


def test_an_empty_dataset_gives_an_empty_frame_with_every_column():
    dataset = hand_dataset()
    empty = replace(dataset, measurements=dataset.measurements.iloc[:0])
    frame = build_features(empty)
    assert len(frame) == 0 and tuple(frame.columns) == OUTPUT_COLUMNS


def test_catalogue_covers_every_feature_with_labels_and_monotone_levels():
    catalogue = feature_catalogue().set_index("name")
    assert list(catalogue.index) == list(FEATURE_COLUMNS)
    assert set(catalogue.loc[catalogue["monotone"] == 1].index) == set(SCORE_COLUMNS)
    assert set(catalogue["kind"]) == {"indicator", "intervention_group", "history", "caseworker", "background"}
    assert (catalogue["label_da"].str.len() > 0).all() and (catalogue["label_en"].str.len() > 0).all()
    assert catalogue.loc["cit_self_efficacy__slope_3r", "belongs_to"] == "self_efficacy"
    assert catalogue.loc["cw_caseworker_belief", "belongs_to"] == "caseworker_belief"
    assert catalogue.loc["int_job_market_knowledge__episodes", "belongs_to"] == "job"
    assert catalogue.loc["grp_health__days_365", "kind"] == "intervention_group"
    assert catalogue.loc["age", "label_da"] == "Alder"
    with pytest.raises(KeyError, match="label"):
        feature_catalogue(["label"])


def test_feature_catalogue_doc_is_current():
    assert DOCS.read_text(encoding="utf-8") == feature_catalogue_markdown(), (
        "regenerate with: .venv/bin/python -m features.feature_catalogue docs/feature-catalogue.md"
    )
