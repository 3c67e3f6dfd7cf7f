"""One feature row per measurement, point in time, with the label of the contract's target.

`build_features` is the only way features are made: for training (all citizens), batch scoring and
a serving request (a Dataset holding one citizen) alike. It sorts measurements by citizen id, date
and measurement id once, turns the tables into numpy arrays, and lets the feature families in
`levels`, `history` and `labels` work on them vectorised — no loop over citizens, and little pandas
overhead for one citizen. A measurement's features use only rows dated on or before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa

from bip.progress import QUIET, Progress
from features.catalogue import EVENTS, INTERVENTION_CODES, SCORE_COLUMNS
from features.dataset import COLUMNS, Dataset
from features.feature_catalogue import (
    BACKGROUND_CATEGORIES,
    CATEGORY_LEVELS,
    FEATURE_COLUMNS,
    ID_COLUMNS,
    LABEL_COLUMNS,
    NUMERIC_FEATURES,
    PATTERN_COLUMN,
    SLOPE_ROUNDS,
)
from features.history import Episodes, citizen_day_key, intervention_history, sorted_episodes
from features.labels import EVENT_KINDS, horizon_labels, ipcw_weights
from features.levels import caseworker_history, round_history, score_changes

CATEGORY_DTYPES: dict[str, pd.CategoricalDtype] = {
    name: pd.CategoricalDtype(list(levels)) for name, levels in CATEGORY_LEVELS.items()
}
OUTPUT_COLUMNS: tuple[str, ...] = ID_COLUMNS + FEATURE_COLUMNS + LABEL_COLUMNS
_NUMERIC_INDEX = pd.Index(NUMERIC_FEATURES)
_NUMERIC_ROW = {name: k for k, name in enumerate(NUMERIC_FEATURES)}
_LEVEL_ROWS = slice(_NUMERIC_ROW[SCORE_COLUMNS[0]], _NUMERIC_ROW[SCORE_COLUMNS[-1]] + 1)
assert [_NUMERIC_ROW[c] for c in SCORE_COLUMNS] == list(range(_LEVEL_ROWS.start, _LEVEL_ROWS.stop))
# Rows per chunk of the score-change and intervention work: bounds temporary memory on a register
# (a chunk's arrays stay in cache) and is one chunk for a serving request.
CHUNK_ROWS = 32_768


@dataclass(frozen=True)
class Rounds:
    """Measurements in feature order (citizen id, date, measurement id), as arrays.

    `order` maps each sorted row to its row in `dataset.measurements`; `citizen` is the row's
    citizen as an index into `citizen_ids` (the sorted ids of the citizens measured) and
    `citizen_row` its row in `dataset.citizens`; `day` is the day number of measured_on and `rank`
    the 0-based round within the citizen.
    """

    order: np.ndarray
    citizen_ids: np.ndarray
    citizen: np.ndarray
    citizen_row: np.ndarray
    day: np.ndarray
    rank: np.ndarray


def require_columns(dataset: Dataset) -> None:
    """Raise ValueError naming every contract column that a table of `dataset` lacks."""
    missing = [
        f"{table}.{column}"
        for table, columns in COLUMNS.items()
        for column in columns
        if column not in dataset.table(table).columns
    ]
    if missing:
        raise ValueError(
            f"cannot build features: missing required column(s) {', '.join(missing)}; "
            "see shared/data-contract.md for the tables and their columns"
        )


def day_numbers(values: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 of a date column, as float (NaN for an empty date)."""
    dates = values.to_numpy()
    if dates.dtype.kind != "M":
        dates = pd.to_datetime(values).to_numpy()
    dates = dates.astype("datetime64[D]")
    return np.where(np.isnat(dates), np.nan, dates.astype(np.int64).astype(float))


STRING_DTYPE = pd.api.types.pandas_dtype("str")


def string_array(values: Sequence[str | None]) -> pd.api.extensions.ExtensionArray:
    """Python strings (None = empty) as the canonical `str` array; through pyarrow directly, since
    `pd.array(values, dtype="str")` costs several times more for the few values of a request."""
    return pd.arrays.ArrowStringArray(pa.array(values, type=pa.large_string()), dtype=STRING_DTYPE)


@lru_cache(maxsize=64)
def column_positions(columns: tuple[str, ...], wanted: tuple[str, ...]) -> np.ndarray:
    """Position of each of `wanted` in `columns` (-1 where absent); cached, as the tables of a
    request, and the frames from build_features, share one column order. Read-only: it is shared."""
    at = pd.Index(columns).get_indexer(list(wanted))
    at.flags.writeable = False
    return at


