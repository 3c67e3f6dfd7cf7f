"""Fit, validate, calibrate and register the job-chance model, tracking every step in MLflow.

Censoring: only labelled rows are fitted and scored, each with an inverse-probability-of-censoring
weight; a censored row has weight 0 and is never counted as a "no" (shared/data-contract.md, "The
prediction target"). The weights tell dropout from the extract date (`features.labels.follow_up_weights`, see there
why); `TrainConfig(weighting="pooled")` uses build_features' `ipcw_weight` column instead.

Validation that cannot leak:
- The out-of-time cutoff puts the last ~20 % of labelled measurements after it: the training period
  is the measurements before it, the test the measurements on or after it. (Labels of training rows
  near the cutoff use outcomes up to a horizon after it, as a model trained at the end of follow-up
  would; features never look past their own date.)
- Inside the training period, 5 folds grouped by citizen. In each fold a share of the training
  citizens is held out to pick the grid point and the number of trees (early stopping); the
  fold's held-out citizens are predicted by that model, so the out-of-fold predictions never saw
  their citizens, not even in the choice of hyperparameters.
- Platt calibration (a*margin + b) is fitted on the out-of-fold margins of the labelled rows,
  weighted by IPCW; it is applied to the out-of-time model (refitted on the whole training period)
  and to the final model, so the out-of-time test checks exactly this procedure.

The champion candidate (`xgboost_monotone`) is the same procedure applied to every labelled row of
the dataset, and is logged as an MLflow pyfunc (training/model.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from bip.errors import UserError
from features.build import build_features
from features.catalogue import BACKGROUND_LABELS, GROUP_LABELS, INDICATOR_CODES, indicator
from features.dataset import Dataset
from features.labels import follow_up_weights
from training import evaluation
from training.model import (
    JobChanceModel,
    encode,
    encoded_names,
    expit,
    learn_categories,
    model_catalogue,
    model_inputs,
)

MODEL_NAMES: tuple[str, ...] = ("xgboost_monotone", "xgboost", "logit", "background_only", "hist_gradient_boosting")
CHAMPION_CANDIDATE = "xgboost_monotone"
XGBOOST_GRID: tuple[dict[str, float], ...] = tuple(
    {"max_depth": depth, "learning_rate": rate} for depth in (3, 4) for rate in (0.05, 0.1)
)
LOGIT_GRID: tuple[dict[str, float], ...] = ({"C": 0.01}, {"C": 0.1})
HGB_GRID: tuple[dict[str, float], ...] = ({"max_leaf_nodes": 7, "learning_rate": 0.1},)
SENSITIVE_COLUMNS: tuple[str, ...] = ("gender", "origin", "age_band", "education")
MIN_LABELLED = 10


@dataclass(frozen=True)
class TrainConfig:
    """Everything training is parametrised by; the CLI fills it from its options."""

    horizon_months: int = 12
    seed: int = 2013
    folds: int = 5
    out_of_time_share: float = 0.2
    inner_share: float = 0.2
    max_rounds: int = 600
    early_stopping_rounds: int = 30
    n_boot: int = 200
    n_jobs: int = 1
    shap_rows: int = 2000
    fairness_top_share: float = 0.2
    models: tuple[str, ...] = MODEL_NAMES
    xgboost_grid: tuple[dict[str, float], ...] = XGBOOST_GRID
    weighting: str = "dropout"  # "dropout": `follow_up_weights`; "pooled": build_features' ipcw_weight


# --- learners ------------------------------------------------------------------------------------


class Predictor(Protocol):
    def margin(self, X: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Validation:
    """Rows held out to choose a grid point and stop boosting early."""

    X: np.ndarray
    y: np.ndarray
    w: np.ndarray


@dataclass(frozen=True)
class BoosterPredictor:
    booster: xgb.Booster

    def margin(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.inplace_predict(X, predict_type="margin"), dtype=float)


@dataclass(frozen=True)
class SklearnPredictor:
    estimator: Any
    columns: np.ndarray | None = None

    def margin(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.decision_function(X if self.columns is None else X[:, self.columns]))


@dataclass(frozen=True)
class Learner:
    """One model family: its grid and how to fit a grid point (early-stopped when `valid` is given).

    `fit` returns the predictor and the parameters it ended with (the number of trees when early
    stopping chose it), so that a refit without validation rows can reuse them.
    """

    name: str
    grid: tuple[dict[str, float], ...]
    fit: Callable[[np.ndarray, np.ndarray, np.ndarray, dict[str, Any], Validation | None], tuple[Predictor, dict]]
    booster: bool = False


def xgboost_params(monotone: Sequence[int] | None, config: TrainConfig) -> dict[str, Any]:
    """The fixed XGBoost parameters (a grid point goes on top); `monotone` +1 entries constrain those
    columns. One place for the in-memory learners and xgboost.dask (training/distributed.py)."""
    fixed: dict[str, Any] = {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "max_bin": 64,
        "min_child_weight": 2.0,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
        "nthread": config.n_jobs,
        "seed": config.seed,
    }
    if monotone is not None:
        fixed["monotone_constraints"] = "(" + ",".join(str(int(m)) for m in monotone) + ")"
    return fixed


def xgboost_learner(
    name: str, monotone: Sequence[int] | None, feature_names: Sequence[str], config: TrainConfig
) -> Learner:
    """XGBoost (hist) on the full matrix; `monotone` +1 entries constrain those columns."""
    fixed = xgboost_params(monotone, config)

    def fit(X, y, w, params, valid):
        # Matrices without feature names: XGBoost re-reads the names every round, which costs more than
        # the boosting itself at this size; the names are put on the finished booster instead.
        train = xgb.DMatrix(X, label=y, weight=w, missing=np.nan)
        grid_point = {k: v for k, v in params.items() if k != "n_estimators"}
        if valid is None:
            booster = xgb.train({**fixed, **grid_point}, train, num_boost_round=int(params["n_estimators"]))
            booster.feature_names = list(feature_names)
            return BoosterPredictor(booster), dict(params)
        check = xgb.DMatrix(valid.X, label=valid.y, weight=valid.w, missing=np.nan)
        booster = xgb.train(
            {**fixed, **grid_point},
            train,
            num_boost_round=config.max_rounds,
            evals=[(check, "valid")],
            early_stopping_rounds=config.early_stopping_rounds,
            verbose_eval=False,
        )
        rounds = booster.best_iteration + 1
        booster = booster[:rounds]
        booster.feature_names = list(feature_names)
        return BoosterPredictor(booster), {**grid_point, "n_estimators": rounds}

    return Learner(name, config.xgboost_grid, fit, booster=True)


def logit_learner(name: str, columns: np.ndarray | None) -> Learner:
    """Logistic regression with median imputation plus missing indicators and standardisation."""

    def fit(X, y, w, params, valid):
        pipeline: Pipeline = make_pipeline(
            SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(C=params["C"], max_iter=2000),
        )
        pipeline.fit(X if columns is None else X[:, columns], y, logisticregression__sample_weight=w)
        return SklearnPredictor(pipeline, columns), dict(params)

    return Learner(name, LOGIT_GRID, fit)


def quantile_edges(X: np.ndarray, bins: int) -> list[np.ndarray | None]:
    """Per column, inner quantile edges when it has more than `bins` distinct values, else None."""
    edges: list[np.ndarray | None] = []
    for column in X.T:
        known = column[~np.isnan(column)]
        many = len(known) and len(np.unique(known)) > bins
        edges.append(np.unique(np.quantile(known, np.linspace(0, 1, bins + 1)[1:-1])) if many else None)
    return edges


def quantized(X: np.ndarray, edges: Sequence[np.ndarray | None]) -> np.ndarray:
    """`X` with each column that has edges replaced by its bin number (NaN stays NaN)."""
    out = X.copy()
    for j, cut in enumerate(edges):
        if cut is not None:
            out[:, j] = np.where(np.isnan(X[:, j]), np.nan, np.searchsorted(cut, X[:, j], side="right"))
    return out


@dataclass(frozen=True)
class BinnedPredictor:
    estimator: Any
    edges: list[np.ndarray | None]

    def margin(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.decision_function(quantized(X, self.edges)))


def hgb_learner(name: str, config: TrainConfig, bins: int = 64) -> Learner:
    """scikit-learn's HistGradientBoostingClassifier, early-stopped on the validation rows.

    Columns are binned here first (unweighted quantiles of the fitting rows, as XGBoost's `hist`
    does): with sample weights, scikit-learn bins each many-valued column with one weighted
    percentile per bin edge, which takes longer than the boosting.
    """

    def fit(X, y, w, params, valid):
        edges = quantile_edges(X, bins)
        grid_point = {k: v for k, v in params.items() if k != "n_estimators"}
        common = {"random_state": config.seed, "l2_regularization": 1.0, **grid_point}
        if valid is None:
            model = HistGradientBoostingClassifier(max_iter=int(params["n_estimators"]), early_stopping=False, **common)
            model.fit(quantized(X, edges), y, sample_weight=w)
            return BinnedPredictor(model, edges), dict(params)
        model = HistGradientBoostingClassifier(
            max_iter=config.max_rounds,
            early_stopping=True,
            n_iter_no_change=config.early_stopping_rounds,
            scoring="loss",
            **common,
        )
        check = quantized(valid.X, edges)
        model.fit(quantized(X, edges), y, sample_weight=w, X_val=check, y_val=valid.y, sample_weight_val=valid.w)
        return BinnedPredictor(model, edges), {**grid_point, "n_estimators": int(model.n_iter_)}

    return Learner(name, HGB_GRID, fit)


def learners(catalogue: pd.DataFrame, config: TrainConfig) -> dict[str, Learner]:
    """The model families of a training run, by name, on the columns of `catalogue`."""
    names = list(catalogue["name"])
    background = np.flatnonzero(catalogue["kind"].to_numpy() == "background")
    made = {
        "xgboost_monotone": xgboost_learner("xgboost_monotone", catalogue["monotone"].tolist(), names, config),
        "xgboost": xgboost_learner("xgboost", None, names, config),
        "logit": logit_learner("logit", None),
        "background_only": logit_learner("background_only", background),
        "hist_gradient_boosting": hgb_learner("hist_gradient_boosting", config),
    }
    unknown = [m for m in config.models if m not in made]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(made)}")
    return {m: made[m] for m in config.models}


# --- validation ------------------------------------------------------------------------------------


def labelled_dates(frame: pd.DataFrame) -> pd.Series:
    """How many labelled rows (label known, weight positive) each measurement date has: additive, so
    the counts of disjoint row sets (Dask partitions) give the cutoff of all their rows."""
    return frame.loc[labelled_rows(frame), "measured_on"].value_counts()


def cutoff_of_counts(counts: Sequence[pd.Series], share: float) -> pd.Timestamp:
    """The first date of the last `share` of the labelled measurements, by date, from `labelled_dates`."""
    per_date = pd.concat(counts).groupby(level=0).sum().sort_index()
    total = int(per_date.sum())
    if total < MIN_LABELLED:
        raise UserError(f"only {total} labelled measurements: too few to train; is the follow-up long enough?")
    position = int(np.floor(total * (1 - share)))
    reached = np.cumsum(per_date.to_numpy())
    return pd.Timestamp(per_date.index[np.searchsorted(reached, position, side="right")]).normalize()


def out_of_time_cutoff(frame: pd.DataFrame, share: float) -> pd.Timestamp:
    """The first date of the last `share` of the labelled measurements with weight (by date)."""
    return cutoff_of_counts([labelled_dates(frame)], share)


def citizen_folds(citizen_ids: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of each row, all rows of a citizen in one fold."""
    fold = np.empty(len(citizen_ids), dtype=int)
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(citizen_ids, groups=citizen_ids)):
        fold[test] = k
    return fold


