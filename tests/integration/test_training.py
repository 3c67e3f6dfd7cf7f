"""Training end to end on a real MLflow SQLite store in a temp dir: `bip train`, the registry, the
pyfunc model, `bip predict` and `bip evaluate`.

One small simulated dataset (with a few truth draws, so the truth comparison is logged) is trained
once for the whole module; the tests read what that run left behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.catalogue import INDICATOR_CODES
from features.feature_catalogue import ID_COLUMNS

CITIZENS = 600
SEED = 41
MODEL = "bip-job-chance"
CHAMPION_URI = f"models:/{MODEL}@champion"


@dataclass(frozen=True)
class Trained:
    home: Path
    data: Path
    tracking_uri: str
    train_output: str


def bip(*args: str) -> str:
    """Run a `bip` command in this process; its output, failing the test on a non-zero exit."""
    from bip.cli import build_app

    result = CliRunner().invoke(build_app(), list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Iterator[Trained]:
    from simulator.simulation import load_scenario, merge, simulate_to_folder

    root = tmp_path_factory.mktemp("training")
    data = root / "data"
    # A few truth draws are enough to check that the truth comparison is computed and logged.
    simulate_to_folder(data, merge(load_scenario(), {"truth_draws": 10}), citizens=CITIZENS, seed=SEED)
    tracking_uri = f"sqlite:///{root / 'home' / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BIP_HOME", str(root / "home"))
        patch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "BIP_MODEL_NAME", "BIP_MODEL_ALIAS", "BIP_EXPERIMENT"):
            patch.delenv(name, raising=False)
        truth = data.with_name("data-truth")  # where the simulator wrote it
        output = bip("train", "--data", str(data), "--truth", str(truth), "--n-boot", "30")
        yield Trained(root / "home", data, tracking_uri, output)


@pytest.fixture
def client(trained):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=trained.tracking_uri, registry_uri=trained.tracking_uri)


def runs_by_name(client) -> dict[str, object]:
    experiment = client.get_experiment_by_name("bip-job-chance")
    runs = client.search_runs([experiment.experiment_id])
    return {run.info.run_name: run for run in runs}


def test_every_model_family_is_a_child_run_of_one_train_run_with_metrics(trained, client):
    runs = runs_by_name(client)
    parent = runs["train"]
    children = {"xgboost_monotone", "xgboost", "logit", "background_only", "hist_gradient_boosting"}
    assert children <= set(runs)
    for name in children:
        run = runs[name]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        for split in ("cv", "oot"):
            for metric in ("roc_auc", "pr_auc", "brier", "log_loss", "ece"):
                low, high = run.data.metrics[f"{split}_{metric}_low"], run.data.metrics[f"{split}_{metric}_high"]
                assert np.isfinite(run.data.metrics[f"{split}_{metric}"]) and low <= high
            # (a percentile interval of a biased statistic such as the ECE need not hold its estimate)
            assert run.data.metrics[f"{split}_brier_low"] <= run.data.metrics[f"{split}_brier"]
            assert run.data.metrics[f"{split}_brier"] <= run.data.metrics[f"{split}_brier_high"]
        assert 0.5 < run.data.metrics["cv_roc_auc"] < 1 or name == "background_only"
        assert "cv_truth_roc_auc" in run.data.metrics and "cv_mean_abs_diff_truth" in run.data.metrics
        assert json.loads(run.data.params["chosen"])
    assert parent.data.params["data_rows"] == str(len(pd.read_csv(trained.data / "measurements.csv")))
    assert len(parent.data.params["data_content_sha256"]) == 64
    assert "xgboost_monotone" in trained.train_output and "CV AUC" in trained.train_output


def test_runs_hold_plots_tables_and_the_catalogue(client):
    runs = runs_by_name(client)
    listed = {f.path for f in client.list_artifacts(runs["xgboost_monotone"].info.run_id)}
    assert {"reliability_cv.png", "reliability_oot.png", "grid_search.csv", "fairness_cv.csv"} <= listed
    assert {"shap_beeswarm.png", "importance_by_indicator.png", "importance_by_indicator.csv"} <= listed
    # shap's own plots: a dependence plot per indicator and waterfalls labelled by example, not by citizen.
    assert {f"shap_dependence_{code}.png" for code in INDICATOR_CODES} <= listed
    assert {f"shap_waterfall_example_{k}.png" for k in (1, 2, 3)} <= listed
    assert int(runs["xgboost_monotone"].data.params["shap_sample_rows"]) > 0
    logit = {f.path for f in client.list_artifacts(runs["logit"].info.run_id)}
    assert "reliability_oot.png" in logit and "shap_beeswarm.png" not in logit
    parent = {f.path for f in client.list_artifacts(runs["train"].info.run_id)}
    assert "feature_catalogue.csv" in parent


def test_grid_is_searched_inside_folds_and_logged(client):
    run = runs_by_name(client)["xgboost"]
    grid = json.loads(run.data.params["grid"])
    assert len(grid) == 4
    local = client.download_artifacts(run.info.run_id, "grid_search.csv")
    trials = pd.read_csv(local)
    assert sorted(trials["fold"].unique()) == [0, 1, 2, 3, 4]
    assert len(trials) == 5 * len(grid)
    assert (trials["n_estimators"] >= 1).all()


def test_the_refitted_candidate_is_registered_as_champion(trained):
    from training.registry import champion_version

    assert champion_version(MODEL, tracking_uri=trained.tracking_uri) == 1


def test_champion_loads_predicts_and_explains_on_the_calibrated_log_odds(trained, monkeypatch):
    import mlflow
    from mlflow.artifacts import download_artifacts

    from features.build import build_features
    from features.contract import read_dataset
    from training.model import expit, load_model, model_source

    model = load_model(CHAMPION_URI, trained.tracking_uri)
    frame = build_features(read_dataset(trained.data)[0])
    X = model.matrix(frame)
    log_odds = model.log_odds(X)
    contributions = model.contributions(X)
    assert contributions.shape == (len(frame), len(model.feature_names) + 1)
    np.testing.assert_allclose(contributions.sum(axis=1), log_odds, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.probability(X), expit(log_odds))
    a, b = model.calibration
    np.testing.assert_allclose(log_odds, a * model.margin(X) + b)
    assert model.metrics["cv_roc_auc"] > 0.5 and model.training_fingerprint["rows"] == len(frame)
    files = download_artifacts(
        artifact_uri=model_source(CHAMPION_URI, trained.tracking_uri), tracking_uri=trained.tracking_uri
    )
    pyfunc = mlflow.pyfunc.load_model(files)
    np.testing.assert_allclose(np.asarray(pyfunc.predict(frame)).ravel(), model.probability(X), rtol=1e-6)


def test_retraining_registers_a_new_version_and_leaves_the_champion(trained, monkeypatch):
    import os

    import mlflow

    from features.contract import read_dataset
    from training.config import TrainConfig
    from training.registry import champion_version
    from training.train import train

    config = TrainConfig(
        folds=2, n_boot=5, models=("xgboost_monotone",), xgboost_grid=({"max_depth": 3, "learning_rate": 0.1},)
    )
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # set for the module's `bip` commands; train() takes the URI
    outcome = train(
        read_dataset(trained.data)[0],
        trained.tracking_uri,
        trained.home / "mlartifacts",
        "bip-job-chance",
        MODEL,
        config,
    )
    assert outcome.model_version == 2 and not outcome.champion_set
    assert champion_version(MODEL, tracking_uri=trained.tracking_uri) == 1
    # Training worked on the URI it was given and left MLflow's process-wide one alone.
    assert mlflow.get_tracking_uri() != trained.tracking_uri
    assert os.environ.get("MLFLOW_TRACKING_URI") != trained.tracking_uri


def test_the_trained_champion_is_not_doubted(trained):
    assert "may be too weak" not in trained.train_output, trained.train_output


def scrambled(data: Path, share: float, seed: int):
    """The dataset at `data` with the outcomes of `share` of the citizens someone else's."""
    from features.contract import read_dataset
    from features.dataset import Dataset

    dataset = read_dataset(data)[0]
    outcomes = dataset.outcomes.reset_index(drop=True)
    columns = ["event", "event_on", "followed_until"]
    rng = np.random.default_rng(seed)
    order, picked = rng.permutation(len(outcomes)), rng.random(len(outcomes)) < share
    outcomes.loc[picked, columns] = outcomes[columns].iloc[order].reset_index(drop=True).loc[picked, columns]
    return Dataset(dataset.citizens, dataset.caseworkers, dataset.measurements, dataset.interventions, outcomes)


