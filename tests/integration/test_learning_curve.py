"""The plain family, the feature groups of the ablation and the learning curve (`bip evaluate
--learning-curve`, analysis 6 of `bip report`), on a small simulation with its truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.build import build_features
from training.config import CHAMPION_CANDIDATE, PLAIN, TrainConfig
from training.data import FEATURE_GROUPS, family_rows, group_columns, plain_columns, with_weights
from training.learners import learners, tree_weights
from training.learning_curve import (
    FRACTIONS,
    citizen_split,
    encoded,
    fit_family,
    learning_curve,
    subset_rows,
    truth_calibration_error,
)
from training.validation import learn_encoding

CITIZENS = 700
SEED = 23
CONFIG = TrainConfig(n_boot=20, seed=SEED, xgboost_grid=({"max_depth": 3, "learning_rate": 0.1},), max_rounds=150)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    from simulator.simulation import load_scenario, merge, simulate_to_folder

    data = tmp_path_factory.mktemp("curve") / "data"
    simulate_to_folder(data, merge(load_scenario(), {"truth_draws": 10}), citizens=CITIZENS, seed=SEED)
    return data


@pytest.fixture(scope="module")
def features(simulated) -> pd.DataFrame:
    from features.contract import read_dataset

    dataset, _ = read_dataset(simulated)
    return with_weights(build_features(dataset, horizon_months=12), 12, "dropout")


@pytest.fixture(scope="module")
def true_p(simulated, features) -> np.ndarray:
    from training.evaluation import read_truth, truth_of

    return truth_of(features, read_truth(simulated.with_name("data-truth") / "true_probabilities.csv"))


@pytest.fixture(scope="module")
def curve(features, true_p) -> pd.DataFrame:
    return learning_curve(features, true_p, CONFIG)


def test_subsets_are_nested_disjoint_from_the_test_citizens_and_grow():
    citizens = np.repeat(np.arange(400), 3)
    split = citizen_split(citizens, 0.25, seed=1)
    test_citizens = set(citizens[split.test])
    assert len(test_citizens) == 100
    previous: set = set()
    for fraction in FRACTIONS:
        taken = set(citizens[subset_rows(citizens, split, fraction)])
        assert not taken & test_citizens
        assert previous < taken
        assert len(taken) == round(fraction * 300)
        previous = taken
    assert np.array_equal(citizen_split(citizens, 0.25, seed=1).test, split.test)  # the same for every family


def test_feature_groups_are_disjoint_and_the_plain_family_sees_scores_changes_and_background(features):
    catalogue = learn_encoding(features).catalogue
    names = catalogue["name"].astype(str)
    seen: set[int] = set()
    for group in FEATURE_GROUPS:
        columns = set(group_columns(catalogue, group))
        assert columns and not columns & seen, group
        seen |= columns
    plain = names[plain_columns(catalogue)]
    assert plain.str.endswith("__change_prev").any() and "age" in set(plain) and "cit_self_efficacy" in set(plain)
    assert not plain.str.contains("__slope_|__change_first|^grp_|^caseworker_", regex=True).any()
    with pytest.raises(ValueError, match="unknown feature group"):
        group_columns(catalogue, "weather")


def test_plain_family_drops_censored_rows_and_ignores_weights(features):
    rows, weights = family_rows(features, "known")
    assert np.array_equal(rows, features["label"].notna().to_numpy())
    assert set(np.unique(weights[rows])) == {1.0}
    weighted_rows, _ = family_rows(features, "weighted")
    assert rows.sum() > weighted_rows.sum()  # rows near the extract with a known label stay in
    catalogue = learn_encoding(features).catalogue
    plain = learners(catalogue, TrainConfig(models=(PLAIN,), xgboost_grid=CONFIG.xgboost_grid))[PLAIN]
    X = encoded(features, learn_encoding(features))
    y = features["label"].to_numpy(float)
    known = ~np.isnan(y)
    params = {"max_depth": 3, "learning_rate": 0.1, "n_estimators": 20}
    one, _ = plain.fit(X[known], y[known], np.ones(known.sum()), params, None)
    skewed, _ = plain.fit(X[known], y[known], np.linspace(0.5, 3, known.sum()), params, None)
    assert np.allclose(one.margin(X[:50]), skewed.margin(X[:50]))


def test_tree_weights_keep_the_censoring_weights_at_power_one_and_flatten_them_at_zero():
    w = np.array([0.0, 0.5, 1.0, 2.5])
    assert np.array_equal(tree_weights(w, 1.0), w)
    assert np.array_equal(tree_weights(w, 0.0), [0.0, 1.0, 1.0, 1.0])
    assert np.allclose(tree_weights(w, 0.5), np.sqrt(w))


def test_fit_family_calibrates_its_level_on_held_out_citizens(features, true_p):
    encoding = learn_encoding(features)
    X = encoded(features, encoding)
    champion = learners(encoding.catalogue, CONFIG)[CHAMPION_CANDIDATE]
    fitted = fit_family(champion, features, X, CONFIG)
    p = fitted.probability(X)
    assert fitted.params["n_estimators"] >= 1
    assert abs(np.nanmean(true_p) - p.mean()) < 0.05


def test_learning_curve_scores_every_family_at_every_size_on_the_same_test(curve, features):
    assert set(curve["model"]) == {PLAIN, CHAMPION_CANDIDATE}
    measured = features["citizen_id"].nunique()
    for _, part in curve.groupby("model"):
        assert part["citizens"].is_monotonic_increasing and part["citizens"].nunique() == len(part)
        assert part["citizens"].iloc[-1] == measured - round(measured * 0.25)
    for metric in ("roc_auc", "brier", "ece"):
        assert (curve[f"{metric}_low"] <= curve[metric] + 1e-9).all() or metric == "ece"
        assert (curve[metric] <= curve[f"{metric}_high"] + 1e-9).all()
    assert curve["roc_auc"].between(0.5, 1).all()
    # The truth is the same test rows for every family and size.
    assert curve["truth_roc_auc"].nunique() == 1 and curve["mean_true_p"].nunique() == 1
    assert (curve["ece_truth"] >= 0).all() and (curve["ece_truth"] < 0.2).all()
    full = curve[curve["citizens"] == curve["citizens"].max()]
    smallest = curve[curve["citizens"] == curve["citizens"].min()]
    # More citizens: the champion's Brier score does not get worse beyond noise.
    champion = curve[curve["model"] == CHAMPION_CANDIDATE].set_index("citizens")["brier"]
    assert champion.iloc[-1] <= champion.iloc[0] + 0.01, (full, smallest)


def test_truth_calibration_error_is_zero_for_the_truth_and_grows_with_a_shift():
    true_p = np.random.default_rng(0).uniform(0.01, 0.5, 2000)
    assert truth_calibration_error(true_p, true_p) == 0
    assert truth_calibration_error(true_p + 0.03, true_p) == pytest.approx(0.03)
    assert truth_calibration_error(true_p, np.where(np.arange(2000) < 10, np.nan, true_p)) == 0


def test_bip_evaluate_learning_curve_writes_the_curve_and_logs_it(simulated, tmp_path, monkeypatch):
    from bip.cli import build_app

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("BIP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "BIP_EXPERIMENT"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "curve.json"
    args = ["evaluate", "--learning-curve", "--data", str(simulated), "--out", str(out), "--n-boot", "10"]
    args += ["--truth", str(simulated.with_name("data-truth")), "--curve-models", "plain,logit"]
    result = CliRunner().invoke(build_app(), args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["learning_curve"]
    assert {r["model"] for r in rows} == {"plain", "logit"} and all("ece_truth" in r for r in rows)
    assert Path(out.with_suffix(".png")).stat().st_size > 5000
    runs = mlflow.MlflowClient(tracking_uri=tracking_uri).search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(tracking_uri=tracking_uri).search_experiments()]
    )
    run = next(r for r in runs if r.info.run_name == "learning-curve")
    biggest = max(r["citizens"] for r in rows)
    assert run.data.metrics[f"plain_roc_auc_at_{biggest}"] == pytest.approx(
        next(r["roc_auc"] for r in rows if r["model"] == "plain" and r["citizens"] == biggest)
    )
    bad = CliRunner().invoke(build_app(), [*args[:-1], "plain,weather"])
    assert bad.exit_code != 0 and "weather" in bad.output
