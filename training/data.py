"""The rows training fits and scores: which take part, their censoring weights, and the fingerprint
of a feature frame that a model carries to say what it was trained on.

Censoring: only labelled rows are fitted and scored, each with an inverse-probability-of-censoring
weight; a censored row has weight 0 and is never counted as a "no" (shared/data-contract.md, "The
prediction target"). The weights tell dropout from the extract date (`features.labels.follow_up_weights`,
see there why); `TrainConfig(weighting="pooled")` uses build_features' `ipcw_weight` column instead.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from features.labels import follow_up_weights

WEIGHTINGS: tuple[str, ...] = ("dropout", "pooled")
# The feature groups an ablation drops one at a time (`group_columns`).
FEATURE_GROUPS: tuple[str, ...] = ("changes", "slopes", "interventions", "caseworker", "history")
# How a model family picks and weights its rows (`family_rows`): "weighted" = labelled rows with a positive
# censoring weight, weighted by it; "known" = every row with a known label, weight 1 (censored rows dropped,
# as most teams start).
ROW_POLICIES: tuple[str, ...] = ("weighted", "known")


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


def group_columns(catalogue: pd.DataFrame, group: str) -> np.ndarray:
    """Matrix columns (positions in `catalogue`) of one of FEATURE_GROUPS: score changes (since the previous
    and the first measurement), slopes, intervention history, caseworker features, measurement history."""
    names = catalogue["name"].astype(str)
    kind = catalogue["kind"].astype(str)
    chosen = {
        "changes": names.str.contains("__change_", regex=False),
        "slopes": names.str.contains("__slope_", regex=False),
        "interventions": kind == "intervention_group",
        "caseworker": kind == "caseworker",
        "history": kind == "history",
    }
    if group not in chosen:
        raise ValueError(f"unknown feature group {group!r}; choose from {', '.join(FEATURE_GROUPS)}")
    return np.flatnonzero(chosen[group].to_numpy())


def plain_columns(catalogue: pd.DataFrame) -> np.ndarray:
    """Columns of the plain family: the latest scores, their change since the previous measurement, background."""
    names = catalogue["name"].astype(str)
    kind = catalogue["kind"].astype(str)
    levels = (kind == "indicator") & ~names.str.contains("__", regex=False)
    return np.flatnonzero((levels | names.str.endswith("__change_prev") | (kind == "background")).to_numpy())


def family_rows(frame: pd.DataFrame, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows a family fits and calibrates on (a mask) and their weights, by one of ROW_POLICIES."""
    if policy == "weighted":
        return labelled_rows(frame), frame["ipcw_weight"].to_numpy(dtype=float)
    if policy == "known":
        known = frame["label"].notna().to_numpy()
        return known, known.astype(float)
    raise ValueError(f"unknown row policy {policy!r}; choose from {', '.join(ROW_POLICIES)}")
