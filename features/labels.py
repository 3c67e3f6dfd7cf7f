"""The prediction target of the data contract, with censoring and its inverse-probability weights.

For a measurement on day t: 1 if the citizen entered a job or education with event_on in
(t, t + H months]; 0 if not and follow-up reaches t + H months; unknown (NaN, censored) otherwise,
never 0. An event on or before t does not count (the contract's window starts after t).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

EVENT_KINDS: tuple[str, ...] = ("job", "education")


def add_months(day: np.ndarray, months: int) -> np.ndarray:
    """Day numbers plus `months` calendar months, as pandas' `DateOffset(months=...)` does it:
    the same day of the month, or the month's last day where it has no such day."""
    dates = np.asarray(day, dtype=np.int64).astype("datetime64[D]")
    month = dates.astype("datetime64[M]")
    day_of_month = (dates - month.astype("datetime64[D]")).astype(np.int64)
    target = month + months
    target_first = target.astype("datetime64[D]")
    month_length = ((target + 1).astype("datetime64[D]") - target_first).astype(np.int64)
    return (target_first + np.minimum(day_of_month, month_length - 1)).astype(np.int64)


def horizon_labels(
    day: np.ndarray, event_day: np.ndarray, followed_day: np.ndarray, horizon_months: int
) -> dict[str, np.ndarray]:
    """label, censored, time_to_event_days, event_observed and horizon_days for measurements.

    Inputs are day numbers per measurement: the measurement (int), the citizen's job/education
    event (float, NaN when none) and the end of follow-up (float, NaN when the citizen has no
    outcome: then the row is censored at t). time_to_event_days runs from t to the event or, without
    an event after t, to the end of follow-up (never below 0); event_observed says which.
    """
    t = np.asarray(day, dtype=float)
    horizon_end = add_months(day, horizon_months).astype(float)
    with np.errstate(invalid="ignore"):
        event_observed = event_day > t
        positive = event_observed & (event_day <= horizon_end)
        negative = ~positive & (followed_day >= horizon_end)
        time = np.where(event_observed, event_day - t, np.maximum(followed_day - t, 0.0))
    censored = ~positive & ~negative
    return {
        "label": np.where(positive, 1.0, np.where(negative, 0.0, np.nan)),
        "censored": censored,
        "time_to_event_days": time,
        "event_observed": event_observed,
        "horizon_days": horizon_end - t,
    }