def held_out_citizens(citizen_ids: np.ndarray, share: float, seed: int) -> np.ndarray:
    """True for the rows of a random `share` of the citizens (at least one)."""
    citizens = np.unique(citizen_ids)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(citizens, size=max(1, round(share * len(citizens))), replace=False)
    return np.isin(citizen_ids, chosen)


def weighted_log_loss(y: np.ndarray, margin: np.ndarray, w: np.ndarray) -> float:
    """IPCW-weighted log loss of margins (log-odds)."""
    loss = np.logaddexp(0.0, margin) - y * margin
    return float(np.sum(w * loss) / np.sum(w))


@dataclass
class CrossValidation:
    """Out-of-fold margins for every row (labelled or not) and the inner-validation score of every
    grid point in every fold."""

    margin: np.ndarray
    trials: pd.DataFrame


def cross_validate(
    learner: Learner,
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    citizens: np.ndarray,
    fold: np.ndarray,
    config: TrainConfig,
) -> CrossValidation:
    """Nested grouped cross-validation: per fold, grid search with early stopping on held-out
    training citizens, then the best grid point's model predicts the fold's citizens."""
    margin = np.full(len(X), np.nan)
    usable = ~np.isnan(y) & (w > 0)
    trials = []
    for k in range(fold.max() + 1):
        train = np.flatnonzero(usable & (fold != k))
        inner = held_out_citizens(citizens[train], config.inner_share, config.seed + k)
        fit_rows, check_rows = train[~inner], train[inner]
        valid = Validation(X[check_rows], y[check_rows], w[check_rows])
        best_score, best = np.inf, None
        for point in learner.grid:
            predictor, params = learner.fit(X[fit_rows], y[fit_rows], w[fit_rows], dict(point), valid)
            score = weighted_log_loss(valid.y, predictor.margin(valid.X), valid.w)
            trials.append(
                {"fold": k, "grid_point": json.dumps(point, sort_keys=True), **params, "inner_log_loss": score}
            )
            if score < best_score:
                best_score, best = score, predictor
        test = fold == k
        margin[test] = best.margin(X[test])
    return CrossValidation(margin, pd.DataFrame(trials))


