"""Validation that cannot leak: the out-of-time cutoff, citizen folds, nested grouped
cross-validation and the split of a feature frame into training period and out-of-time rows.

- The out-of-time cutoff puts the last ~20 % of labelled measurements after it: the training period
  is the measurements before it, the test the measurements on or after it. (Labels of training rows
  near the cutoff use outcomes up to a horizon after it, as a model trained at the end of follow-up
  would; features never look past their own date.)
- Inside the training period, 5 folds grouped by citizen. In each fold a share of the training
  citizens is held out to pick the grid point and the number of trees (early stopping); the
  fold's held-out citizens are predicted by that model, so the out-of-fold predictions never saw
  their citizens, not even in the choice of hyperparameters.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from bip.errors import UserError
from bip.progress import QUIET, Progress
from features.build import build_features
from features.dataset import Dataset
from training.config import TrainConfig
from training.data import labelled_rows, with_weights
from training.learners import FIT_CHOSEN, Learner, Validation
from training.linear import weighted_log_loss
from training.model import encode, encoded_names, learn_categories, model_catalogue, model_inputs

MIN_LABELLED = 10


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


def citizen_codes(citizen_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's position among the sorted distinct citizens, and those citizens (`np.unique`'s order).

    By hashing, not by sorting every row: `np.unique` and `np.isin` on the rows' string ids sort them
    all by Python comparison, which grew faster than the rows and dominated the fold bookkeeping."""
    codes, citizens = pd.factorize(np.asarray(citizen_ids), sort=True)
    return codes, np.asarray(citizens)


def citizen_folds(citizen_ids: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of each row, all rows of a citizen in one fold.

    GroupKFold is given the citizens' integer codes in sorted order, so it shuffles and splits the same
    citizens into the same folds as on the ids themselves."""
    codes, _ = citizen_codes(citizen_ids)
    fold = np.empty(len(citizen_ids), dtype=int)
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(codes, groups=codes)):
        fold[test] = k
    return fold


def held_out_citizens(citizen_ids: np.ndarray, share: float, seed: int) -> np.ndarray:
    """True for the rows of a random `share` of the citizens (at least one)."""
    codes, citizens = citizen_codes(citizen_ids)
    rng = np.random.default_rng(seed)
    # Drawing positions draws the same citizens as `rng.choice(citizens, ...)` would.
    chosen = rng.choice(len(citizens), size=max(1, round(share * len(citizens))), replace=False)
    member = np.zeros(len(citizens), dtype=bool)
    member[chosen] = True
    return member[codes]


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
    progress: Progress = QUIET,
) -> CrossValidation:
    """Nested grouped cross-validation: per fold, grid search with early stopping on held-out
    training citizens, then the best grid point's model predicts the fold's citizens."""
    margin = np.full(len(X), np.nan)
    usable = ~np.isnan(y) & (w > 0)
    trials = []
    folds = fold.max() + 1
    with progress.task(f"{learner.name}: folds", total=folds) as task:
        for k in range(folds):
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
            task.advance()
    return CrossValidation(margin, pd.DataFrame(trials))


def chosen_params(trials: pd.DataFrame) -> dict[str, Any]:
    """The grid point with the lowest mean inner log loss over folds, with the median over its folds of
    what each fit chose itself (`FIT_CHOSEN`: the number of trees early stopping kept, the linear part's
    share and penalty), where the family has them."""
    mean = trials.groupby("grid_point")["inner_log_loss"].mean()
    point = mean.idxmin()
    params: dict[str, Any] = json.loads(point)
    folds = trials[trials["grid_point"] == point]
    for name in FIT_CHOSEN:
        if name in folds:
            median = float(np.median(folds[name]))
            params[name] = int(median) if name == "n_estimators" else median
    return params


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


def make_split(dataset: Dataset, config: TrainConfig, progress: Progress = QUIET) -> Split:
    """Features of the whole dataset, the out-of-time cutoff, the training period and its folds."""
    full = with_weights(
        build_features(dataset, horizon_months=config.horizon_months, progress=progress),
        config.horizon_months,
        config.weighting,
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
