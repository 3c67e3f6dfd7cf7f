"""One feature row per measurement, point in time, with the label of the contract's target.

One definition of every feature, in two layers:
- the core, `feature_arrays`, works on the contract tables as numpy arrays (`features.tables`): it
  sorts measurements by citizen id, date and measurement id once and lets the feature families in
  `levels` and `history` work on them vectorised (no loop over citizens). A serving request, the
  caseworker page and the model matrix (`training.model.JobChanceModel.matrix_of`) use it directly,
  with no DataFrame and no label;
- `build_features`, the frame for training, batch scoring, experiments and Dask: the core on
  `tables_of(dataset)`, then ids, Categoricals and the labels and censoring weights (training's only)
  at the edge.
A measurement's features use only rows dated on or before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

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
from features.tables import BACKGROUND_VALUES, FeatureTables, day_numbers, strings, tables_of

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

    `order` maps each sorted row to its row in the measurements table; `citizen` is the row's
    citizen as an index into `citizen_ids` (the sorted ids of the citizens measured) and
    `citizen_row` its row in the citizens table; `day` is the day number of measured_on and `rank`
    the 0-based round within the citizen.
    """

    order: np.ndarray
    citizen_ids: np.ndarray
    citizen: np.ndarray
    citizen_row: np.ndarray
    day: np.ndarray
    rank: np.ndarray

    def take(self, rows: np.ndarray) -> Rounds:
        """The rounds at positions `rows` (same citizen ids)."""
        return Rounds(
            self.order[rows],
            self.citizen_ids,
            self.citizen[rows],
            self.citizen_row[rows],
            self.day[rows],
            self.rank[rows],
        )

    def last(self) -> np.ndarray:
        """Positions of each citizen's last row (rows are sorted by citizen, then date)."""
        citizen = self.citizen
        return np.flatnonzero(np.append(citizen[1:] != citizen[:-1], True)) if len(citizen) else np.zeros(0, dtype=int)


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


# Up to this many values `factorize` hashes in Python: pandas' fixed cost (about 20 us a call, nine
# calls a request) was a tenth of scoring one citizen; above it pandas' hash table is faster.
SMALL_FACTORIZE = 64


def _empty(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`pd.factorize` of a 1-D object array: each value's code, in order of first appearance (-1 for
    None, NaN or pd.NA), and the distinct values as an object array; the same answer for any size."""
    if len(values) > SMALL_FACTORIZE:
        codes, uniques = pd.factorize(values)
        return codes, np.asarray(uniques, dtype=object)
    seen: dict[object, int] = {}
    codes = np.array([-1 if _empty(v) else seen.setdefault(v, len(seen)) for v in values.tolist()], dtype=np.intp)
    uniques = np.empty(len(seen), dtype=object)
    uniques[:] = list(seen)
    return codes, uniques


def sorted_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes of `values` into their sorted distinct values (-1 for empty), and those values."""
    codes, uniques = factorize(values)
    order = np.argsort(uniques)
    rank = np.empty(len(order) + 1, dtype=np.int64)
    rank[order] = np.arange(len(order))
    rank[-1] = -1  # answers code -1
    return rank[codes], uniques[order]


def lookup(keys: np.ndarray, values: np.ndarray, what: str) -> np.ndarray:
    """Position of each of `values` in `keys` (-1 where absent or empty); ValueError if `keys`
    repeat. One hash pass over both (factorize)."""
    codes, uniques = factorize(np.concatenate([keys, values]))
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
    codes, uniques = factorize(values)
    unknown = [u for u in uniques if u not in levels]
    if unknown:
        shown = ", ".join(map(repr, unknown[:5]))
        raise ValueError(f"{what} has value(s) outside the data contract: {shown}; expected one of {', '.join(levels)}")
    return np.array([levels.index(u) for u in uniques] + [-1], dtype=np.int64)[codes]


def sorted_rounds(tables: FeatureTables) -> Rounds:
    """The measurements of `tables` in feature order, with each row's citizen, day and round."""
    citizen, citizen_ids = sorted_codes(tables.measured_citizen)
    citizen_row = lookup(tables.citizen_id, citizen_ids, "citizens.citizen_id")
    if (citizen < 0).any() or (citizen_row < 0).any():
        unknown = int((citizen_row < 0).sum())  # a count: citizens' ids stay out of messages
        raise ValueError(f"measurements.citizen_id empty or not in citizens ({unknown} id(s))")
    day = tables.measured_day
    if np.isnan(day).any():
        raise ValueError("measurements.measured_on must not be empty")
    day = day.astype(np.int64)
    order = np.argsort(citizen_day_key(citizen, day), kind="stable")
    tied = np.zeros(len(day), dtype=bool)
    same = (np.diff(citizen[order]) == 0) & (np.diff(day[order]) == 0)
    tied[order[1:][same]] = tied[order[:-1][same]] = True
    if tied.any():  # two rounds of a citizen on one day: the measurement id decides, in every path
        id_rank = np.zeros(len(day), dtype=np.int64)
        id_rank[tied] = sorted_codes(tables.measurement_id[tied])[0]
        order = np.lexsort((id_rank, day, citizen))
    citizen, day = citizen[order], day[order]
    starts = np.flatnonzero(np.concatenate(([True], citizen[1:] != citizen[:-1]))) if len(citizen) else np.zeros(0, int)
    rank = np.arange(len(citizen)) - np.repeat(starts, np.diff(np.append(starts, len(citizen))))
    return Rounds(order, citizen_ids, citizen, citizen_row[citizen], day, rank)


