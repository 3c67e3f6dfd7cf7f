"""Platt calibration: a weighted logistic regression of the outcome on a model's margin (log-odds)."""

from __future__ import annotations

import numpy as np

from bip.errors import UserError
from training.model import expit


class NoSignal(UserError):
    """The champion candidate's held-out scores do not rank citizens: there is no model to register."""


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


def ranking(calibration: tuple[float, float], scores: str) -> tuple[float, float]:
    """`calibration` when its slope is positive (the held-out `scores` rank citizens the right way
    round); else NoSignal: `platt` left the base rate alone, and a model giving everyone the same
    chance is nothing to register or serve."""
    if calibration[0] > 0:
        return calibration
    raise NoSignal(
        f"the champion candidate's {scores} do not rank citizens (calibration slope {calibration[0]:.3f}): "
        "calibrated, it would give everyone the base rate, so nothing was registered. The data hold too "
        "little signal: train on more citizens or rounds, and check that the outcomes belong to these citizens."
    )
