"""A monotone, weighted, L2-penalised logistic regression on the model matrix: the linear part of the
champion, blended with its trees on the log-odds scale.

Why: the simulated truth is close to linear in the answers, and at 10x BIP's size a logistic
regression ranks as well as the boosted trees and the two blended rank better than either (issue 18,
docs/training.md). The trees keep what is not linear; the linear part extrapolates smoothly.

The fit imputes each column's median, adds a missing indicator where a column has gaps, standardises
both and minimises the weighted log loss plus ||beta||^2 / (2 C) (scikit-learn's penalty) with
L-BFGS-B, the slopes of the monotone (+1) columns bounded below by 0, so that a higher score never
lowers the chance here either. The result is stored per matrix column on the raw scale
(`LinearPart`): a column's contribution is `slope * x + observed` when x is given and `missing` when
it is not, so the log-odds (intercept + the contributions) and the exact per-feature attribution
(its SHAP values for independent features, against the training rows' mean) are one numpy expression.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize


def weighted_log_loss(y: np.ndarray, margin: np.ndarray, w: np.ndarray) -> float:
    """IPCW-weighted log loss of margins (log-odds)."""
    loss = np.logaddexp(0.0, margin) - y * margin
    return float(np.sum(w * loss) / np.sum(w))


@dataclass(frozen=True)
class LinearPart:
    """Log-odds = intercept + the sum over columns of `slope * x + observed` (x given) or `missing`."""

    intercept: float
    slope: np.ndarray
    observed: np.ndarray
    missing: np.ndarray

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Each column's share of the log-odds (rows x columns); the intercept is the base value."""
        X = np.asarray(X, dtype=float)
        return np.where(np.isnan(X), self.missing, self.slope * X + self.observed)

    def margin(self, X: np.ndarray) -> np.ndarray:
        return self.intercept + self.contributions(X).sum(axis=1)

    def to_json(self) -> dict[str, Any]:
        return {
            "intercept": float(self.intercept),
            "slope": self.slope.tolist(),
            "observed": self.observed.tolist(),
            "missing": self.missing.tolist(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LinearPart:
        arrays = {k: np.asarray(data[k], dtype=float) for k in ("slope", "observed", "missing")}
        return cls(float(data["intercept"]), **arrays)


def mixed(trees: np.ndarray, linear: np.ndarray, share: float) -> np.ndarray:
    """The blend of the trees' and the linear part's margins: (1 - share) * trees + share * linear."""
    return (1.0 - share) * trees + share * linear


def blended(trees: np.ndarray, part: LinearPart | None, share: float, X: np.ndarray) -> np.ndarray:
    """The trees' margins (rows) or contributions (rows x columns + 1, the base value last) on `X`, blended
    with `part`'s: (1 - share) * the trees' + share * the linear part's; the trees' alone without a part."""
    if part is None:
        return trees
    if trees.ndim == 1:
        return mixed(trees, part.margin(X), share)
    out = (1.0 - share) * trees
    out[:, :-1] += share * part.contributions(X)
    out[:, -1] += share * part.intercept
    return out


@dataclass(frozen=True)
class _Design:
    """The standardised design of a matrix: imputed values, then the indicators of gappy columns."""

    median: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    gappy: np.ndarray  # the columns with a missing indicator
    share_missing: np.ndarray  # their indicators' mean and scale
    scale_missing: np.ndarray


def _design(columns: np.ndarray) -> _Design:
    """The standardisation of a matrix given column by column (`columns` = X.T, C-contiguous: a column
    is a contiguous row of it, which makes these column statistics several times faster)."""
    missing = np.isnan(columns)
    median = np.array([np.median(c[~m]) if not m.all() else 0.0 for c, m in zip(columns, missing, strict=True)])
    imputed = np.where(missing, median[:, None], columns)
    gappy = np.flatnonzero(missing.any(axis=1))
    return _Design(median, *_mean_and_scale(imputed), gappy, *_mean_and_scale(missing[gappy].astype(float)))


def _mean_and_scale(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's (row's of `columns`) mean and standard deviation, 1 where it is constant."""
    mean = columns.mean(axis=1)
    squares = np.square(columns - mean[:, None])
    scale = np.sqrt(squares.sum(axis=1) / max(columns.shape[1], 1))
    return mean, np.where(scale > 0, scale, 1.0)


def _standardised(columns: np.ndarray, d: _Design) -> np.ndarray:
    """The design matrix (rows x terms, column-major): the imputed values, then the gappy columns'
    indicators, each centred and scaled."""
    missing = np.isnan(columns)
    k = len(columns)
    Z = np.empty((k + len(d.gappy), columns.shape[1]))
    Z[:k] = np.where(missing, d.median[:, None], columns)
    Z[:k] -= d.mean[:, None]
    Z[:k] /= d.scale[:, None]
    Z[k:] = missing[d.gappy]
    Z[k:] -= d.share_missing[:, None]
    Z[k:] /= d.scale_missing[:, None]
    return Z.T


def fit_linear(
    X: np.ndarray, y: np.ndarray, w: np.ndarray, C: float, monotone: Sequence[int] | None = None
) -> LinearPart:
    """The penalised logistic regression of `y` on `X` with row weights `w` (rows with weight 0 take no
    part); `monotone` +1 entries keep those columns' slopes at 0 or above."""
    return fit_linear_path(X, y, w, (C,), monotone)[0]


def fit_linear_path(
    X: np.ndarray, y: np.ndarray, w: np.ndarray, cs: Sequence[float], monotone: Sequence[int] | None = None
) -> list[LinearPart]:
    """`fit_linear` for each penalty C in `cs` (in that order), sharing the design: each fit starts from
    the one with the next stronger penalty, which spares some of the iterations of the weaker ones."""
    y, w = np.asarray(y, dtype=float), np.asarray(w, dtype=float)
    taking = w > 0
    y, w = y[taking], w[taking] / w[taking].sum()
    columns = np.ascontiguousarray(np.asarray(X)[taking].T, dtype=float)  # one float64 copy, column by column
    d = _design(columns)
    Z = _standardised(columns, d)
    del columns
    up = [] if monotone is None else [j for j, m in enumerate(monotone) if m > 0]
    bounds = [(None, None)] * (1 + Z.shape[1])
    for j in up:
        bounds[1 + j] = (0.0, None)
    theta = np.zeros(1 + Z.shape[1])
    theta[0] = np.log(max(np.sum(w * y), 1e-9) / max(np.sum(w * (1 - y)), 1e-9))
    parts: dict[int, LinearPart] = {}
    for k in sorted(range(len(cs)), key=lambda k: cs[k]):
        penalty = 1.0 / (2.0 * cs[k] * len(y))  # scikit-learn's C on the loss summed over rows, here averaged
        # Tight tolerances: the optimum, not the path to it, decides the last digits (BLAS may sum differently).
        tight = {"maxiter": 5000, "ftol": 1e-13, "gtol": 1e-9}
        theta = minimize(
            _penalised_loss, theta, args=(Z, y, w, penalty), jac=True, method="L-BFGS-B", bounds=bounds, options=tight
        ).x
        parts[k] = _on_raw_scale(theta, d, len(d.median))
    return [parts[k] for k in range(len(cs))]


def _penalised_loss(
    theta: np.ndarray, Z: np.ndarray, y: np.ndarray, w: np.ndarray, penalty: float
) -> tuple[float, np.ndarray]:
    """The weighted log loss (weights summing to 1) plus penalty * ||beta||^2, and its gradient."""
    margin = theta[0] + Z @ theta[1:]
    residual = w * (1.0 / (1.0 + np.exp(-margin)) - y)
    value = float(np.sum(w * (np.logaddexp(0.0, margin) - y * margin)) + penalty * theta[1:] @ theta[1:])
    return value, np.concatenate([[residual.sum()], Z.T @ residual + 2.0 * penalty * theta[1:]])


def _on_raw_scale(theta: np.ndarray, d: _Design, n_columns: int) -> LinearPart:
    """The fit on the standardised design as per-column terms of the raw matrix."""
    beta, gamma = theta[1 : 1 + n_columns], theta[1 + n_columns :]
    slope = beta / d.scale
    indicator = np.zeros(n_columns)
    indicator_mean = np.zeros(n_columns)
    indicator[d.gappy] = gamma / d.scale_missing
    indicator_mean[d.gappy] = d.share_missing
    return LinearPart(
        intercept=float(theta[0]),
        slope=slope,
        observed=-slope * d.mean - indicator * indicator_mean,
        missing=slope * (d.median - d.mean) + indicator * (1.0 - indicator_mean),
    )
