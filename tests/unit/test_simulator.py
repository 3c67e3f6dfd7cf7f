"""The simulator: deterministic, inside the contract, and driven by its scenario file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simulator.simulation import load_scenario, merge, simulate, truth_folder


@pytest.fixture(scope="module")
def small():
    return simulate(citizens=300, seed=7, truth_draws=20)


def test_same_seed_same_dataset(small):
    again = simulate(citizens=300, seed=7, truth_draws=20)
    for name, frame in small.dataset.tables().items():
        pd.testing.assert_frame_equal(frame, again.dataset.table(name), obj=name)
    pd.testing.assert_frame_equal(small.truth, again.truth)


def test_other_seed_other_dataset(small):
    other = simulate(citizens=300, seed=8, truth_draws=0)
    assert not small.dataset.measurements["measured_on"].equals(other.dataset.measurements["measured_on"])


def test_simulated_dataset_passes_the_contract(small):
    from features.contract import validate_dataset

    assert validate_dataset(small.dataset) == []


def test_no_measurement_after_the_end_of_follow_up(small):
    d = small.dataset
    joined = d.measurements.merge(d.outcomes, on="citizen_id").merge(d.citizens, on="citizen_id")
    assert (joined["measured_on"] <= joined["followed_until"]).all()
    assert (joined["measured_on"] >= joined["enrolled_on"]).all()
    episodes = d.interventions.merge(d.outcomes, on="citizen_id")
    assert (episodes["started_on"] <= episodes["followed_until"]).all()


def test_truth_is_a_probability_for_every_measurement(small):
    truth = small.truth.set_index("measurement_id")["true_probability"]
    assert truth.index.equals(pd.Index(small.dataset.measurements["measurement_id"]))
    assert truth.between(0, 1).all()
    assert 0.02 < truth.mean() < 0.5


def test_truth_goes_beside_the_dataset_never_inside(tmp_path):
    out = tmp_path / "data"
    assert truth_folder(out).parent == out.parent
    assert truth_folder(out) != out


def test_scenario_drives_the_event_rate():
    base = simulate(citizens=800, seed=3, truth_draws=0)
    richer = simulate(
        citizens=800, seed=3, truth_draws=0, scenario=merge(load_scenario(), {"hazard": {"intercept": -2.0}})
    )

    def share(sim):
        return (sim.dataset.outcomes["event"] != "none").mean()

    assert share(richer) > share(base) + 0.1


def test_scores_are_whole_numbers_in_range_or_missing(small):
    from features.catalogue import SCORE_COLUMNS

    scores = small.dataset.measurements[list(SCORE_COLUMNS)].astype("Float64")
    values = scores.to_numpy(dtype=float, na_value=np.nan)
    present = values[~np.isnan(values)]
    assert set(np.unique(present)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert np.isnan(values).mean() < 0.1
