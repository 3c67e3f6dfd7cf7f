"""Intervention histories as of each measurement date, point in time.

At a measurement on day t an episode exists only if it started on or before t; it covers the days
from its start to its end inclusive, and one that ends after t (or is still running: no end) counts
only up to t and is active. Days in a window are calendar days on which at least one episode of
the group ran (parallel episodes of one group count once), so they never exceed the window. The
work is vectorised over (measurement, episode started by then) pairs of the same citizen, found
with one `searchsorted` over episodes sorted by citizen and start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.catalogue import GROUPS, INTERVENTIONS, PATTERNS
from features.feature_catalogue import (
    DAYS_SINCE_JOB,
    GROUP_FEATURES,
    PATTERN_WINDOW_DAYS,
    WINDOWS_DAYS,
    code_column,
    group_column,
    pattern_column,
)

GROUP_OF_CODE: np.ndarray = np.array([GROUPS.index(i.group) for i in INTERVENTIONS])
JOB = GROUPS.index("job")
# Day numbers are shifted into [0, 2**32) and combined with the citizen index into one sort key.
_DAY_SHIFT = 2**31
_CITIZEN_STRIDE = 2**32
# Larger than any span of day numbers, and small enough that segment * stride stays exact in float64.
_SEGMENT_STRIDE = 2.0**22


@dataclass(frozen=True)
class Episodes:
    """Intervention episodes sorted by citizen, then start: citizen index, index into
    INTERVENTIONS, start day (int), end day (float, NaN = running), and the sort key."""

    citizen: np.ndarray
    code: np.ndarray
    start: np.ndarray
    end: np.ndarray
    key: np.ndarray


def citizen_day_key(citizen: np.ndarray, day: np.ndarray) -> np.ndarray:
    """One int64 sort key for (citizen index, day number)."""
    return citizen.astype(np.int64) * _CITIZEN_STRIDE + (day.astype(np.int64) + _DAY_SHIFT)


def sorted_episodes(citizen: np.ndarray, code: np.ndarray, start: np.ndarray, end: np.ndarray) -> Episodes:
    """Episodes in the order `intervention_history` searches them (citizen, then start)."""
    key = citizen_day_key(citizen, start)
    order = np.argsort(key, kind="stable")
    return Episodes(citizen[order], code[order], start[order].astype(np.int64), end[order].astype(float), key[order])


def started_episodes(m_citizen: np.ndarray, m_day: np.ndarray, episodes: Episodes) -> tuple[np.ndarray, np.ndarray]:
    """For each measurement, the range [lo, hi) of its citizen's episodes started on or before its day."""
    lo = np.searchsorted(episodes.key, m_citizen.astype(np.int64) * _CITIZEN_STRIDE, side="left")
    hi = np.searchsorted(episodes.key, citizen_day_key(m_citizen, m_day), side="right")
    return lo, hi


def episode_pairs(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (row, episode) index pairs of the ranges [lo, hi), one pair per episode of each row."""
    counts = hi - lo
    row = np.repeat(np.arange(len(lo)), counts)
    offset = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
    return row, np.repeat(lo, counts) + offset


def intervention_history(
    m_citizen: np.ndarray, m_day: np.ndarray, episodes: Episodes
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-group, per-code and pattern features of the interventions as of each measurement day.

    Measurements: citizen index and day number (int), any subset of rows (callers pass row chunks
    to bound memory: the work is over one pair per measurement and episode started by then).
    Returns the feature columns and, for the categorical `pattern_3m`, each row's index into PATTERNS.
    """
    n, n_groups, n_codes = len(m_day), len(GROUPS), len(INTERVENTIONS)
    row, ep = episode_pairs(*started_episodes(m_citizen, m_day, episodes))
    t = m_day[row].astype(float)
    start, end, code = episodes.start[ep].astype(float), episodes.end[ep], episodes.code[ep]
    group = GROUP_OF_CODE[code]
    until = np.fmin(end, t)  # a running episode, or one ending after t, counts up to t
    slot = row * n_groups + group

    def per_slot(weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(slot, weights, minlength=n * n_groups).reshape(n, n_groups)

    # Pairs come by row, then start; a stable sort by slot keeps start order within a slot.
    by_slot = np.argsort(slot, kind="stable")
    slot_s, start_s, until_s, t_s = slot[by_slot], start[by_slot], until[by_slot], t[by_slot]
    days = {}
    for window in WINDOWS_DAYS:
        covered = union_lengths(slot_s, np.maximum(start_s, t_s - (window - 1)), until_s)
        days[window] = np.bincount(slot_s, covered, minlength=n * n_groups).reshape(n, n_groups)
    active = per_slot(np.isnan(end) | (end >= t)) > 0
    group_episodes = per_slot()
    code_episodes = np.bincount(row * n_codes + code, minlength=n * n_codes).reshape(n, n_codes)
    last_job_day = np.full(n, -np.inf)
    job = group == JOB
    np.maximum.at(last_job_day, row[job], until[job])
    out: dict[str, np.ndarray] = {}
    for g, name in enumerate(GROUPS):
        values = {"active": active[:, g].astype(float), "episodes": group_episodes[:, g].astype(float)}
        values.update({f"days_{w}": days[w][:, g] for w in WINDOWS_DAYS})
        out.update({group_column(name, f): values[f] for f in GROUP_FEATURES})
    out.update({code_column(item.code): code_episodes[:, c].astype(float) for c, item in enumerate(INTERVENTIONS)})
    pattern = bip_pattern(days[PATTERN_WINDOW_DAYS])
    out.update({pattern_column(p): (pattern == k).astype(float) for k, p in enumerate(PATTERNS)})
    with np.errstate(invalid="ignore"):
        out[DAYS_SINCE_JOB] = np.where(np.isfinite(last_job_day), m_day - last_job_day, np.nan)
    return out, pattern


def union_lengths(segment: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Days each interval [first, last] adds to the union of the intervals before it in its segment.

    Intervals are sorted by segment, then `first`; an empty one (last < first) adds 0. Summed per
    segment this is the number of distinct days covered, so parallel episodes count once.
    """
    # A running maximum of `last` that restarts per segment: offset each segment far above the last.
    offset = segment * _SEGMENT_STRIDE
    reach = np.maximum.accumulate(last + offset)
    before = np.full(len(last), -np.inf)
    before[1:] = reach[:-1] - offset[1:]
    return np.maximum(last - np.maximum(first, before + 1) + 1, 0.0)


def bip_pattern(recent_days: np.ndarray) -> np.ndarray:
    """Index into PATTERNS from each row's days per group in the pattern window (n, groups)."""
    job = recent_days[:, JOB] > 0
    other = np.delete(recent_days, JOB, axis=1).sum(axis=1) > 0
    choices = [PATTERNS.index(p) for p in ("job_and_other", "job_only", "other_only")]
    return np.select([job & other, job, other], choices, default=PATTERNS.index("none"))
