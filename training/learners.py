"""The model families training compares, each a `Learner`: its grid and how to fit one grid point,
early-stopped on validation rows when they are given.

The champion candidate's trees are blended with a monotone logistic regression (training/linear.py,
`BlendedPredictor`): per grid point, the linear part's penalty and its share of the log-odds are chosen
on the same held-out citizens that stop the boosting early.

The XGBoost parameters (`xgboost_params`) and the early-stopped boosting (`boosted`) are shared with
xgboost.dask (training/distributed.py), so both paths fit the champion candidate the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from training.config import CHAMPION_CANDIDATE, PLAIN, TrainConfig
from training.data import plain_columns
from training.linear import LinearPart, blended, fit_linear, fit_linear_path, weighted_log_loss

LOGIT_GRID: tuple[dict[str, float], ...] = ({"C": 0.01}, {"C": 0.1})
HGB_GRID: tuple[dict[str, float], ...] = ({"max_leaf_nodes": 7, "learning_rate": 0.1},)


class Predictor(Protocol):
    def margin(self, X: np.ndarray) -> np.ndarray: ...


# The parameters a fit chooses itself (besides a grid point's): a refit without validation rows reuses them.
BLEND_CHOSEN: tuple[str, ...] = ("linear_share", "linear_c")
FIT_CHOSEN: tuple[str, ...] = ("n_estimators", *BLEND_CHOSEN)


@dataclass(frozen=True)
class Validation:
    """Rows held out to choose a grid point and stop boosting early."""

    X: np.ndarray
    y: np.ndarray
    w: np.ndarray


@dataclass(frozen=True)
class BoosterPredictor:
    booster: xgb.Booster
    columns: np.ndarray | None = None  # the matrix columns the booster was fitted on (None: all)

    def margin(self, X: np.ndarray) -> np.ndarray:
        X = X if self.columns is None else X[:, self.columns]
        return np.asarray(self.booster.inplace_predict(X, predict_type="margin"), dtype=float)

    def used(self, X: np.ndarray) -> np.ndarray:
        """The columns of a full matrix the booster was fitted on."""
        return X if self.columns is None else X[:, self.columns]

    def own_contributions(self, X: np.ndarray) -> np.ndarray:
        """TreeSHAP contributions to the margin on the booster's own columns (+ 1, the base value last)."""
        matrix = xgb.DMatrix(self.used(X), missing=np.nan)
        return np.asarray(self.booster.predict(matrix, pred_contribs=True, validate_features=False), dtype=float)

    def full_width(self, own: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Contributions on the booster's own columns spread over all columns of `X` (0 elsewhere)."""
        if self.columns is None:
            return own
        out = np.zeros((len(X), X.shape[1] + 1))
        out[:, self.columns], out[:, -1] = own[:, :-1], own[:, -1]
        return out

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """TreeSHAP contributions to the margin (rows x all matrix columns + 1, the base value last)."""
        return self.full_width(self.own_contributions(X), X)


@dataclass(frozen=True)
class BlendedPredictor:
    """Trees and a linear part on the same columns, blended on the log-odds:
    (1 - share) * the trees' margin + share * the linear part's."""

    trees: BoosterPredictor
    linear: LinearPart
    share: float

    @property
    def booster(self) -> xgb.Booster:
        return self.trees.booster

    def margin(self, X: np.ndarray) -> np.ndarray:
        return blended(self.trees.margin(X), self.linear, self.share, self.trees.used(X))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Exact contributions to the blended margin: the trees' TreeSHAP and the linear part's, weighted."""
        own = blended(self.trees.own_contributions(X), self.linear, self.share, self.trees.used(X))
        return self.trees.full_width(own, X)


def blend_of(predictor: Predictor) -> tuple[LinearPart | None, float]:
    """The linear part and its share of a fitted predictor (None, 0 for trees alone)."""
    if isinstance(predictor, BlendedPredictor):
        return predictor.linear, predictor.share
    return None, 0.0


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
    rows: str = "weighted"  # training.data.ROW_POLICIES: which rows and weights the family learns from


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


@dataclass(frozen=True)
class Boosted:
    """A booster cut at the round it ended with, that round count, and (early-stopped) its validation
    log loss there."""

    booster: xgb.Booster
    rounds: int
    valid_log_loss: float = float("nan")


def boosted(
    train: Callable[..., Any], params: Mapping[str, Any], matrix: Any, config: TrainConfig, check: Any = None
) -> Boosted:
    """The early-stopped fit, for xgboost.train and xgboost.dask.train (bound to its client) alike.

    With `check` (a matrix of held-out rows): boosted up to `config.max_rounds`, stopped when the
    weighted log loss on `check` has not improved for `config.early_stopping_rounds` rounds, and cut
    at its best round. Without: `params["n_estimators"]` rounds (a refit with the chosen count).
    """
    grid_point = {k: v for k, v in params.items() if k != "n_estimators"}
    if check is None:
        result = train(grid_point, matrix, num_boost_round=int(params["n_estimators"]))
    else:
        result = train(
            grid_point,
            matrix,
            num_boost_round=config.max_rounds,
            evals=[(check, "valid")],
            early_stopping_rounds=config.early_stopping_rounds,
            verbose_eval=False,
        )
    booster = result["booster"] if isinstance(result, dict) else result  # xgboost.dask adds the history
    if check is None:
        return Boosted(booster, booster.num_boosted_rounds())
    rounds = booster.best_iteration + 1
    return Boosted(booster[:rounds], rounds, float(booster.best_score))


def tree_weights(w: np.ndarray, power: float) -> np.ndarray:
    """The weights the trees fit on: censoring weights to `power` (0: 1 for every row that takes part)."""
    return np.where(w > 0, np.power(np.where(w > 0, w, 1.0), power), 0.0)


def xgboost_learner(
    name: str,
    monotone: Sequence[int] | None,
    feature_names: Sequence[str],
    config: TrainConfig,
    columns: np.ndarray | None = None,
    weight_power: float | None = None,
    linear: bool = False,
) -> Learner:
    """XGBoost (hist); `monotone` +1 entries constrain those columns. With `columns`, on those matrix
    columns only (`monotone` and `feature_names` then describe the full matrix). The trees fit on the
    weights to `weight_power` (default `config.tree_weight_power`, see `tree_weights`). With `linear`
    (and a positive share in `config.linear_shares`), blended with a monotone logistic regression on
    the same columns and weights (`BlendedPredictor`)."""
    power = config.tree_weight_power if weight_power is None else weight_power
    names = list(feature_names) if columns is None else [feature_names[j] for j in columns]
    kept = None if monotone is None or columns is None else [monotone[j] for j in columns]
    fixed = xgboost_params(monotone if columns is None else kept, config)
    blended = linear and any(share > 0 for share in config.linear_shares)
    linear_fits = _LinearFits(monotone if columns is None else kept, config.linear_cs)

    def fit(X, y, w, params, valid):
        X = X if columns is None else X[:, columns]
        # Matrices without feature names: XGBoost re-reads the names every round, which costs more than
        # the boosting itself at this size; the names are put on the finished booster instead.
        train = xgb.DMatrix(X, label=y, weight=tree_weights(w, power), missing=np.nan)
        check = None
        if valid is not None:
            check_X = valid.X if columns is None else valid.X[:, columns]
            check = xgb.DMatrix(check_X, label=valid.y, weight=tree_weights(valid.w, power), missing=np.nan)
        tree_params = {k: v for k, v in params.items() if k not in BLEND_CHOSEN}
        fitted = boosted(xgb.train, {**fixed, **tree_params}, train, config, check)
        fitted.booster.feature_names = names
        grid_point = {k: v for k, v in params.items() if k not in FIT_CHOSEN}
        trees = BoosterPredictor(fitted.booster)
        chosen = {**grid_point, "n_estimators": fitted.rounds}
        if not blended:
            return _on_columns(trees, columns), chosen
        weights = tree_weights(w, power)
        if valid is None:
            share, c = float(params.get("linear_share", 0.0)), float(params.get("linear_c", config.linear_cs[0]))
            part = fit_linear(X, y, weights, c, linear_fits.monotone) if share > 0 else None
        else:
            checked = Validation(check_X, valid.y, valid.w)
            c, part = linear_fits.best(X, y, weights, checked)
            share = min(
                config.linear_shares,
                key=lambda s: weighted_log_loss(checked.y, _blend(trees, part, s).margin(check_X), checked.w),
            )
        chosen = {**chosen, "linear_share": share, "linear_c": c}
        return _on_columns(_blend(trees, part, share), columns), chosen

    return Learner(name, config.xgboost_grid, fit, booster=True)


def _blend(trees: BoosterPredictor, part: LinearPart | None, share: float) -> Predictor:
    return trees if part is None or share == 0 else BlendedPredictor(trees, part, share)


def _on_columns(predictor: Predictor, columns: np.ndarray | None) -> Predictor:
    """The predictor (fitted on the matrix columns `columns`) reading those columns of a full matrix."""
    if columns is None:
        return predictor
    if isinstance(predictor, BlendedPredictor):
        return BlendedPredictor(BoosterPredictor(predictor.booster, columns), predictor.linear, predictor.share)
    return BoosterPredictor(predictor.booster, columns)


@dataclass
class _LinearFits:
    """The linear part for each penalty C, fitted once per training set and reused by every grid point
    of the trees (they share the rows and the held-out citizens)."""

    monotone: Sequence[int] | None
    cs: Sequence[float]
    _key: bytes = b""
    _best: tuple[float, LinearPart] | None = None

    def best(self, X: np.ndarray, y: np.ndarray, w: np.ndarray, valid: Validation) -> tuple[float, LinearPart]:
        """The C (and its fit) with the lowest weighted log loss on `valid`."""
        key = _digest(X, y, w)
        if key != self._key or self._best is None:
            fits = list(zip(self.cs, fit_linear_path(X, y, w, self.cs, self.monotone), strict=True))
            self._key = key
            self._best = min(fits, key=lambda f: weighted_log_loss(valid.y, f[1].margin(valid.X), valid.w))
        return self._best


def _digest(*arrays: np.ndarray) -> bytes:
    """A digest of the arrays' shapes and values: the same training set, and only it, gives the same one."""
    h = hashlib.blake2b(digest_size=16)
    for array in arrays:
        h.update(repr(array.shape).encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h.digest()


def plain_learner(catalogue: pd.DataFrame, config: TrainConfig) -> Learner:
    """The plain family, the way most teams start: XGBoost without weights or monotone constraints on the
    latest scores, their change since the previous measurement and the background, learnt from every row
    with a known label (censored rows dropped). Where `training.train` passes it censoring weights (`bip
    train`'s rows), it fits them unweighted."""
    names = list(catalogue["name"])
    made = xgboost_learner(PLAIN, None, names, config, columns=plain_columns(catalogue), weight_power=0.0)
    return Learner(PLAIN, made.grid, made.fit, booster=True, rows="known")


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


def champion_learner(catalogue: pd.DataFrame, config: TrainConfig, **changes: Any) -> Learner:
    """The champion candidate's family: monotone XGBoost on every column, blended with a monotone
    logistic regression (`config.linear_shares`); `changes` go to `xgboost_learner`."""
    return xgboost_learner(
        CHAMPION_CANDIDATE, catalogue["monotone"].tolist(), list(catalogue["name"]), config, linear=True, **changes
    )


def learners(catalogue: pd.DataFrame, config: TrainConfig) -> dict[str, Learner]:
    """The model families of a training run, by name, on the columns of `catalogue`."""
    names = list(catalogue["name"])
    background = np.flatnonzero(catalogue["kind"].to_numpy() == "background")
    made = {
        CHAMPION_CANDIDATE: champion_learner(catalogue, config),
        "xgboost": xgboost_learner("xgboost", None, names, config),
        "logit": logit_learner("logit", None),
        "background_only": logit_learner("background_only", background),
        "hist_gradient_boosting": hgb_learner("hist_gradient_boosting", config),
        PLAIN: plain_learner(catalogue, config),
    }
    unknown = [m for m in config.models if m not in made]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(made)}")
    return {m: made[m] for m in config.models}
