"""Population stability index on answers: zero for equal distributions, large for a shifted one."""

import numpy as np
import pandas as pd
import pytest

from training.drift import drift_report, population_stability_index


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
