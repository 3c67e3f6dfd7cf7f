"""`bip train`: fit, validate, calibrate and register the job-chance model, every step tracked in MLflow.

Every model family (training/learners.py) goes through the same steps on the same split: nested
grouped cross-validation inside the training period and an out-of-time test after it
(training/validation.py), Platt calibration on the out-of-fold margins (training/calibration.py),
metrics and fairness (training/evaluation.py). Each family is one child run of a "train" run
(training/tracking.py). The champion candidate (`xgboost_monotone`) is then refitted on every
labelled row with the chosen parameters and that calibration, logged as an MLflow pyfunc
(training/model.py) and registered.

Censoring: only labelled rows are fitted and scored, each with an inverse-probability-of-censoring
weight (training/data.py).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from threadpoolctl import threadpool_limits

from bip.progress import QUIET, Progress, step
from features.dataset import Dataset
from training.calibration import calibrated, platt, ranking
from training.config import CHAMPION_CANDIDATE, TrainConfig
from training.data import fingerprint, labelled_rows
from training.evaluation import champion_doubts, evaluation_metrics, headline, truth_of
from training.learners import Learner, Predictor, blend_of, champion_learner, learners
from training.linear import LinearPart
from training.model import JobChanceModel, encode
from training.model_card import card_facts, log_model_card
from training.tracking import (
    experiment_id,
    log_comparison,
    log_family,
    log_model,
    log_training_data,
    record_doubts,
    register_champion_candidate,
    started_run,
    system_metrics,
    tracking_client,
)
from training.validation import Encoding, Split, chosen_params, cross_validate, learn_encoding, make_split


@dataclass
class FamilyResult:
    """What one model family produced: choice, calibration, predictions, metrics, artifacts."""

    name: str
    params: dict[str, Any]
    calibration: tuple[float, float]
    trials: pd.DataFrame
    cv_probability: np.ndarray
    oot_probability: np.ndarray
    oot_predictor: Predictor
    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    seconds: float = 0.0


def train_family(
    learner: Learner, split: Split, truth: pd.DataFrame | None, config: TrainConfig, progress: Progress = QUIET
) -> FamilyResult:
    """Nested grouped CV, calibration and the out-of-time fit and evaluation of one model family."""
    start = time.perf_counter()
    period, test = split.period, split.test
    y = period["label"].to_numpy(dtype=float)
    w = period["ipcw_weight"].to_numpy(dtype=float)
    labelled = labelled_rows(period)
    # scikit-learn's OpenMP and BLAS threads follow n_jobs too: more threads than cores thrash.
    with threadpool_limits(limits=config.n_jobs):
        cv = cross_validate(
            learner, split.X_period, y, w, period["citizen_id"].to_numpy(), split.fold, config, progress
        )
        params = chosen_params(cv.trials)
        calibration = platt(cv.margin[labelled], y[labelled], w[labelled])
        oot_predictor, _ = learner.fit(split.X_period[labelled], y[labelled], w[labelled], params, None)
        oot_margin = oot_predictor.margin(split.X_test)
    cv_p = calibrated(cv.margin, calibration)
    oot_p = calibrated(oot_margin, calibration)
    # Fairness on the out-of-fold predictions: every training-period citizen, held out.
    cv_metrics, fairness = evaluation_metrics(period, cv_p, truth_of(period, truth), config, "cv", progress=progress)
    oot_metrics, _ = evaluation_metrics(
        test, oot_p, truth_of(test, truth), config, "oot", with_fairness=False, progress=progress
    )
    return FamilyResult(
        learner.name,
        params,
        calibration,
        cv.trials,
        cv_p,
        oot_p,
        oot_predictor,
        {**cv_metrics, **oot_metrics, "calibration_a": calibration[0], "calibration_b": calibration[1]},
        {"fairness_cv": fairness},
        time.perf_counter() - start,
    )


def fit_job_chance_model(
    frame: pd.DataFrame,
    params: Mapping[str, Any],
    calibration: tuple[float, float],
    config: TrainConfig,
    metrics: Mapping[str, float] | None = None,
) -> JobChanceModel:
    """The monotone XGBoost JobChanceModel (blended with its linear part where `params` give it a share)
    fitted on every row of `frame` with a label and a positive `ipcw_weight` (weighted by it: apply
    `with_weights` first), calibrated with `calibration`."""
    encoding = learn_encoding(frame)
    labelled = labelled_rows(frame)
    X = encode(frame[labelled], encoding.numeric, encoding.categories)
    learner = champion_learner(encoding.catalogue, config)
    predictor, _ = learner.fit(
        X, frame["label"].to_numpy(float)[labelled], frame["ipcw_weight"].to_numpy(float)[labelled], dict(params), None
    )
    linear, share = blend_of(predictor)
    return champion_model(predictor.booster, encoding, calibration, config, fingerprint(frame), metrics, linear, share)


def champion_model(
    booster: xgb.Booster,
    encoding: Encoding,
    calibration: tuple[float, float],
    config: TrainConfig,
    data_print: Mapping[str, Any],
    metrics: Mapping[str, float] | None = None,
    linear: LinearPart | None = None,
    linear_share: float = 0.0,
) -> JobChanceModel:
    """The JobChanceModel of a refitted booster (in memory or on Dask) and its linear part, if any, set
    to predict on one thread: one is fastest for a request of a few rows."""
    booster.set_param({"nthread": 1})
    return JobChanceModel(
        booster=booster,
        feature_names=encoding.feature_names,
        categories=encoding.categories,
        calibration=calibration,
        catalogue=encoding.catalogue,
        horizon_months=config.horizon_months,
        training_fingerprint=dict(data_print),
        metrics=dict(metrics or {}),
        linear=linear,
        linear_share=linear_share,
    )


@dataclass
class TrainOutcome:
    """What `bip train` did: the parent run, each family's metrics, the registered version."""

    parent_run_id: str
    runs: dict[str, str]
    metrics: dict[str, dict[str, float]]
    model_version: int
    champion_set: bool
    seconds: float
    model: JobChanceModel | None = None
    doubts: tuple[str, ...] = ()  # evaluation.champion_doubts of the registered version


