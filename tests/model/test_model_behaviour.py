"""Behaviour of the trained job-chance model: monotone in the indicator levels, blind to citizen ids,
and recovering the effects the simulator planted (which only tests may read from the scenario).

The models are fitted once per module with fixed hyperparameters (no cross-validation), on a
simulated dataset large enough for the planted ranking to show.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from features.build import build_features
from features.catalogue import INDICATOR_CODES, SCORE_MAX
from features.dataset import Dataset
from features.simulator import load_scenario, merge, simulate
from training.evaluation import importance_by_indicator
from training.model import JobChanceModel
from training.train import TrainConfig, fit_job_chance_model, with_weights

CITIZENS = 2000
SEED = 5
PARAMS = {"max_depth": 3, "learning_rate": 0.1, "n_estimators": 150}
CHANGED = {"hazard": {"indicators": {"concentration": 0.45, "network_support": 0.45, "health_coping": 0.0}}}


@dataclass(frozen=True)
class Fitted:
    dataset: Dataset
    frame: pd.DataFrame
    model: JobChanceModel


def fitted(scenario: dict) -> Fitted:
    dataset = simulate(CITIZENS, seed=SEED, scenario=scenario, truth_draws=0).dataset
    frame = with_weights(build_features(dataset), 12, "dropout")
    return Fitted(dataset, frame, fit_job_chance_model(frame, PARAMS, (1.0, 0.0), TrainConfig()))


@pytest.fixture(scope="module")
def default() -> Fitted:
    return fitted(load_scenario())


@pytest.fixture(scope="module")
def changed() -> Fitted:
    return fitted(merge(load_scenario(), CHANGED))


def planted_strengths(scenario: dict) -> pd.Series:
    """Planted effect per indicator on the quarterly log-odds, per step (from the scenario)."""
    hazard = scenario["hazard"]
    return pd.Series({**hazard["indicators"], "caseworker_belief": hazard["caseworker_belief"]}).sort_values(
        ascending=False
    )


def indicator_ranking(fit: Fitted) -> list[str]:
    """Indicators by mean |summed SHAP contribution| (citizen's and caseworker's columns together)."""
    model = fit.model
    contributions = model.contributions(model.matrix(fit.frame))[:, :-1]
    belongs_to = dict(zip(model.catalogue["name"], model.catalogue["belongs_to"], strict=True))
    importance = importance_by_indicator(contributions, model.feature_names, belongs_to)
    return [code for code in importance.index if code in INDICATOR_CODES]


def test_raising_an_indicator_level_never_lowers_the_chance(default):
    model = default.model
    X = model.matrix(default.frame.sample(400, random_state=1))
    before = model.probability(X)
    levels = model.catalogue.index[model.catalogue["monotone"] == 1]
    assert len(levels) == 21
    for column in levels:
        raised = X.copy()
        raised[:, column] = np.minimum(raised[:, column] + 1, SCORE_MAX)  # NaN (unanswered) stays NaN
        after = model.probability(raised)
        assert (after >= before - 1e-9).all(), model.feature_names[column]
    top = X.copy()
    top[:, levels] = SCORE_MAX
    assert model.probability(top).mean() > before.mean()


def test_relabelled_citizen_ids_give_the_same_predictions(default):
    dataset = default.dataset
    new_id = {old: f"Z{k:05d}" for k, old in enumerate(reversed(dataset.citizens["citizen_id"].tolist()))}

    def relabel(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(citizen_id=frame["citizen_id"].map(new_id).astype(frame["citizen_id"].dtype))

    relabelled = Dataset(
        citizens=relabel(dataset.citizens),
        caseworkers=dataset.caseworkers,
        measurements=relabel(dataset.measurements),
        interventions=relabel(dataset.interventions),
        outcomes=relabel(dataset.outcomes),
    )
    model = default.model
    original = model.predict_frame(default.frame).set_index("measurement_id")["probability"]
    again = model.predict_frame(build_features(relabelled)).set_index("measurement_id")["probability"]
    pd.testing.assert_series_equal(original.sort_index(), again.sort_index(), check_exact=False, rtol=1e-7)
    assert "citizen_id" not in model.feature_names


def test_strongest_planted_indicators_are_among_the_most_important(default):
    ranking = indicator_ranking(default)
    planted = planted_strengths(load_scenario())
    strongest, weakest = list(planted.index[:4]), list(planted.index[-3:])
    assert len(set(strongest) & set(ranking[:5])) >= 3, (ranking, strongest)
    assert all(ranking.index(code) >= len(ranking) // 2 for code in weakest), (ranking, weakest)


def test_a_changed_scenario_moves_the_ranking(default, changed):
    before, after = indicator_ranking(default), indicator_ranking(changed)
    for code in ("concentration", "network_support"):
        assert after.index(code) < after.index("health_coping"), after
        assert after.index(code) < before.index(code), (before, after)
    assert after.index("health_coping") > before.index("health_coping"), (before, after)