def round_features(tables: FeatureTables, rounds: Rounds) -> dict[str, np.ndarray]:
    """Rounds so far, days since enrolment and the previous round, and the caseworker features."""
    out = round_history(rounds.day, tables.enrolled_day[rounds.citizen_row], rounds.rank)
    caseworker_ids = tables.measured_caseworker[rounds.order]
    found = lookup(tables.caseworker_id, caseworker_ids, "caseworkers.caseworker_id")
    orientation = np.where(found >= 0, tables.job_orientation[found], np.nan)
    out.update(caseworker_history(caseworker_ids, orientation, rounds.rank))
    return out


def background_features(tables: FeatureTables, rounds: Rounds) -> dict[str, np.ndarray]:
    """Age at the measurement (its year minus birth year), children and benefit share, per sorted row."""
    year = (rounds.day.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970).astype(float)
    values = dict(zip(BACKGROUND_VALUES, tables.background[rounds.citizen_row].T, strict=True))
    return {
        "age": year - values["birth_year"],
        "children": values["children"],
        "benefit_share_5y": values["benefit_share_5y"],
    }


def background_codes(tables: FeatureTables) -> dict[str, np.ndarray]:
    """Per citizen of `tables`: the index of each categorical background value in its contract levels
    (-1 when empty; ValueError naming values outside them), and `jobcentre` as it is (the data's values)."""
    return {
        name: category_codes(values, CATEGORY_LEVELS[name], f"citizens.{name}") if name in CATEGORY_LEVELS else values
        for name, values in tables.categories.items()
    }


def intervention_episodes(tables: FeatureTables, rounds: Rounds) -> Episodes:
    """The interventions of the measured citizens as sorted `Episodes` (others play no part)."""
    citizen = lookup(rounds.citizen_ids, tables.episode_citizen, "citizen ids")
    keep = citizen >= 0
    code = category_codes(tables.intervention[keep], INTERVENTION_CODES, "interventions.intervention")
    start, end = tables.started_day[keep], tables.ended_day[keep]
    if (code < 0).any() or np.isnan(start).any():
        raise ValueError("interventions.intervention and interventions.started_on must not be empty")
    return sorted_episodes(citizen[keep], code, start.astype(np.int64), end)


def row_labels(dataset: Dataset, rounds: Rounds, horizon_months: int) -> dict[str, np.ndarray]:
    """The label columns (LABEL_COLUMNS) of the sorted rows; IPCW weights are over these rows.

    Training's only: the array core never computes a label. A citizen without an outcome row is
    censored at every measurement.
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


def numeric_features(
    tables: FeatureTables, rounds: Rounds, chunk_rows: int = CHUNK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """The NUMERIC_FEATURES of the sorted rows as one (features, rows) float block, and each row's
    `pattern_3m` index into PATTERNS. The score changes and intervention histories run in chunks of
    `chunk_rows` rows and write straight into the block, so a register needs little more memory than
    the block itself; the chunking never changes a value."""
    n = len(rounds.day)
    block = np.empty((len(NUMERIC_FEATURES), n))

    def put(values: dict[str, np.ndarray], rows: slice = slice(None)) -> None:
        for name, column in values.items():
            block[_NUMERIC_ROW[name], rows] = column

    block[_LEVEL_ROWS] = tables.scores[rounds.order].T
    levels = block[_LEVEL_ROWS]  # (scores, rows), a view
    put(round_features(tables, rounds))
    put(background_features(tables, rounds))
    episodes = intervention_episodes(tables, rounds)
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


def lookback_windows(rank: np.ndarray, at: np.ndarray, lookback: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows that the score changes of the rows `at` read: each row's window of itself and up to
    `lookback` earlier rounds of its citizen (`rank` is each row's round), window after window (a row
    may repeat), and where each row of `at` ends its window."""
    before = np.minimum(rank[at], lookback)
    ends = np.cumsum(before + 1) - 1
    rows = np.repeat(at - ends, before + 1) + np.arange(ends[-1] + 1 if len(at) else 0)
    return rows, ends