def censoring_survival(time: np.ndarray, censoring: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan–Meier estimate of G(s) = P(censoring time > s): the distinct times and G at each.

    `censoring` is True where observation ended without an event at `time`; rows with an event are
    censored observations of the censoring time. Rows with a NaN time are left out.
    """
    return survival_of_counts(*censoring_counts(time, censoring))


def censoring_counts(time: np.ndarray, censoring: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct known times, the rows at each and the censorings at each: all the Kaplan–Meier
    curve needs, and additive, so that counts of disjoint row sets (partitions) merge exactly."""
    known = ~np.isnan(time)
    times, inverse, at_time = np.unique(time[known], return_inverse=True, return_counts=True)
    ended = np.bincount(inverse, weights=censoring[known].astype(float), minlength=len(times))
    return times, at_time, ended


def merged_counts(
    counts: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`censoring_counts` of several disjoint row sets as the counts of all their rows together."""
    times, at_time, ended = (np.concatenate(parts) for parts in zip(*counts, strict=True))
    distinct, inverse = np.unique(times, return_inverse=True)
    rows = np.bincount(inverse, weights=at_time, minlength=len(distinct)).astype(np.int64)
    return distinct, rows, np.bincount(inverse, weights=ended, minlength=len(distinct))


def survival_of_counts(times: np.ndarray, at_time: np.ndarray, ended: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Kaplan–Meier curve (times, G at each) from `censoring_counts`."""
    at_risk = at_time.sum() - np.cumsum(at_time) + at_time  # rows with time >= each distinct time
    return times, np.cumprod(1.0 - ended / at_risk)


def survival_before(times: np.ndarray, survival: np.ndarray, s: np.ndarray) -> np.ndarray:
    """G(s-), the left limit of a step survival function given at `times`: 1 before the first."""
    index = np.searchsorted(times, s, side="left") - 1
    return np.where(index >= 0, survival[np.maximum(index, 0)], 1.0)


def ipcw_weights(
    label: np.ndarray, time_to_event_days: np.ndarray, event_observed: np.ndarray, horizon_days: np.ndarray
) -> np.ndarray:
    """Inverse-probability-of-censoring weights: 1 / G(min(time, horizon)-) for labelled rows, 0 for
    censored ones, with G estimated by Kaplan–Meier over the given rows.

    Weighting the labelled rows so makes a classifier fitted on them estimate the chance of the
    event within the horizon for all rows, instead of over-representing early events.
    """
    curve = censoring_survival(time_to_event_days, pooled_censoring(time_to_event_days, event_observed))
    return weights_of_curve(label, time_to_event_days, horizon_days, curve)


def pooled_censoring(time_to_event_days: np.ndarray, event_observed: np.ndarray) -> np.ndarray:
    """Rows whose observation ended without an event, whatever ended it (dropout or the extract)."""
    return ~event_observed & ~np.isnan(time_to_event_days)


def weights_of_curve(
    label: np.ndarray, time_to_event_days: np.ndarray, horizon_days: np.ndarray, curve: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """1 / G(min(time, horizon)-) for labelled rows and 0 for censored ones, G the given curve: how
    `ipcw_weights` weights rows, and how a partition is weighted by a curve of all partitions."""
    labelled = ~np.isnan(label)
    at = np.fmin(time_to_event_days, horizon_days)
    weights = np.zeros(len(label))
    weights[labelled] = 1.0 / survival_before(*curve, at[labelled])
    return weights


# --- weights that tell dropout from the extract date (what training uses) ---------------------------------


def follow_up_ends(day: np.ndarray, time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the day follow-up or the event came (day + time), and whether follow-up ended there
    without an event (a row with a NaN time has no end)."""
    return day + time, ~np.asarray(event, dtype=bool) & ~np.isnan(time)


def dropout_weights(
    day: np.ndarray,
    time: np.ndarray,
    label: np.ndarray,
    horizon_months: int,
    extract: float,
    dropout_curve: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """1/G(min(time, horizon)-) for labelled rows whose horizon ends by the `extract` day, 0 for every
    other row; G is `dropout_curve` (times, survival). With no extract day (NaN: no follow-up ended
    without an event), every labelled row weighs 1."""
    if np.isnan(extract):
        return np.where(np.isnan(label), 0.0, 1.0)
    horizon = add_months(day, horizon_months) - day
    followed_whole_horizon = np.where(day + horizon <= extract, label, np.nan)
    return weights_of_curve(followed_whole_horizon, time, horizon, dropout_curve)


def follow_up_weights(
    day: np.ndarray, time: np.ndarray, event: np.ndarray, label: np.ndarray, horizon_months: int
) -> np.ndarray:
    """IPCW weights that tell the two kinds of censoring apart: `dropout_weights` with G the
    Kaplan–Meier survival of *dropout* only and the extract day the latest end of follow-up without
    an event.

    The extract date censors every row measured within a horizon of it, but the rows it censors are
    the recent ones, not a random share: pooled with dropout into one G (`ipcw_weights`, build_features'
    `ipcw_weight`), it over-weights the "no" of early rows and the "yes" of late ones, which biases a
    model that sees time-related features and any evaluation split by date. Rows that could not be
    followed a whole horizon (positivity fails) are left out instead, positives included; a censored
    row is still never a "no". Inputs are per row: measurement day number, time_to_event_days,
    event_observed and label.
    """
    end, ended = follow_up_ends(day, time, event)
    if not ended.any():
        return dropout_weights(day, time, label, horizon_months, np.nan, (np.zeros(0), np.zeros(0)))
    extract = float(end[ended].max())
    curve = censoring_survival(time, ended & (end < extract))
    return dropout_weights(day, time, label, horizon_months, extract, curve)
