"""Features of a citizen's own measurement rounds: score levels and changes, rounds, caseworker.

Every function takes parallel numpy arrays of measurements sorted by citizen and date, with
`rank` the 0-based round of each row within its citizen, so that one vectorised pass serves a
whole register and a single citizen alike. Only rows at or before a row feed its features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from features.feature_catalogue import (
    CASEWORKER_FEATURES,
    SLOPE_DAYS,
    SLOPE_ROUNDS,
    change_column,
)


def previous(values: np.ndarray, rank: np.ndarray, lag: int = 1) -> np.ndarray:
    """The value `lag` rounds earlier for the same citizen (NaN where the citizen has no such round).

    `values` holds one row per measurement (1-D, or 2-D with one column per score).
    """
    out = np.full(values.shape, np.nan)
    if lag < len(values):
        out[lag:] = values[:-lag]
    out[rank < lag] = np.nan
    return out


def score_changes(
    scores: np.ndarray, first: np.ndarray, day: np.ndarray, rank: np.ndarray, names: Sequence[str]
) -> dict[str, np.ndarray]:
    """Change since the previous and the first round, and the slope over the last rounds, of scores.

    `scores` has one column per name in `names`, `first` the citizen's scores at round 0 for each
    row (given, so that callers may pass row chunks: a chunk needs only SLOPE_ROUNDS - 1 rows before
    it, whose results are then wrong and dropped). A missing answer stays missing: a change involving
    one is NaN. The slope is the least-squares slope of the answered values among the last
    SLOPE_ROUNDS rounds (this one included) against their dates, per SLOPE_DAYS days; NaN with fewer
    than two answers or a single date.
    """
    count, sum_x, sum_y, sum_xx, sum_xy = (np.zeros(scores.shape) for _ in range(5))
    for lag in range(SLOPE_ROUNDS):
        y = scores if lag == 0 else previous(scores, rank, lag)
        # Days relative to this round keep the sums small and exact.
        x = np.zeros(len(day)) if lag == 0 else previous(day.astype(float), rank, lag) - day
        answered = ~np.isnan(y)
        y, x = np.where(answered, y, 0.0), np.where(answered, x[:, None], 0.0)
        count += answered
        sum_x += x
        sum_y += y
        sum_xx += x * x
        sum_xy += x * y
    with np.errstate(invalid="ignore", divide="ignore"):
        sxx = sum_xx - sum_x * sum_x / count
        sxy = sum_xy - sum_x * sum_y / count
        slope = np.where((count >= 2) & (sxx > 0), sxy / sxx * SLOPE_DAYS, np.nan)
    change_prev, change_first = scores - previous(scores, rank), scores - first
    out = {}
    for k, name in enumerate(names):
        out[change_column(name, "change_prev")] = change_prev[:, k]
        out[change_column(name, "change_first")] = change_first[:, k]
        out[change_column(name, "slope_3r")] = slope[:, k]
    return out


def round_history(day: np.ndarray, enrolled_day: np.ndarray, rank: np.ndarray) -> dict[str, np.ndarray]:
    """Rounds so far (1 at the first), days since enrolment, days since the previous round (NaN first)."""
    day = day.astype(float)
    return {
        "rounds": rank + 1.0,
        "days_since_enrolment": day - enrolled_day,
        "days_since_prev": day - previous(day, rank),
    }


def caseworker_history(caseworker: np.ndarray, orientation: np.ndarray, rank: np.ndarray) -> dict[str, np.ndarray]:
    """The caseworker's job orientation at this round, whether the caseworker changed since the
    previous round (0 at the first), and the number of changes so far.

    `caseworker` holds the caseworker ids (or any codes of them: equal value = same caseworker).
    """
    changed = np.zeros(len(caseworker))
    if len(caseworker) > 1:
        changed[1:] = caseworker[1:] != caseworker[:-1]
    changed[rank == 0] = 0.0
    changes = np.cumsum(changed)
    changes -= changes[np.arange(len(changes)) - rank]  # the first round of each citizen never counts
    orientation_col, changed_col, changes_col = CASEWORKER_FEATURES
    return {orientation_col: orientation.astype(float), changed_col: changed, changes_col: changes}