def train_first(dataset, folder: Path):
    """`train` of the candidate and the register-only baseline into a fresh store in `folder`."""
    from training.config import TrainConfig
    from training.train import train

    config = TrainConfig(
        folds=2,
        n_boot=30,
        models=("xgboost_monotone", "background_only"),
        xgboost_grid=({"max_depth": 3, "learning_rate": 0.1},),
    )
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return uri, train(dataset, uri, folder / "mlartifacts", "weak", MODEL, config)


def test_a_weak_first_champion_is_registered_with_its_doubts(trained, monkeypatch, tmp_path):
    from mlflow import MlflowClient

    from training.commands import doubts_warning

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    uri, outcome = train_first(scrambled(trained.data, 0.9, seed=4), tmp_path)
    assert outcome.champion_set and outcome.doubts, outcome.metrics["xgboost_monotone"]
    assert any("chance" in doubt for doubt in outcome.doubts), outcome.doubts
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version(MODEL, str(outcome.model_version))
    assert version.tags["doubts"] == "; ".join(outcome.doubts)
    assert client.get_run(outcome.parent_run_id).data.tags["champion_doubts"] == version.tags["doubts"]
    shown = doubts_warning(outcome.model_version, outcome.doubts, outcome.champion_set, "champion")
    assert shown.startswith(f"warning: version {outcome.model_version} may be too weak") and "bip promote" in shown
    assert outcome.doubts[0] in shown


