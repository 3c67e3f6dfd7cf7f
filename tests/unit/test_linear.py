"""The champion's linear part (training/linear.py) and its blend with the trees (training/learners.py,
training/model.py): exact contributions, the monotone bound, the choice on held-out rows, saving."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.linear_model import LogisticRegression

from training.config import TrainConfig
from training.learners import BlendedPredictor, Validation, blend_of, champion_learner
from training.linear import LinearPart, fit_linear, fit_linear_path, weighted_log_loss
from training.model import JobChanceModel, model_from_files

N, K = 6000, 6


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column 0 raises the chance, column 1 lowers it, column 2 has gaps, column 5 is constant."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(N, K))
    X[:, 5] = 3.0
    X[rng.random(N) < 0.2, 2] = np.nan
    log_odds = -1.5 + 1.0 * X[:, 0] - 0.7 * X[:, 1] + 0.4 * np.nan_to_num(X[:, 2], nan=1.0)
    y = (rng.random(N) < 1 / (1 + np.exp(-log_odds))).astype(float)
    return X, y, rng.uniform(0.5, 2.0, N)


def test_contributions_sum_to_the_margin_and_average_zero_on_the_fitted_rows(data):
    X, y, w = data
    part = fit_linear(X, y, w, C=0.1)
    contributions = part.contributions(X)
    np.testing.assert_allclose(part.intercept + contributions.sum(axis=1), part.margin(X), atol=1e-12)
    np.testing.assert_allclose(contributions.mean(axis=0), 0.0, atol=1e-9)
    assert np.all(contributions[:, 5] == contributions[0, 5])  # a constant column explains nothing


def test_without_bounds_it_is_scikit_learns_weighted_logistic_regression(data):
    X, y, w = data
    part = fit_linear(X, y, w, C=1.0)
    complete = ~np.isnan(X).any(axis=1)
    # The same model on complete rows, from scikit-learn: imputation plus indicator plus scaling of ours
    # is a reparametrisation, so on the rows without gaps the slopes must agree where the penalty is weak.
    reference = LogisticRegression(C=1e6, max_iter=5000).fit(X[:, :2], y, sample_weight=w)
    assert part.slope[0] == pytest.approx(reference.coef_[0][0], rel=0.1)
    assert part.slope[1] == pytest.approx(reference.coef_[0][1], rel=0.1)
    assert weighted_log_loss(y[complete], part.margin(X[complete]), w[complete]) < weighted_log_loss(
        y[complete], np.full(complete.sum(), np.log(y.mean() / (1 - y.mean()))), w[complete]
    )


def test_the_monotone_bound_keeps_a_slope_from_going_negative(data):
    X, y, w = data
    free = fit_linear(X, y, w, C=0.1)
    bounded = fit_linear(X, y, w, C=0.1, monotone=[1, 1, 0, 0, 0, 0])
    assert free.slope[1] < -0.3
    assert bounded.slope[1] == 0.0 and bounded.slope[0] > 0.5
    higher = X.copy()
    higher[:, 1] += 1.0
    assert np.all(bounded.margin(higher) >= bounded.margin(X))


def test_rows_of_weight_zero_take_no_part(data):
    X, y, w = data
    flipped = y.copy()
    flipped[:500] = 1 - flipped[:500]
    w0 = w.copy()
    w0[:500] = 0.0
    a = fit_linear(X[500:], y[500:], w[500:], C=0.1)
    b = fit_linear(X, flipped, w0, C=0.1)
    np.testing.assert_allclose(a.margin(X), b.margin(X), atol=1e-6)


def test_a_linear_part_survives_json():
    part = LinearPart(0.5, np.array([1.0, 0.0]), np.array([-0.2, 0.1]), np.array([0.3, -0.4]))
    back = LinearPart.from_json(part.to_json())
    X = np.array([[1.0, np.nan], [np.nan, 2.0]])
    np.testing.assert_array_equal(back.margin(X), part.margin(X))
    np.testing.assert_array_equal(part.contributions(X), [[0.8, -0.4], [0.3, 0.1]])


@pytest.fixture(scope="module")
def catalogue() -> pd.DataFrame:
    return pd.DataFrame({"name": [f"x{j}" for j in range(K)], "monotone": [1, 0, 0, 0, 0, 0]})


def fitted(data, catalogue, config: TrainConfig):
    X, y, w = data
    check = np.arange(N) % 5 == 0
    learner = champion_learner(catalogue, config)
    return learner.fit(
        X[~check],
        y[~check],
        w[~check],
        {"max_depth": 2, "learning_rate": 0.1},
        Validation(X[check], y[check], w[check]),
    )


def test_the_share_is_chosen_on_the_held_out_rows_and_a_refit_reuses_it(data, catalogue):
    X, y, w = data
    config = TrainConfig(max_rounds=200, early_stopping_rounds=10, linear_cs=(0.01, 1.0))
    predictor, params = fitted(data, catalogue, config)
    # A world linear in its columns: the held-out rows prefer some of the linear part.
    assert params["linear_share"] > 0 and params["linear_c"] in config.linear_cs
    assert isinstance(predictor, BlendedPredictor)
    refit, again = champion_learner(catalogue, config).fit(X, y, w, params, None)
    assert blend_of(refit)[1] == params["linear_share"] and again["n_estimators"] == params["n_estimators"]
    trees_only, chosen = fitted(data, catalogue, replace(config, linear_shares=(0.0,)))
    assert blend_of(trees_only) == (None, 0.0) and "linear_share" not in chosen


def test_a_blended_model_explains_exactly_what_it_predicts_and_loads_the_same(data, catalogue, tmp_path):
    X, y, w = data
    predictor, _ = fitted(data, catalogue, TrainConfig(max_rounds=200, early_stopping_rounds=10, linear_cs=(0.01, 1.0)))
    linear, share = blend_of(predictor)
    model = JobChanceModel(
        booster=predictor.booster,
        feature_names=list(catalogue["name"]),
        categories={},
        calibration=(0.9, -0.1),
        catalogue=catalogue.assign(belongs_to=catalogue["name"], kind="indicator"),
        linear=linear,
        linear_share=share,
    )
    rows = X[:200].astype(np.float32)
    np.testing.assert_allclose(model.contributions(rows).sum(axis=1), model.log_odds(rows), atol=1e-5)
    np.testing.assert_allclose(model.margin(rows), predictor.margin(rows), atol=1e-6)
    trees = np.asarray(model.booster.inplace_predict(rows, predict_type="margin"), dtype=float)
    assert not np.allclose(model.margin(rows), trees)  # the linear part does take part
    files = model.save(tmp_path / "model")
    loaded = model_from_files(files["booster"], files["model"])
    np.testing.assert_array_equal(loaded.log_odds(rows), model.log_odds(rows))
    np.testing.assert_array_equal(loaded.contributions(rows), model.contributions(rows))
    assert isinstance(loaded.booster, xgb.Booster)


def test_a_path_of_penalties_gives_each_penalty_its_own_fit(data):
    X, y, w = data
    path = fit_linear_path(X, y, w, (1.0, 0.01), monotone=[1, 1, 0, 0, 0, 0])
    for part, c in zip(path, (1.0, 0.01), strict=True):
        alone = fit_linear(X, y, w, C=c, monotone=[1, 1, 0, 0, 0, 0])
        np.testing.assert_allclose(part.margin(X), alone.margin(X), atol=1e-5)
    assert np.abs(path[0].slope).sum() > np.abs(path[1].slope).sum()  # the weaker penalty, the larger slopes


def test_dask_blend_choice_takes_the_linear_part_where_it_predicts_and_leaves_it_where_it_does_not():
    from training.distributed import blended_margins, chosen_blend

    rng = np.random.default_rng(5)
    signal = rng.normal(size=4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-2 * signal))).astype(float)
    noise = rng.normal(size=4000)
    config = TrainConfig(linear_cs=(0.01, 0.001), linear_shares=(0.0, 0.25, 0.5, 0.75))
    scored = pd.DataFrame(
        {"label": y, "weight": np.ones(4000), "margin": noise, "linear_0": noise, "linear_1": 2 * signal}
    )
    assert chosen_blend(scored, config) == (1, 0.75)
    blend = blended_margins(scored, 1, 0.75)["margin"].to_numpy()
    np.testing.assert_allclose(blend, 0.25 * noise + 1.5 * signal)
    swapped = scored.assign(margin=2 * signal, linear_1=noise)
    assert chosen_blend(swapped, config)[1] == 0.0
    np.testing.assert_array_equal(blended_margins(swapped, 0, 0.0)["margin"], 2 * signal)
