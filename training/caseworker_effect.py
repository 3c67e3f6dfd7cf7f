"""A shrunk shift of the log-odds per caseworker, learnt from a fitted model's residuals (issue 18).

Citizens of some caseworkers get a job more often than their answers predict. The feature build has
no column for that: the caseworker features are the caseworker's job orientation and changes of
caseworker. This step estimates, per caseworker, one ridge-penalised intercept on the log-odds scale
from the weighted residuals y - p of a fitted, calibrated model (one Newton step from zero):

    shift_c = sum_c w (y - p) / (sum_c w p (1 - p) + shrinkage)

A caseworker with few labelled rows gets a shift near 0; an unknown caseworker gets 0. The shrinkage
is chosen on held-out citizens by weighted log loss, infinity (no shifts) among the choices, so the
step can only be kept where it pays on citizens it did not see.

It is a research step, measured in the ablation (benchmarks/bench_ablation.py, variant
`caseworker_effect`) and not part of `bip train`: a shift per caseworker is an estimate of that
employee's results, personal data of the caseworker (docs/training.md says what deploying it needs).
The functions take integer codes, never ids, and return arrays: nothing here is logged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.linear import weighted_log_loss
from training.model import expit

SHRINKAGES: tuple[float, ...] = (10.0, 20.0, 40.0, 80.0, 160.0, np.inf)


def caseworker_shifts(codes: np.ndarray, y: np.ndarray, p: np.ndarray, w: np.ndarray, shrinkage: float) -> np.ndarray:
    """The shift of each caseworker code 0..max(codes) from rows with labels `y`, calibrated
    probabilities `p` and weights `w` (codes < 0 are rows without a caseworker and take no part)."""
    if shrinkage <= 0:
        raise ValueError("shrinkage must be positive: it is the ridge penalty that pulls each shift to 0")
    codes = np.asarray(codes, dtype=np.int64)
    known = codes >= 0
    size = int(codes.max()) + 1 if known.any() else 0
    if np.isinf(shrinkage) or size == 0:
        return np.zeros(size)
    at, w, p, y = codes[known], w[known], p[known], y[known]
    residual = np.bincount(at, w * (y - p), minlength=size)
    information = np.bincount(at, w * p * (1 - p), minlength=size)
    return residual / (information + shrinkage)


def level_kept(shifts: np.ndarray, log_odds: np.ndarray, codes: np.ndarray, w: np.ndarray) -> np.ndarray:
    """`shifts` less the one constant that keeps the weighted mean probability of the rows (`log_odds`,
    `codes`, weights `w`) what it was without shifts; caseworkers without rows keep 0.

    A calibrated model's log-odds are marginal over caseworkers: the mean of expit over spread shifts
    is above expit of the mean (Jensen), so shifts that average 0 would raise the level. The constant
    moves the known caseworkers' rows from the marginal to the conditional scale; a caseworker the
    model never saw keeps the marginal log-odds, right for a caseworker drawn at random.
    """
    codes = np.asarray(codes, dtype=np.int64)
    rows = (codes >= 0) & (codes < len(shifts))
    has_rows = np.bincount(codes[rows], minlength=len(shifts)) > 0
    if not rows.any():
        return np.zeros(len(shifts))
    base, moved, w = log_odds[rows], log_odds[rows] + shifts[codes[rows]], w[rows]
    target = np.sum(w * expit(base))
    constant = 0.0
    for _ in range(50):  # Newton on a monotone function of one variable
        p = expit(moved - constant)
        step = (np.sum(w * p) - target) / max(np.sum(w * p * (1 - p)), 1e-12)
        constant += step
        if abs(step) < 1e-12:
            break
    return np.where(has_rows, shifts - constant, 0.0)


def shifted(log_odds: np.ndarray, codes: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """`log_odds` plus each row's caseworker shift (0 for codes < 0 or beyond the fitted ones)."""
    codes = np.asarray(codes, dtype=np.int64)
    found = (codes >= 0) & (codes < len(shifts))
    out = np.array(log_odds, dtype=float, copy=True)
    out[found] += shifts[codes[found]]
    return out


def choose_shrinkage(
    log_odds: np.ndarray,
    codes: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    fit: np.ndarray,
    check: np.ndarray,
    shrinkages: Sequence[float] = SHRINKAGES,
) -> tuple[float, dict[float, float]]:
    """The shrinkage whose shifts, learnt on the rows `fit` (masks, level kept), give the lowest weighted log loss on
    the rows `check`, and every candidate's loss. Ties go to the larger shrinkage (the smaller step)."""
    p = expit(log_odds)
    losses = {}
    for shrinkage in sorted(shrinkages, reverse=True):
        shifts = caseworker_shifts(codes[fit], y[fit], p[fit], w[fit], shrinkage)
        shifts = level_kept(shifts, log_odds[fit], codes[fit], w[fit])
        losses[float(shrinkage)] = weighted_log_loss(y[check], shifted(log_odds[check], codes[check], shifts), w[check])
    best = min(losses, key=lambda s: (losses[s], -s))
    return best, losses
