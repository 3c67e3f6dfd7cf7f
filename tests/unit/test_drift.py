"""Population stability index on answers: zero for equal distributions, large for a shifted one."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from features.catalogue import SCORE_COLUMNS
from training.drift import MIN_DRIFT_CITIZENS, drift_report, population_stability_index
from training.lifecycle import round_drift


def test_identical_distributions_have_no_drift():
    values = pd.Series([1, 2, 3, 4, 5, 3, 3, None])
    assert population_stability_index(values, values.sample(frac=1, random_state=0), (1, 2, 3, 4, 5)) == 0.0


def test_psi_by_hand():
    reference = pd.Series([1, 1, 2, 2])  # shares 1: .5, 2: .5
    current = pd.Series([1, 2, 2, 2])  # shares 1: .25, 2: .75
    expected = (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.75 - 0.5) * np.log(0.75 / 0.5)
    assert population_stability_index(reference, current, (1, 2)) == pytest.approx(expected, rel=1e-3)


def test_more_unanswered_questions_is_drift():
    reference = pd.Series([3] * 100)
    current = pd.Series([3] * 50 + [None] * 50)
    assert population_stability_index(reference, current, (1, 2, 3, 4, 5)) > 0.25


def test_report_orders_by_psi_and_names_levels():
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"cit_a": rng.integers(1, 6, 500), "cit_b": rng.integers(1, 6, 500)})
    current = pd.DataFrame({"cit_a": rng.integers(1, 6, 500), "cit_b": rng.integers(4, 6, 500)})
    report = drift_report(reference, current, ["cit_a", "cit_b"])
    assert list(report["column"]) == ["cit_b", "cit_a"]
    assert report.loc[0, "level"] == "large" and report.loc[1, "level"] == "none"


def rounds(citizens_before: int, citizens_after: int) -> SimpleNamespace:
    """A dataset's measurements: one round per citizen before 2015 and one after, answers drawn 1-5."""
    rng = np.random.default_rng(1)
    n = citizens_before + citizens_after
    frame = pd.DataFrame(
        {
            "citizen_id": [f"c{i}" for i in range(n)],
            "measured_on": pd.to_datetime(["2014-06-01"] * citizens_before + ["2015-06-01"] * citizens_after),
            **{c: rng.integers(1, 6, n).astype(float) for c in SCORE_COLUMNS},
        }
    )
    return SimpleNamespace(measurements=frame)


def test_drift_needs_enough_citizens_in_the_new_rounds():
    """A few citizens' late rounds are their answers, not a population's drift: no table (as for no new rounds)."""
    through = pd.Timestamp("2014-12-31")
    assert round_drift(rounds(200, MIN_DRIFT_CITIZENS - 1), through).empty
    assert round_drift(rounds(200, 0), through).empty
    table = round_drift(rounds(200, MIN_DRIFT_CITIZENS), through)
    assert set(table["column"]) == set(SCORE_COLUMNS)