def float_columns(frame: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """The columns `names` of `frame` as one (rows, names) float array, NaN where empty: one read by
    position, where a column-by-column read pays pandas' fixed cost per column."""
    at = column_positions(tuple(frame.columns.tolist()), tuple(names))
    if (at < 0).any():
        raise KeyError(f"missing column(s) {', '.join(n for n, k in zip(names, at, strict=True) if k < 0)}")
    return frame.take(at, axis=1).to_numpy(dtype=float, na_value=np.nan)


def strings(values: pd.Series) -> np.ndarray:
    """A string column as a numpy object array: cheap for a few rows, where pandas' own string
    operations carry a fixed cost per call, and fast enough for a register."""
    return values.to_numpy(dtype=object)


def sorted_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes of `values` into their sorted distinct values (-1 for empty), and those values."""
    codes, uniques = pd.factorize(values)
    uniques = np.asarray(uniques, dtype=object)
    order = np.argsort(uniques)
    rank = np.empty(len(order) + 1, dtype=np.int64)
    rank[order] = np.arange(len(order))
    rank[-1] = -1  # answers code -1
    return rank[codes], uniques[order]


def lookup(keys: np.ndarray, values: np.ndarray, what: str) -> np.ndarray:
    """Position of each of `values` in `keys` (-1 where absent or empty); ValueError if `keys`
    repeat. One hash pass over both (factorize)."""
    codes, uniques = pd.factorize(np.concatenate([keys, values]))
    key_codes = codes[: len(keys)]
    at = np.full(len(uniques) + 1, -1)  # the extra slot answers code -1 (an empty value)
    at[key_codes] = np.arange(len(keys))
    if len(keys) and ((key_codes < 0).any() or np.bincount(key_codes[key_codes >= 0]).max() > 1):
        raise ValueError(f"{what} must be unique and not empty")
    return at[codes[len(keys) :]]


def category_codes(values: np.ndarray, levels: tuple[str, ...], what: str) -> np.ndarray:
    """Index of each value in `levels` (-1 for an empty value); ValueError naming values outside them."""
    if not len(values):  # e.g. a request's empty outcomes: factorize's fixed cost for nothing
        return np.zeros(0, dtype=np.int64)
    codes, uniques = pd.factorize(values)
    unknown = [u for u in uniques if u not in levels]
    if unknown:
        shown = ", ".join(map(repr, unknown[:5]))
        raise ValueError(f"{what} has value(s) outside the data contract: {shown}; expected one of {', '.join(levels)}")
    return np.array([levels.index(u) for u in uniques] + [-1], dtype=np.int64)[codes]


def sorted_rounds(dataset: Dataset) -> Rounds:
    """The measurements of `dataset` in feature order, with each row's citizen, day and round."""
    m = dataset.measurements
    citizen, citizen_ids = sorted_codes(strings(m["citizen_id"]))
    citizen_row = lookup(strings(dataset.citizens["citizen_id"]), citizen_ids, "citizens.citizen_id")
    if (citizen < 0).any() or (citizen_row < 0).any():
        unknown = int((citizen_row < 0).sum())  # a count: citizens' ids stay out of messages
        raise ValueError(f"measurements.citizen_id empty or not in citizens ({unknown} id(s))")
    day = day_numbers(m["measured_on"])
    if np.isnan(day).any():
        raise ValueError("measurements.measured_on must not be empty")
    day = day.astype(np.int64)
    order = np.argsort(citizen_day_key(citizen, day), kind="stable")
    tied = np.zeros(len(day), dtype=bool)
    same = (np.diff(citizen[order]) == 0) & (np.diff(day[order]) == 0)
    tied[order[1:][same]] = tied[order[:-1][same]] = True
    if tied.any():  # two rounds of a citizen on one day: the measurement id decides, in every path
        id_rank = np.zeros(len(day), dtype=np.int64)
        id_rank[tied] = sorted_codes(strings(m["measurement_id"])[tied])[0]
        order = np.lexsort((id_rank, day, citizen))
    citizen, day = citizen[order], day[order]
    starts = np.flatnonzero(np.r_[True, citizen[1:] != citizen[:-1]]) if len(citizen) else np.zeros(0, int)
    rank = np.arange(len(citizen)) - np.repeat(starts, np.diff(np.r_[starts, len(citizen)]))
    return Rounds(order, citizen_ids, citizen, citizen_row[citizen], day, rank)


def score_levels(dataset: Dataset, rounds: Rounds) -> dict[str, np.ndarray]:
    """The score columns of the sorted rows as floats, NaN where unanswered."""
    values = float_columns(dataset.measurements, SCORE_COLUMNS)[rounds.order]
    return dict(zip(SCORE_COLUMNS, values.T, strict=True))


def round_features(dataset: Dataset, rounds: Rounds) -> dict[str, np.ndarray]:
    """Rounds so far, days since enrolment and the previous round, and the caseworker features."""
    enrolled = day_numbers(dataset.citizens["enrolled_on"])[rounds.citizen_row]
    out = round_history(rounds.day, enrolled, rounds.rank)
    cw = dataset.caseworkers
    caseworker_ids = strings(dataset.measurements["caseworker_id"])[rounds.order]
    found = lookup(strings(cw["caseworker_id"]), caseworker_ids, "caseworkers.caseworker_id")
    orientation = np.where(found >= 0, cw["job_orientation"].to_numpy(dtype=float, na_value=np.nan)[found], np.nan)
    out.update(caseworker_history(caseworker_ids, orientation, rounds.rank))
    return out


def background_features(dataset: Dataset, rounds: Rounds) -> dict[str, np.ndarray]:
    """Age at the measurement (its year minus birth year), children and benefit share, per sorted row."""
    c = dataset.citizens
    year = (rounds.day.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970).astype(float)
    row = rounds.citizen_row

    def numbers(column: str) -> np.ndarray:
        return c[column].to_numpy(dtype=float, na_value=np.nan)[row]

    return {
        "age": year - numbers("birth_year"),
        "children": numbers("children"),
        "benefit_share_5y": numbers("benefit_share_5y"),
    }


def background_categories(dataset: Dataset, rounds: Rounds) -> dict[str, pd.api.extensions.ExtensionArray]:
    """The categorical background columns per sorted row: Categoricals over the contract's levels
    (the same categories for one citizen as for a register) and `jobcentre` as strings."""
    c = dataset.citizens
    out = {}
    for name in BACKGROUND_CATEGORIES:
        if name in CATEGORY_DTYPES:
            codes = category_codes(strings(c[name]), CATEGORY_LEVELS[name], f"citizens.{name}")
            out[name] = pd.Categorical.from_codes(codes[rounds.citizen_row], dtype=CATEGORY_DTYPES[name])
        else:
            out[name] = c[name].array.take(rounds.citizen_row)
    return out


def intervention_episodes(dataset: Dataset, rounds: Rounds) -> Episodes:
    """The interventions of the measured citizens as sorted `Episodes` (others play no part)."""
    e = dataset.interventions
    citizen = lookup(rounds.citizen_ids, strings(e["citizen_id"]), "citizen ids")
    keep = citizen >= 0
    code = category_codes(strings(e["intervention"])[keep], INTERVENTION_CODES, "interventions.intervention")
    start, end = day_numbers(e["started_on"])[keep], day_numbers(e["ended_on"])[keep]
    if (code < 0).any() or np.isnan(start).any():
        raise ValueError("interventions.intervention and interventions.started_on must not be empty")
    return sorted_episodes(citizen[keep], code, start.astype(np.int64), end)


def row_labels(dataset: Dataset, rounds: Rounds, horizon_months: int) -> dict[str, np.ndarray]:
    """The label columns (LABEL_COLUMNS) of the sorted rows; IPCW weights are over these rows.

    A citizen without an outcome row is censored at every measurement.
    """
    o = dataset.outcomes
    at = lookup(rounds.citizen_ids, strings(o["citizen_id"]), "citizen ids")
    known = at >= 0
    event_day = np.full(len(rounds.citizen_ids), np.nan)
    followed_day = np.full(len(rounds.citizen_ids), np.nan)
    event = category_codes(strings(o["event"]), EVENTS, "outcomes.event")
    is_event = np.isin(event, [EVENTS.index(kind) for kind in EVENT_KINDS])
    event_day[at[known]] = np.where(is_event, day_numbers(o["event_on"]), np.nan)[known]
    followed_day[at[known]] = day_numbers(o["followed_until"])[known]
    labels = horizon_labels(rounds.day, event_day[rounds.citizen], followed_day[rounds.citizen], horizon_months)
    horizon_days = labels.pop("horizon_days")
    labels["ipcw_weight"] = ipcw_weights(
        labels["label"], labels["time_to_event_days"], labels["event_observed"], horizon_days
    )
    return {name: labels[name] for name in LABEL_COLUMNS}


def numeric_features(dataset: Dataset, rounds: Rounds, chunk_rows: int = CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """The NUMERIC_FEATURES of the sorted rows as one (features, rows) float block, and each row's
    `pattern_3m` index into PATTERNS. The score changes and intervention histories run in chunks of
    `chunk_rows` rows and write straight into the block, so a register needs little more memory than
    the block itself; the chunking never changes a value."""
    n = len(rounds.day)
    block = np.empty((len(NUMERIC_FEATURES), n))

    def put(values: dict[str, np.ndarray], rows: slice = slice(None)) -> None:
        for name, column in values.items():
            block[_NUMERIC_ROW[name], rows] = column

    put(score_levels(dataset, rounds))
    levels = block[_LEVEL_ROWS]  # (scores, rows), a view
    put(round_features(dataset, rounds))
    put(background_features(dataset, rounds))
    episodes = intervention_episodes(dataset, rounds)
    pattern = np.empty(n, dtype=np.int64)
    lookback = SLOPE_ROUNDS - 1
    for a in range(0, n, chunk_rows):
        rows, lo = slice(a, min(a + chunk_rows, n)), max(0, a - lookback)
        day, rank = rounds.day[lo : rows.stop], rounds.rank[lo : rows.stop]
        scores = np.ascontiguousarray(levels[:, lo : rows.stop].T)
        first = levels[:, np.arange(lo, rows.stop) - rank].T
        changes = score_changes(scores, first, day, rank, SCORE_COLUMNS)
        put({name: values[a - lo :] for name, values in changes.items()}, rows)
        history, pattern[rows] = intervention_history(rounds.citizen[rows], rounds.day[rows], episodes)
        put(history, rows)
    return block, pattern


def truncate_dataset(dataset: Dataset, on: date) -> Dataset:
    """The dataset as an export taken at the end of day `on` would hold it.

    Citizens enrolled by then; measurements on or before `on`; interventions started by then, with an
    end after `on` made empty (still running); outcomes with an event after `on` made `none`, and
    follow-up ending at `on` at the latest. Caseworkers are kept as they are.
    """
    cut = pd.Timestamp(on)
    c = dataset.citizens
    citizens = c[~(c["enrolled_on"] > cut)]
    known = dataset.measurements["citizen_id"].isin(citizens["citizen_id"])
    measurements = dataset.measurements[known & (dataset.measurements["measured_on"] <= cut)]
    e = dataset.interventions
    interventions = e[e["citizen_id"].isin(citizens["citizen_id"]) & (e["started_on"] <= cut)].copy()
    interventions["ended_on"] = interventions["ended_on"].mask(interventions["ended_on"] > cut)
    o = dataset.outcomes
    outcomes = o[o["citizen_id"].isin(citizens["citizen_id"])].copy()
    late = outcomes["event_on"] > cut
    outcomes["event"] = outcomes["event"].mask(late, "none")
    outcomes["event_on"] = outcomes["event_on"].mask(late)
    outcomes["followed_until"] = outcomes["followed_until"].mask(outcomes["followed_until"] > cut, cut)
    return Dataset(
        citizens=citizens.reset_index(drop=True),
        caseworkers=dataset.caseworkers,
        measurements=measurements.reset_index(drop=True),
        interventions=interventions.reset_index(drop=True),
        outcomes=outcomes.reset_index(drop=True),
    )


def label_within_horizon(dataset: Dataset, horizon_months: int = 12) -> pd.DataFrame:
    """measurement_id and the label columns, one row per measurement in feature order."""
    require_columns(dataset)
    rounds = sorted_rounds(dataset)
    frame = pd.DataFrame(row_labels(dataset, rounds, horizon_months))
    frame.insert(0, "measurement_id", dataset.measurements["measurement_id"].array.take(rounds.order))
    return frame


def build_features(
    dataset: Dataset, horizon_months: int = 12, as_of: date | None = None, progress: Progress = QUIET
) -> pd.DataFrame:
    """One row per measurement: ID_COLUMNS, FEATURE_COLUMNS, LABEL_COLUMNS (see docs/feature-catalogue.md).

    Rows are sorted by citizen id, measured_on and measurement id. With `as_of`, the dataset is first
    truncated to what was known at the end of that day (`truncate_dataset`). `ipcw_weight` is
    estimated over the rows built together, so it only means something for a training set.
    """
    require_columns(dataset)
    if as_of is not None:
        dataset = truncate_dataset(dataset, as_of)
    # Steps, not rows: each step is one vectorised pass over every measurement.
    with progress.task("features", total=3) as task:
        rounds = sorted_rounds(dataset)
        task.advance()
        block, pattern = numeric_features(dataset, rounds)
        task.advance()
        ids = {
            "measurement_id": dataset.measurements["measurement_id"].array.take(rounds.order),
            "citizen_id": string_array(rounds.citizen_ids[rounds.citizen]),
            "measured_on": rounds.day.astype("datetime64[D]").astype("datetime64[s]"),
        }
        others = {
            PATTERN_COLUMN: pd.Categorical.from_codes(pattern, dtype=CATEGORY_DTYPES[PATTERN_COLUMN]),
            **background_categories(dataset, rounds),
            **row_labels(dataset, rounds, horizon_months),
        }
        task.advance()
    # The block goes in without a copy: cheap for one citizen, and no second copy of a register.
    numeric = pd.DataFrame(block.T, columns=_NUMERIC_INDEX, copy=False)
    return pd.concat([pd.DataFrame(ids, copy=False), numeric, pd.DataFrame(others, copy=False)], axis=1)
