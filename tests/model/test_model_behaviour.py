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
from simulator.simulation import DEFAULT_SCENARIO, load_scenario, merge, simulate
from training.config import TrainConfig
from training.data import with_weights
from training.evaluation import importance_by_indicator, truth_of
from training.model import JobChanceModel
from training.train import fit_job_chance_model

CITIZENS = 2000
RANKING_CITIZENS = 16_000
SEED = 5
PARAMS = {"max_depth": 3, "learning_rate": 0.1, "n_estimators": 150}
ZERO_WEAKEST = DEFAULT_SCENARIO.parent / "zero_weakest.yaml"  # the three planted at 0.03 by default, at 0
CHANGED = {"hazard": {"indicators": {"concentration": 0.45, "network_support": 0.45, "health_coping": 0.0}}}


@dataclass(frozen=True)
class Fitted:
    dataset: Dataset
    frame: pd.DataFrame
    model: JobChanceModel
    truth: np.ndarray | None


def fitted(scenario: dict, truth_draws: int = 0, citizens: int = CITIZENS) -> Fitted:
    simulation = simulate(citizens, seed=SEED, scenario=scenario, truth_draws=truth_draws)
    frame = with_weights(build_features(simulation.dataset), 12, "dropout")
    truth = truth_of(frame, simulation.truth) if truth_draws else None
    model = fit_job_chance_model(frame, PARAMS, (1.0, 0.0), TrainConfig())
    return Fitted(simulation.dataset, frame, model, truth)


@pytest.fixture(scope="module")
def default() -> Fitted:
    return fitted(load_scenario(), truth_draws=10)


@pytest.fixture(scope="module")
def large() -> Fitted:
    """The default world at 4x BIP's size: enough events to tell the indicators apart (see the ranking tests)."""
    return fitted(load_scenario(), citizens=RANKING_CITIZENS)


@pytest.fixture(scope="module")
def zero_weakest_world() -> Fitted:
    """The default world at 4x BIP's size with the three weakest indicators' direct effects at exactly 0."""
    return fitted(load_scenario(ZERO_WEAKEST), citizens=RANKING_CITIZENS)


@pytest.fixture(scope="module")
def changed() -> Fitted:
    return fitted(merge(load_scenario(), CHANGED))


def planted_strengths(scenario: dict) -> pd.Series:
    """Planted effect per indicator on the quarterly log-odds, per step (from the scenario)."""
    hazard = scenario["hazard"]
    return pd.Series({**hazard["indicators"], "caseworker_belief": hazard["caseworker_belief"]}).sort_values(
        ascending=False
    )


def indicator_importance(fit: Fitted) -> pd.Series:
    """Indicators by mean |summed SHAP contribution| (citizen's and caseworker's columns together), descending."""
    model = fit.model
    contributions = model.contributions(model.matrix(fit.frame))[:, :-1]
    belongs_to = dict(zip(model.catalogue["name"], model.catalogue["belongs_to"], strict=True))
    importance = importance_by_indicator(contributions, model.feature_names, belongs_to)
    return importance[[code for code in importance.index if code in INDICATOR_CODES]]


def indicator_ranking(fit: Fitted) -> list[str]:
    return list(indicator_importance(fit).index)


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


# The ranking needs more data than the other behaviour tests. Measured (seed 5 unless said): Spearman
# between mean |SHAP| and the planted strengths 0.585 at 2,000 citizens (0.62-0.82 on seeds 6-9),
# 0.65 at 8,000, and at 16,000 citizens 0.94 (seeds 6 and 7: 0.85 and 0.92). Why small samples rank
# worse: each indicator's answers are also noisy readings of the citizen's general readiness (the
# latent indicators share a person factor, sd 0.55, beside their own, sd 0.45), so with few events the
# model may use any of the 20 answers as a readiness proxy, and mean |SHAP| measures that use.
def test_shap_importance_ranks_the_indicators_as_planted(large):
    importance = indicator_importance(large)
    planted = planted_strengths(load_scenario()).reindex(importance.index)
    agreement = importance.corr(planted, method="spearman")
    assert agreement >= 0.7, (round(agreement, 3), importance.round(3).to_dict())


# The zero-effect check needs a world with zero effects. The default world has none: BIP's three weakest
# indicators are planted at 0.03 per step there, and in that world they are the bottom three in only 1
# of 5 fits at 16,000 citizens and 2 of 5 at 64,000 (everyday coping, 0.05, takes a place). Telling
# 0.03 from 0.05 is within the noise of mean |SHAP| on correlated answers: every answer is also a
# reading of the citizen's general readiness, which the strong indicators carry. So this test plants
# the three at exactly 0 (simulator/scenarios/zero_weakest.yaml), everything else as the default, and
# asks that the model put them last. Over seeds (benchmarks/bench_ranking.py --scenario ..., table in
# benchmarks/RESULTS-ranking.md) they are the bottom three in 4 of 5 fits at 16,000 citizens (seed 7:
# everyday coping takes a place) and 4 of 5 at 64,000; seed 5, this module's seed, is one of the four.
def test_zero_effect_indicators_rank_in_the_bottom_three(zero_weakest_world):
    ranking = indicator_ranking(zero_weakest_world)
    planted = planted_strengths(load_scenario(ZERO_WEAKEST))
    zero = set(planted.index[planted == 0])  # concentration, contact ability, network support
    assert len(zero) == 3, planted.to_dict()
    assert zero == set(ranking[-3:]), ranking


def test_a_changed_scenario_moves_the_ranking(default, changed):
    before, after = indicator_ranking(default), indicator_ranking(changed)
    raised = ["concentration", "network_support"]
    for code in raised:
        assert after.index(code) < after.index("health_coping"), after
    assert sum(after.index(c) for c in raised) < sum(before.index(c) for c in raised), (before, after)
    assert after.index("health_coping") > before.index("health_coping"), (before, after)


def test_censored_rows_are_never_a_no_and_the_weights_recover_the_true_rate(default):
    frame, truth = default.frame, default.truth
    weight = frame["ipcw_weight"].to_numpy()
    assert (weight[frame["label"].isna().to_numpy()] == 0).all()
    used = weight > 0
    label = frame["label"].to_numpy()[used]
    # Labelled rows over-represent early events (a late row is labelled only when its event came
    # early); weighted, and cut to rows that could be followed a whole horizon, they stand for all.
    assert frame["label"].mean() > truth.mean() + 0.01
    assert abs(np.average(label, weights=weight[used]) - truth[used].mean()) < 0.01
    predicted = default.model.probability(default.model.matrix(frame))
    assert abs(predicted.mean() - truth.mean()) < 0.01


def test_unseen_categories_and_unanswered_questions_are_handled(default):
    model = default.model
    row = default.frame.iloc[[0]].copy()
    row["jobcentre"] = "Nowhere"
    row["cit_self_efficacy"] = np.nan
    X = model.matrix(row)
    jobcentres = [k for k, name in enumerate(model.feature_names) if name.startswith("jobcentre__")]
    assert jobcentres and (X[0, jobcentres] == 0).all()
    assert np.isnan(X[0, model.feature_names.index("cit_self_efficacy")])
    assert 0 < model.probability(X)[0] < 1
    with pytest.raises(ValueError, match="cit_job_search"):
        model.matrix(row.drop(columns=["cit_job_search"]))
