"""Intervention histories as of each measurement date, point in time.

At a measurement on day t an episode exists only if it started on or before t; it covers the days
from its start to its end inclusive, and one that ends after t (or is still running: no end) counts
only up to t and is active. The work is vectorised over (measurement, episode-started-so-far)
pairs of the same citizen, found with one `searchsorted`, in chunks to bound memory.
"""

from __future__ import annotations

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
MAX_PAIRS_PER_CHUNK = 4_000_000


def started_episodes(
    m_citizen: np.ndarray, m_day: np.ndarray, e_citizen: np.ndarray, e_start: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each measurement, the range [lo, hi) of its citizen's episodes started on or before its day.

    The episodes must be sorted by citizen, then start.
    """
    key = e_citizen.astype(np.int64) * _CITIZEN_STRIDE + (e_start.astype(np.int64) + _DAY_SHIFT)
    base = m_citizen.astype(np.int64) * _CITIZEN_STRIDE
    lo = np.searchsorted(key, base, side="left")
    hi = np.searchsorted(key, base + (m_day.astype(np.int64) + _DAY_SHIFT), side="right")
    return lo, hi


def episode_pairs(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (row, episode) index pairs of the ranges [lo, hi), one pair per episode of each row."""
    counts = hi - lo
    row = np.repeat(np.arange(len(lo)), counts)
    offset = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
    return row, np.repeat(lo, counts) + offset


def row_chunks(pairs_per_row: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Contiguous row ranges of about `limit` pairs at most (a single row may exceed it)."""
    cumulative = np.cumsum(pairs_per_row)
    if len(cumulative) == 0 or cumulative[-1] <= limit:
        return [(0, len(pairs_per_row))]
    stops = np.searchsorted(cumulative, np.arange(limit, cumulative[-1], limit), side="right")
    bounds = np.unique(np.concatenate([[0], stops, [len(pairs_per_row)]]))
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def intervention_history(
    m_citizen: np.ndarray,
    m_day: np.ndarray,
    e_citizen: np.ndarray,
    e_code: np.ndarray,
    e_start: np.ndarray,
    e_end: np.ndarray,
    max_pairs: int = MAX_PAIRS_PER_CHUNK,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-group, per-code and pattern features of the interventions as of each measurement day.

    Measurements: citizen index and day number (int). Episodes: citizen index, index into
    INTERVENTIONS, start and end day (float, NaN = running). Returns the feature columns and, for
    the categorical `pattern_3m`, each row's index into PATTERNS.
    """
    order = np.lexsort((e_start, e_citizen))
    e_citizen, e_code, e_start, e_end = e_citizen[order], e_code[order], e_start[order], e_end[order]
    n, n_groups, n_codes = len(m_day), len(GROUPS), len(INTERVENTIONS)
    days = np.zeros((len(WINDOWS_DAYS), n, n_groups))
    active = np.zeros((n, n_groups))
    group_episodes = np.zeros((n, n_groups))
    code_episodes = np.zeros((n, n_codes))
    last_job_day = np.full(n, -np.inf)
    lo, hi = started_episodes(m_citizen, m_day, e_citizen, e_start)
    for first, stop in row_chunks(hi - lo, max_pairs):
        row, ep = episode_pairs(lo[first:stop], hi[first:stop])
        size = stop - first
        t = m_day[first:stop][row].astype(float)
        start, code = e_start[ep].astype(float), e_code[ep]
        group = GROUP_OF_CODE[code]
        until = np.fmin(e_end[ep], t)  # a running episode, or one ending after t, counts up to t
        slot = row * n_groups + group
        for k, window in enumerate(WINDOWS_DAYS):
            overlap = np.maximum(until - np.maximum(start, t - (window - 1)) + 1, 0.0)
            days[k, first:stop] = np.bincount(slot, overlap, size * n_groups).reshape(size, n_groups)
        running = np.isnan(e_end[ep]) | (e_end[ep] >= t)
        active[first:stop] = np.bincount(slot, running, size * n_groups).reshape(size, n_groups) > 0
        group_episodes[first:stop] = np.bincount(slot, minlength=size * n_groups).reshape(size, n_groups)
        code_episodes[first:stop] = np.bincount(row * n_codes + code, minlength=size * n_codes).reshape(size, n_codes)
        job = group == JOB
        np.maximum.at(last_job_day[first:stop], row[job], until[job])
    out: dict[str, np.ndarray] = {}
    for g, name in enumerate(GROUPS):
        values = {"active": active[:, g], "episodes": group_episodes[:, g]}
        values.update({f"days_{w}": days[k, :, g] for k, w in enumerate(WINDOWS_DAYS)})
        out.update({group_column(name, f): values[f] for f in GROUP_FEATURES})
    out.update({code_column(item.code): code_episodes[:, c] for c, item in enumerate(INTERVENTIONS)})
    pattern = bip_pattern(days[WINDOWS_DAYS.index(PATTERN_WINDOW_DAYS)])
    out.update({pattern_column(p): (pattern == k).astype(float) for k, p in enumerate(PATTERNS)})
    with np.errstate(invalid="ignore"):
        out[DAYS_SINCE_JOB] = np.where(np.isfinite(last_job_day), m_day - last_job_day, np.nan)
    return out, pattern


def bip_pattern(recent_days: np.ndarray) -> np.ndarray:
    """Index into PATTERNS from each row's days per group in the pattern window (n, groups)."""
    job = recent_days[:, JOB] > 0
    other = np.delete(recent_days, JOB, axis=1).sum(axis=1) > 0
    choices = [PATTERNS.index(p) for p in ("job_and_other", "job_only", "other_only")]
    return np.select([job & other, job, other], choices, default=PATTERNS.index("none"))