def chosen_params(trials: pd.DataFrame) -> dict[str, Any]:
    """The grid point with the lowest mean inner log loss over folds, with the median number of trees
    its folds stopped at (when it has one)."""
    mean = trials.groupby("grid_point")["inner_log_loss"].mean()
    point = mean.idxmin()
    params: dict[str, Any] = json.loads(point)
    if "n_estimators" in trials:
        params["n_estimators"] = int(np.median(trials.loc[trials["grid_point"] == point, "n_estimators"]))
    return params


def platt(margin: np.ndarray, y: np.ndarray, w: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Weighted logistic regression of y on the margin (Newton's method): (a, b) of a*margin + b.

    A slope that comes out negative (out-of-fold margins rank worse than chance, as a model without
    signal can) is set to 0, leaving the weighted base rate: calibration never reverses a ranking.
    """
    design = np.column_stack([margin, np.ones_like(margin)])
    coef = np.array([1.0, 0.0])
    for _ in range(iterations):
        p = expit(design @ coef)
        gradient = design.T @ (w * (y - p))
        hessian = (design * (w * p * (1 - p))[:, None]).T @ design + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        coef = coef + step
        if np.abs(step).max() < 1e-10:
            break
    if coef[0] > 0:
        return float(coef[0]), float(coef[1])
    rate = float(np.average(y, weights=w))
    return 0.0, float(np.log(rate / (1 - rate)))


def calibrated(margin: np.ndarray, calibration: tuple[float, float]) -> np.ndarray:
    a, b = calibration
    return expit(a * margin + b)


# --- data ------------------------------------------------------------------------------------------

WEIGHTINGS: tuple[str, ...] = ("dropout", "pooled")


def labelled_rows(frame: pd.DataFrame) -> np.ndarray:
    """Rows that take part in fitting and evaluation: a known label and a positive weight."""
    return (frame["label"].notna() & (frame["ipcw_weight"] > 0)).to_numpy()


def follow_up_columns(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The arrays `features.labels.follow_up_weights` reads, from a feature frame: measurement day
    number, time_to_event_days, event_observed and label."""
    return (
        frame["measured_on"].to_numpy().astype("datetime64[D]").astype(np.int64),
        frame["time_to_event_days"].to_numpy(dtype=float),
        frame["event_observed"].to_numpy(dtype=bool),
        frame["label"].to_numpy(dtype=float),
    )


def with_weights(frame: pd.DataFrame, horizon_months: int, weighting: str) -> pd.DataFrame:
    """`frame` with the `ipcw_weight` column that training and evaluation use (see WEIGHTINGS)."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose from {', '.join(WEIGHTINGS)}")
    if weighting == "pooled":
        return frame
    return frame.assign(ipcw_weight=follow_up_weights(*follow_up_columns(frame), horizon_months))


def fingerprint(frame: pd.DataFrame) -> dict[str, Any]:
    """Rows, citizens, labelled rows, date range and a content hash of a feature frame."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()
    dates = frame["measured_on"]
    return {
        "rows": len(frame),
        "citizens": int(frame["citizen_id"].nunique()),
        "labelled_rows": int(frame["label"].notna().sum()),
        "first_measured_on": str(dates.min().date()) if len(frame) else "",
        "last_measured_on": str(dates.max().date()) if len(frame) else "",
        "labelled_through": labelled_through(frame),
        "content_sha256": digest,
    }


def labelled_through(frame: pd.DataFrame) -> str:
    """The date of the latest measurement that takes part in fitting (label known, weight positive):
    what a model fitted on `frame` has learnt outcomes up to; "" when none does."""
    if "ipcw_weight" not in frame.columns:
        return ""
    dates = frame["measured_on"][labelled_rows(frame)]
    return str(dates.max().date()) if len(dates) else ""


def read_truth(path: Path) -> pd.DataFrame | None:
    """The simulator's true probabilities (measurement_id, true_probability), or None without them."""
    if not path.exists():
        return None
    truth = pd.read_csv(path, dtype={"measurement_id": str})
    return truth if "true_probability" in truth.columns else None


def truth_of(frame: pd.DataFrame, truth: pd.DataFrame | None) -> np.ndarray | None:
    """The true probability of each row of `frame` (NaN where unknown), or None without truth."""
    if truth is None:
        return None
    lookup = truth.set_index("measurement_id")["true_probability"]
    return frame["measurement_id"].map(lookup).to_numpy(dtype=float)


# --- metrics ---------------------------------------------------------------------------------------


def sensitive_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns the fairness report compares groups on."""
    groups = frame[["gender", "origin", "education"]].reset_index(drop=True)
    groups.insert(2, "age_band", evaluation.age_band(frame["age"].reset_index(drop=True)))
    return groups[list(SENSITIVE_COLUMNS)]


def truth_metrics(
    y: np.ndarray, w: np.ndarray, p: np.ndarray, true_p: np.ndarray, labelled: np.ndarray
) -> dict[str, float]:
    """How the predictions compare with the simulator's true probabilities.

    AUC and Brier of the truth on the same labelled rows and weights (the best any model can do),
    and over all rows, censored ones included: mean |pred - true|, mean predicted and mean true.
    """
    known = ~np.isnan(true_p)
    on_labels = evaluation.metric_values(y[labelled & known], true_p[labelled & known], w[labelled & known])
    return {
        "truth_roc_auc": on_labels["roc_auc"],
        "truth_brier": on_labels["brier"],
        "truth_ece": on_labels["ece"],
        "mean_abs_diff_truth": float(np.mean(np.abs(p[known] - true_p[known]))),
        "mean_predicted": float(np.mean(p[known])),
        "mean_true": float(np.mean(true_p[known])),
    }


def evaluation_metrics(
    frame: pd.DataFrame,
    p: np.ndarray,
    true_p: np.ndarray | None,
    config: TrainConfig,
    prefix: str,
    with_fairness: bool = True,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Metrics with bootstrap intervals over citizens on the labelled rows (IPCW-weighted), label
    rates, fairness headline gaps and table (`with_fairness`; else an empty table) and, with truth,
    the comparison with it.

    Keys are `<prefix>_<metric>`; `p` holds a prediction for every row of `frame`.
    """
    y = frame["label"].to_numpy(dtype=float)
    w = frame["ipcw_weight"].to_numpy(dtype=float)
    labelled = ~np.isnan(y) & (w > 0)
    if labelled.sum() == 0 or len(np.unique(y[labelled])) < 2:
        raise ValueError(f"{prefix}: no labelled rows of both outcomes to evaluate on")
    citizens = frame["citizen_id"].to_numpy()
    table = evaluation.metric_table(
        y[labelled], p[labelled], w[labelled], citizens[labelled], config.n_boot, config.seed
    )
    metrics = evaluation.flatten_metrics(table, prefix)
    fairness = pd.DataFrame()
    if with_fairness:
        threshold = evaluation.threshold_for_top_share(p[labelled], config.fairness_top_share)
        fairness, headline = evaluation.fairness_table(
            y[labelled], p[labelled], w[labelled], sensitive_groups(frame[labelled]), threshold
        )
        metrics.update({f"{prefix}_{k}": v for k, v in headline.items()})
    metrics.update(
        {
            f"{prefix}_rows": float(len(frame)),
            f"{prefix}_labelled_rows": float(labelled.sum()),
            f"{prefix}_observed_rate_naive": float(y[labelled].mean()),
            f"{prefix}_observed_rate_ipcw": float(np.average(y[labelled], weights=w[labelled])),
            f"{prefix}_mean_predicted_labelled": float(np.average(p[labelled], weights=w[labelled])),
        }
    )
    if true_p is not None:
        metrics.update({f"{prefix}_{k}": v for k, v in truth_metrics(y, w, p, true_p, labelled).items()})
    return metrics, fairness


def group_labels(catalogue: pd.DataFrame) -> dict[str, str]:
    """English labels of features and of the groups they belong to, for plots."""
    labels = dict(zip(catalogue["name"], catalogue["label_en"], strict=True))
    for code in catalogue["belongs_to"].unique():
        if code in INDICATOR_CODES:
            labels[code] = indicator(code).label_en
        elif code in GROUP_LABELS:
            labels[code] = GROUP_LABELS[code][1]
        elif code in BACKGROUND_LABELS:
            labels[code] = BACKGROUND_LABELS[code][1]
        else:
            labels[code] = str(code).replace("_", " ").capitalize()
    return labels


def explanation_artifacts(
    contributions: np.ndarray, X: np.ndarray, catalogue: pd.DataFrame, out_dir: Path
) -> tuple[pd.Series, list[Path]]:
    """SHAP plots and importance tables (per indicator/group and per feature) written to `out_dir`."""
    names = list(catalogue["name"])
    belongs_to = dict(zip(names, catalogue["belongs_to"], strict=True))
    features = contributions[:, : len(names)]
    paths = evaluation.shap_plots(features, X, names, belongs_to, group_labels(catalogue), out_dir)
    importance = evaluation.importance_by_indicator(features, names, belongs_to)
    importance.to_csv(out_dir / "importance_by_indicator.csv")
    per_feature = pd.Series(np.abs(features).mean(axis=0), index=pd.Index(names, name="feature"), name="importance")
    per_feature.sort_values(ascending=False).to_csv(out_dir / "importance_by_feature.csv")
    return importance, [*paths, out_dir / "importance_by_indicator.csv", out_dir / "importance_by_feature.csv"]


# --- one model family, end to end ----------------------------------------------------------------------


@dataclass
class Encoding:
    numeric: list[str]
    categories: dict[str, list[str]]
    catalogue: pd.DataFrame

    @property
    def feature_names(self) -> list[str]:
        return encoded_names(self.numeric, self.categories)


def learn_encoding(frame: pd.DataFrame) -> Encoding:
    """Input columns and one-hot categories learned from a feature frame."""
    numeric, categorical = model_inputs(list(frame.columns))
    categories = learn_categories(frame, categorical)
    return Encoding(numeric, categories, model_catalogue(numeric, categories))


@dataclass
class Split:
    """The frames of one training run: the training period (measured before the cutoff), the
    out-of-time rows and the whole dataset; matrices encoded with the training period's categories."""

    cutoff: pd.Timestamp
    period: pd.DataFrame
    test: pd.DataFrame
    full: pd.DataFrame
    encoding: Encoding
    X_period: np.ndarray
    X_test: np.ndarray
    fold: np.ndarray


def make_split(dataset: Dataset, config: TrainConfig) -> Split:
    """Features of the whole dataset, the out-of-time cutoff, the training period and its folds."""
    full = with_weights(
        build_features(dataset, horizon_months=config.horizon_months), config.horizon_months, config.weighting
    )
    return split_at(full, out_of_time_cutoff(full, config.out_of_time_share), config)


def split_at(full: pd.DataFrame, cutoff: pd.Timestamp, config: TrainConfig) -> Split:
    """The training period (measured before `cutoff`) with its folds and encoding, and the rows after it."""
    before = (full["measured_on"] < cutoff).to_numpy()
    period = full[before].reset_index(drop=True)
    test = full[~before].reset_index(drop=True)
    encoding = learn_encoding(period)
    fold = citizen_folds(period["citizen_id"].to_numpy(), config.folds, config.seed)
    return Split(
        cutoff,
        period,
        test,
        full,
        encoding,
        encode(period, encoding.numeric, encoding.categories),
        encode(test, encoding.numeric, encoding.categories),
        fold,
    )


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


def train_family(learner: Learner, split: Split, truth: pd.DataFrame | None, config: TrainConfig) -> FamilyResult:
    """Nested grouped CV, calibration and the out-of-time fit and evaluation of one model family."""
    start = time.perf_counter()
    period, test = split.period, split.test
    y = period["label"].to_numpy(dtype=float)
    w = period["ipcw_weight"].to_numpy(dtype=float)
    labelled = labelled_rows(period)
    # scikit-learn's OpenMP and BLAS threads follow n_jobs too: more threads than cores thrash.
    with threadpool_limits(limits=config.n_jobs):
        cv = cross_validate(learner, split.X_period, y, w, period["citizen_id"].to_numpy(), split.fold, config)
        params = chosen_params(cv.trials)
        calibration = platt(cv.margin[labelled], y[labelled], w[labelled])
        oot_predictor, _ = learner.fit(split.X_period[labelled], y[labelled], w[labelled], params, None)
        oot_margin = oot_predictor.margin(split.X_test)
    cv_p = calibrated(cv.margin, calibration)
    oot_p = calibrated(oot_margin, calibration)
    # Fairness on the out-of-fold predictions: every training-period citizen, held out.
    cv_metrics, fairness = evaluation_metrics(period, cv_p, truth_of(period, truth), config, "cv")
    oot_metrics, _ = evaluation_metrics(test, oot_p, truth_of(test, truth), config, "oot", with_fairness=False)
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
    """The monotone XGBoost JobChanceModel fitted on every row of `frame` with a label and a positive
    `ipcw_weight` (weighted by it: apply `with_weights` first), calibrated with `calibration`."""
    encoding = learn_encoding(frame)
    labelled = labelled_rows(frame)
    X = encode(frame[labelled], encoding.numeric, encoding.categories)
    learner = xgboost_learner(
        CHAMPION_CANDIDATE, encoding.catalogue["monotone"].tolist(), encoding.feature_names, config
    )
    predictor, _ = learner.fit(
        X, frame["label"].to_numpy(float)[labelled], frame["ipcw_weight"].to_numpy(float)[labelled], dict(params), None
    )
    booster = predictor.booster
    booster.set_param({"nthread": 1})
    return JobChanceModel(
        booster=booster,
        feature_names=encoding.feature_names,
        categories=encoding.categories,
        calibration=calibration,
        catalogue=encoding.catalogue,
        horizon_months=config.horizon_months,
        training_fingerprint=fingerprint(frame),
        metrics=dict(metrics or {}),
    )


def headline(metrics: Mapping[str, float]) -> dict[str, float]:
    """The metrics a model carries with it: point estimates of the main metrics, CV and out-of-time."""
    keys = [f"{split}_{m}" for split in ("cv", "oot") for m in evaluation.METRICS]
    return {k: float(metrics[k]) for k in keys if k in metrics}


# --- MLflow ------------------------------------------------------------------------------------------


def experiment_id(name: str, artifact_root: Path) -> str:
    """The id of experiment `name`, created with its artifacts under `artifact_root` when new."""
    import mlflow

    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return mlflow.create_experiment(name, artifact_location=(Path(artifact_root) / name).resolve().as_uri())


def log_family(result: FamilyResult, learner: Learner, split: Split, config: TrainConfig, out: Path) -> None:
    """Log one family's params, metrics and artifacts into the active (child) run."""
    import mlflow

    mlflow.log_params(
        {
            "model": result.name,
            "grid": json.dumps(list(learner.grid)),
            "chosen": json.dumps(result.params, sort_keys=True),
            "calibration": json.dumps(list(result.calibration)),
            "folds": config.folds,
            "inner_share": config.inner_share,
            "early_stopping_rounds": config.early_stopping_rounds,
            "max_rounds": config.max_rounds,
        }
    )
    mlflow.log_metrics({k: float(v) for k, v in result.metrics.items() if np.isfinite(v)})
    mlflow.log_metric("seconds", result.seconds)
    out.mkdir(parents=True, exist_ok=True)
    result.trials.to_csv(out / "grid_search.csv", index=False)
    for name, table in result.tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
    for part, frame, probability, title in (
        ("cv", split.period, result.cv_probability, "grouped CV (out of fold)"),
        ("oot", split.test, result.oot_probability, "out of time"),
    ):
        rows = labelled_rows(frame)
        evaluation.reliability_plot(
            frame["label"].to_numpy(float)[rows],
            probability[rows],
            frame["ipcw_weight"].to_numpy(float)[rows],
            out / f"reliability_{part}.png",
            title=f"{result.name}: {title}",
        )
    if learner.booster:
        rng = np.random.default_rng(config.seed)
        rows = np.sort(rng.choice(len(split.X_test), size=min(config.shap_rows, len(split.X_test)), replace=False))
        X = split.X_test[rows]
        booster = result.oot_predictor.booster
        raw = booster.predict(xgb.DMatrix(X, missing=np.nan), pred_contribs=True, validate_features=False)
        importance, _ = explanation_artifacts(raw * result.calibration[0], X, split.encoding.catalogue, out)
        mlflow.log_metrics({f"importance_{k}": float(v) for k, v in importance.items()})
    mlflow.log_artifacts(str(out))


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


def train(
    dataset: Dataset,
    tracking_uri: str,
    artifact_root: Path,
    experiment: str,
    model_name: str,
    config: TrainConfig,
    truth: pd.DataFrame | None = None,
    alias: str = "champion",
) -> TrainOutcome:
    """Train every model family with the same folds, log each as a child run of one "train" run, and
    register the refitted champion candidate (alias `alias` set only when the model has none).

    `truth` (the simulator's true probabilities) is used for evaluation only.
    """
    import mlflow

    from training.model import input_example, log_pyfunc

    start = time.perf_counter()
    if CHAMPION_CANDIDATE not in config.models:
        config = replace(config, models=(CHAMPION_CANDIDATE, *config.models))
    mlflow.set_tracking_uri(tracking_uri)
    run_id = os.environ.get("MLFLOW_RUN_ID")  # set by `mlflow run`: log into the run it made
    if run_id is None:
        mlflow.set_experiment(experiment_id=experiment_id(experiment, artifact_root))
    split = make_split(dataset, config)
    families = learners(split.encoding.catalogue, config)
    runs: dict[str, str] = {}
    results: dict[str, FamilyResult] = {}
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id, run_name="train") as parent:
        tmp_dir = Path(tmp)
        data_print = fingerprint(split.full)
        mlflow.log_params(
            {
                "horizon_months": config.horizon_months,
                "seed": config.seed,
                "folds": config.folds,
                "out_of_time_cutoff": str(split.cutoff.date()),
                "out_of_time_share": config.out_of_time_share,
                "n_boot": config.n_boot,
                "weighting": config.weighting,
                "models": ",".join(config.models),
                "xgboost_grid": json.dumps(list(config.xgboost_grid)),
                **{f"data_{k}": v for k, v in data_print.items()},
                "training_period_rows": len(split.period),
                "training_period_labelled_rows": int(labelled_rows(split.period).sum()),
                "out_of_time_rows": len(split.test),
                "truth_available": truth is not None,
            }
        )
        (tmp_dir / "parent").mkdir()
        split.encoding.catalogue.to_csv(tmp_dir / "parent" / "feature_catalogue.csv", index=False)
        (tmp_dir / "parent" / "data_fingerprint.json").write_text(json.dumps(data_print, indent=1))
        mlflow.log_artifacts(str(tmp_dir / "parent"))
        for name, learner in families.items():
            with mlflow.start_run(run_name=name, nested=True) as child:
                result = train_family(learner, split, truth, config)
                log_family(result, learner, split, config, tmp_dir / name)
                results[name], runs[name] = result, child.info.run_id
                if name == CHAMPION_CANDIDATE:
                    model = fit_job_chance_model(
                        split.full, result.params, result.calibration, config, headline(result.metrics)
                    )
                    info = log_pyfunc(model, "model", input_example(model, split.full), tmp_dir / "pyfunc")
        version, champion_set = register_champion_candidate(info, model_name, tracking_uri, alias)
        seconds = time.perf_counter() - start
        mlflow.log_metric("seconds", seconds)
    return TrainOutcome(
        parent.info.run_id,
        runs,
        {n: {**r.metrics, "seconds": r.seconds} for n, r in results.items()},
        version,
        champion_set,
        seconds,
        model,
    )


def register_champion_candidate(info: Any, model_name: str, tracking_uri: str, alias: str) -> tuple[int, bool]:
    """Register the model logged in the active run (its ModelInfo) as a new version of `model_name`, set
    `alias` on it only when the model has none yet, and tag the run; the version and whether it was set."""
    import mlflow

    from training import registry

    run_id = mlflow.active_run().info.run_id
    version = registry.register(info, model_name, tags={"train_run": run_id}, tracking_uri=tracking_uri)
    champion_set = registry.champion_version(model_name, alias=alias, tracking_uri=tracking_uri) is None
    if champion_set:
        registry.set_champion(model_name, version.version, alias=alias, tracking_uri=tracking_uri)
    mlflow.set_tags({"registered_version": str(version.version), "champion_set": str(champion_set)})
    return int(version.version), champion_set


SUMMARY_COLUMNS: dict[str, str] = {
    "cv_roc_auc": "CV AUC",
    "cv_brier": "CV Brier",
    "cv_ece": "CV ECE",
    "oot_roc_auc": "OOT AUC",
    "oot_brier": "OOT Brier",
    "oot_ece": "OOT ECE",
    "cv_truth_roc_auc": "truth AUC",
    "cv_mean_abs_diff_truth": "|p-true|",
    "seconds": "s",
}


def summary_table(metrics: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """One row per model family with the main metrics, short column names (columns no family has
    are left out)."""
    rows = {
        name: {label: values.get(key, np.nan) for key, label in SUMMARY_COLUMNS.items()}
        for name, values in metrics.items()
    }
    return pd.DataFrame(rows).T.dropna(axis=1, how="all")