def numeric_features_at(tables: FeatureTables, rounds: Rounds, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`numeric_features` of the sorted rows `at` only (e.g. each citizen's last round, all that serving
    predicts for), as a (features, len(at)) block and `pattern_3m` indices. Every value is computed
    as the whole build computes it, from the same rows, so it equals the whole build's bit for bit;
    the score changes read only each row's window of SLOPE_ROUNDS rounds, the interventions only the
    rows `at`."""
    block = np.empty((len(NUMERIC_FEATURES), len(at)))

    def put(values: dict[str, np.ndarray]) -> None:
        for name, column in values.items():
            block[_NUMERIC_ROW[name]] = column

    block[_LEVEL_ROWS] = tables.scores[rounds.order[at]].T
    put({name: column[at] for name, column in round_features(tables, rounds).items()})  # a count over all rounds
    put(background_features(tables, rounds.take(at)))
    rows, ends = lookback_windows(rounds.rank, at, SLOPE_ROUNDS - 1)
    rank = rounds.rank[rows]
    scores, first = tables.scores[rounds.order[rows]], tables.scores[rounds.order[rows - rank]]
    changes = score_changes(scores, first, rounds.day[rows], rank, SCORE_COLUMNS)
    put({name: values[ends] for name, values in changes.items()})
    history, pattern = intervention_history(rounds.citizen[at], rounds.day[at], intervention_episodes(tables, rounds))
    put(history)
    return block, pattern


@dataclass(frozen=True)
class FeatureArrays:
    """The features of every measurement, sorted as `rounds` says, as arrays: what the feature frame
    and the model matrix are both made of.

    `numeric` is (NUMERIC_FEATURES, rows); `pattern` each row's index into PATTERNS; `background`
    per citizen of `tables` (index with `rounds.citizen_row`): codes into CATEGORY_LEVELS, and the
    `jobcentre` values.
    """

    tables: FeatureTables
    rounds: Rounds
    numeric: np.ndarray
    pattern: np.ndarray
    background: dict[str, np.ndarray]

    def last_rounds(self) -> np.ndarray:
        """Positions of each citizen's last row (rows are sorted by citizen, then date)."""
        return self.rounds.last()

    def numeric_rows(self, names: Sequence[str], rows: np.ndarray) -> np.ndarray:
        """The numeric features `names` of the rows at `rows`, as a (rows, names) float array."""
        return self.numeric[numeric_positions(tuple(names))][:, rows].T

    def category_codes(self, name: str, rows: np.ndarray) -> np.ndarray:
        """The codes into CATEGORY_LEVELS[name] (-1 = empty) of a levelled categorical feature at `rows`."""
        if name == PATTERN_COLUMN:
            return self.pattern[rows]
        return self.background[name][self.rounds.citizen_row[rows]]

    def category_values(self, name: str, rows: np.ndarray) -> np.ndarray:
        """The values (objects) of a categorical feature without contract levels (`jobcentre`) at `rows`."""
        return self.background[name][self.rounds.citizen_row[rows]]


@lru_cache(maxsize=64)
def numeric_positions(names: tuple[str, ...]) -> np.ndarray:
    """The rows of `names` in a FeatureArrays' numeric block; KeyError naming a name not among them."""
    unknown = [n for n in names if n not in _NUMERIC_ROW]
    if unknown:
        raise KeyError(f"not numeric feature(s): {', '.join(unknown[:10])}")
    at = np.array([_NUMERIC_ROW[n] for n in names], dtype=np.intp)
    at.flags.writeable = False
    return at


def feature_arrays(tables: FeatureTables, last_only: bool = False) -> FeatureArrays:
    """The array core: every feature of every measurement in `tables`, no labels. `last_only`: only
    each citizen's last round (its rows are then those rounds, one per citizen; the values are the
    same as the whole build's), the rows serving predicts for, at a fraction of the work."""
    rounds = sorted_rounds(tables)
    if last_only:
        at = rounds.last()
        block, pattern = numeric_features_at(tables, rounds, at)
        rounds = rounds.take(at)
    else:
        block, pattern = numeric_features(tables, rounds)
    return FeatureArrays(tables, rounds, block, pattern, background_codes(tables))


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
    rounds = sorted_rounds(tables_of(dataset))
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
        tables = tables_of(dataset)
        task.advance()
        features = feature_arrays(tables)
        rounds = features.rounds
        task.advance()
        ids = {
            "measurement_id": dataset.measurements["measurement_id"].array.take(rounds.order),
            "citizen_id": string_array(rounds.citizen_ids[rounds.citizen]),
            "measured_on": rounds.day.astype("datetime64[D]").astype("datetime64[s]"),
        }
        categories: dict[str, Any] = {
            PATTERN_COLUMN: pd.Categorical.from_codes(features.pattern, dtype=CATEGORY_DTYPES[PATTERN_COLUMN])
        }
        for name in BACKGROUND_CATEGORIES:
            if name in CATEGORY_DTYPES:
                codes = features.background[name][rounds.citizen_row]
                categories[name] = pd.Categorical.from_codes(codes, dtype=CATEGORY_DTYPES[name])
            else:  # the data's own values, in the dataset's string dtype
                categories[name] = dataset.citizens[name].array.take(rounds.citizen_row)
        others = {**categories, **row_labels(dataset, rounds, horizon_months)}
        task.advance()
    # The block goes in without a copy: cheap for one citizen, and no second copy of a register.
    numeric = pd.DataFrame(features.numeric.T, columns=_NUMERIC_INDEX, copy=False)
    return pd.concat([pd.DataFrame(ids, copy=False), numeric, pd.DataFrame(others, copy=False)], axis=1)