def with_champion_candidate(config: TrainConfig) -> TrainConfig:
    """`config` with the champion candidate among its families (first when added): it is always registered."""
    if CHAMPION_CANDIDATE in config.models:
        return config
    return replace(config, models=(CHAMPION_CANDIDATE, *config.models))


def train(
    dataset: Dataset,
    tracking_uri: str,
    artifact_root: Path,
    experiment: str,
    model_name: str,
    config: TrainConfig,
    truth: pd.DataFrame | None = None,
    alias: str = "champion",
    progress: Progress = QUIET,
    lease_url: str | None = None,
) -> TrainOutcome:
    """Train every model family with the same folds, log each as a child run of one "train" run at
    `tracking_uri`, and register the refitted champion candidate (alias `alias` set only when the
    model has none).

    `truth` (the simulator's true probabilities) is used for evaluation only; `progress` shows each
    family and its folds; with `lease_url` (the store) the first alias is set under the registry lease.
    """
    start = time.perf_counter()
    config = with_champion_candidate(config)
    client = tracking_client(tracking_uri)
    project_run = os.environ.get("MLFLOW_RUN_ID")  # set by `mlflow run`: log into the run it made
    experiment_key = None if project_run else experiment_id(experiment, artifact_root, tracking_uri)
    split = make_split(dataset, config, progress)
    families = learners(split.encoding.catalogue, config)
    results: dict[str, FamilyResult] = {}
    runs: dict[str, str] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        started_run(client, experiment_key, "train", run_id=project_run) as run,
        system_metrics(run, tracking_uri),
    ):
        log_training_data(run, split, config, truth is not None, Path(tmp) / "parent")
        with progress.task("training: model families", total=len(families)) as task:
            for name, learner in families.items():
                with started_run(client, run.experiment_id, name, parent=run) as child:
                    results[name] = train_family(learner, split, truth, config, progress)
                    log_family(child, results[name], learner, split, config, Path(tmp) / name)
                    runs[name] = child.run_id
                    if name == CHAMPION_CANDIDATE:
                        chosen, champion_run = results[name], child
                        with step(progress, f"{name}: refit"):
                            calibration = ranking(chosen.calibration, "out-of-fold scores")
                            model = fit_job_chance_model(
                                split.full, chosen.params, calibration, config, headline(chosen.metrics)
                            )
                            logged = log_model(child, model, Path(tmp) / "pyfunc")
                task.advance()
        version, champion_set = register_champion_candidate(run, logged, model_name, tracking_uri, alias, lease_url)
        doubts = champion_doubts({n: r.metrics for n, r in results.items()}, CHAMPION_CANDIDATE)
        record_doubts(run, model_name, version, doubts, tracking_uri)
        log_comparison(run, {n: {**r.metrics, "seconds": r.seconds} for n, r in results.items()})
        facts = card_facts(
            model_name=model_name,
            version=version,
            made_by="train",
            run_id=champion_run.run_id,
            result=chosen,
            split=split,
            config=config,
            data_print=model.training_fingerprint,
        )
        log_model_card(champion_run, facts, tracking_uri)
        seconds = time.perf_counter() - start
        run.metrics({"seconds": seconds})
    return TrainOutcome(
        run.run_id,
        runs,
        {n: {**r.metrics, "seconds": r.seconds} for n, r in results.items()},
        version,
        champion_set,
        seconds,
        model,
        tuple(doubts),
    )