def test_a_candidate_whose_scores_do_not_rank_is_not_registered(trained, monkeypatch, tmp_path):
    from mlflow import MlflowClient

    from training.calibration import NoSignal
    from training.registry import champion_version

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(NoSignal, match="do not rank citizens") as refused:
        train_first(scrambled(trained.data, 1.0, seed=3), tmp_path)
    assert "nothing was registered" in str(refused.value)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert champion_version(MODEL, tracking_uri=uri) is None
    assert MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions(f"name='{MODEL}'") == []


def test_predict_writes_one_row_per_measurement_with_top_indicators(trained, tmp_path, monkeypatch):
    from features.catalogue import INDICATOR_CODES

    monkeypatch.setenv("BIP_HOME", str(trained.home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.tracking_uri)
    out = tmp_path / "predictions.csv"
    bip("predict", "--data", str(trained.data), "--out", str(out))
    predictions = pd.read_csv(out)
    measurements = pd.read_csv(trained.data / "measurements.csv")
    assert len(predictions) == len(measurements)
    assert set(predictions["measurement_id"]) == set(measurements["measurement_id"])
    assert list(predictions.columns[:4]) == [*ID_COLUMNS, "probability"]
    assert predictions["probability"].between(0, 1).all()
    for k in (1, 2, 3):
        assert set(predictions[f"indicator_{k}"]) <= set(INDICATOR_CODES)
    first, third = predictions["contribution_1"].abs(), predictions["contribution_3"].abs()
    assert (first >= third).all()


def test_evaluate_writes_metrics_with_intervals(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("BIP_HOME", str(trained.home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.tracking_uri)
    out = tmp_path / "metrics.json"
    truth = str(trained.data.with_name("data-truth"))
    bip("evaluate", "--data", str(trained.data), "--truth", truth, "--out", str(out), "--n-boot", "20")
    report = json.loads(out.read_text())
    metrics = report["metrics"]
    assert metrics["test_roc_auc_low"] <= metrics["test_roc_auc"] <= metrics["test_roc_auc_high"]
    assert {"test_ece", "test_brier", "test_truth_roc_auc", "test_fairness_max_auc_gap"} <= set(metrics)
    assert report["fairness"]
    # The truth is read only where it is given: not found beside the data by itself.
    bip("evaluate", "--data", str(trained.data), "--out", str(out), "--n-boot", "20")
    assert "test_truth_roc_auc" not in json.loads(out.read_text())["metrics"]


def test_a_truth_folder_without_true_probabilities_is_a_user_error(trained, tmp_path, monkeypatch):
    from bip.cli import build_app
    from bip.errors import UserError

    monkeypatch.setenv("BIP_HOME", str(trained.home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.tracking_uri)
    args = ["evaluate", "--data", str(trained.data), "--truth", str(tmp_path), "--out", str(tmp_path / "m.json")]
    result = CliRunner().invoke(build_app(), args)
    assert isinstance(result.exception, UserError) and "true_probabilities.csv" in str(result.exception)
