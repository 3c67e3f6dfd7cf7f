"""One feature row per measurement, point in time, with the label of the contract's target.

`build_features` is the only way features are made: for training (all citizens), batch scoring and
a serving request (a Dataset holding one citizen) alike. It sorts measurements by citizen id, date
and measurement id once, turns the tables into numpy arrays, and lets the feature families in
`levels`, `history` and `labels` work on them vectorised — no loop over citizens, and little pandas
overhead for one citizen. A measurement's features use only rows dated on or before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from features.catalogue import INTERVENTION_CODES, PATTERNS, SCORE_COLUMNS
from features.dataset import COLUMNS, Dataset
from features.feature_catalogue import (
    BACKGROUND_CATEGORIES,
    FEATURE_COLUMNS,
    ID_COLUMNS,
    LABEL_COLUMNS,
    NUMERIC_FEATURES,
    PATTERN_COLUMN,
)
from features.history import intervention_history
from features.labels import EVENT_KINDS, horizon_labels, ipcw_weights
from features.levels import caseworker_history, round_history, score_changes

PATTERN_DTYPE = pd.CategoricalDtype(list(PATTERNS))
OUTPUT_COLUMNS: tuple[str, ...] = ID_COLUMNS + FEATURE_COLUMNS + LABEL_COLUMNS
_NUMERIC_INDEX = pd.Index(NUMERIC_FEATURES)
_CODES = np.array(INTERVENTION_CODES, dtype=object)
_EVENT_KINDS = np.array(EVENT_KINDS, dtype=object)
MAX_CELLS = 4_000_000


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


def lookup(keys: np.ndarray, values: np.ndarray, what: str) -> np.ndarray:
    """Position of each of `values` in `keys` (-1 where absent, or empty); ValueError if `keys`
    repeat. One hash pass (factorize), cheap for one citizen and fast for a register."""
    codes, uniques = pd.factorize(np.concatenate([keys, values]))
    key_codes = codes[: len(keys)]
    at = np.full(len(uniques) + 1, -1)  # the extra slot answers code -1 (an empty value)
    at[key_codes] = np.arange(len(keys))
    if len(keys) and (key_codes < 0).any() | (np.bincount(key_codes[key_codes >= 0]).max() > 1):
        raise ValueError(f"{what} must be unique and not empty")
    return at[codes[len(keys) :]]


def strings(values: pd.Series) -> np.ndarray:
    """A string column as a numpy object array (None/NaN for empty)."""
    return values.to_numpy(dtype=object)


def sorted_rounds(dataset: Dataset) -> Rounds:
    """The measurements of `dataset` in feature order, with each row's citizen, day and round."""
    m = dataset.measurements
    citizen, citizen_ids = pd.factorize(strings(m["citizen_id"]), sort=True)
    citizen_ids = np.asarray(citizen_ids, dtype=object)
    citizen_row = lookup(strings(dataset.citizens["citizen_id"]), citizen_ids, "citizens.citizen_id")
    if (citizen < 0).any() or (citizen_row < 0).any():
        unknown = ", ".join(map(str, citizen_ids[citizen_row < 0][:5]))
        raise ValueError(f"measurements.citizen_id empty or not in citizens: {unknown}")
    day = day_numbers(m["measured_on"])
    if np.isnan(day).any():
        raise ValueError("measurements.measured_on must not be empty")
    day = day.astype(np.int64)
    order = np.lexsort((day, citizen))
    same = (np.diff(citizen[order]) == 0) & (np.diff(day[order]) == 0)
    if same.any():  # two rounds of a citizen on one day: the measurement id decides, in every path
        order = np.lexsort((strings(m["measurement_id"]), day, citizen))
    citizen, day = citizen[order], day[order]
    starts = np.flatnonzero(np.r_[True, citizen[1:] != citizen[:-1]]) if len(citizen) else np.zeros(0, int)
    rank = np.arange(len(citizen)) - np.repeat(starts, np.diff(np.r_[starts, len(citizen)]))
    return Rounds(order, citizen_ids, citizen, citizen_row[citizen], day, rank)


def measurement_features(dataset: Dataset, rounds: Rounds) -> dict[str, np.ndarray]:
    """Score levels and changes, round history and caseworker features, per sorted row."""
    m = dataset.measurements
    scores = np.column_stack(
        [m[name].to_numpy(dtype=float, na_value=np.nan) for name in SCORE_COLUMNS]
    )[rounds.order]
    out: dict[str, np.ndarray] = {name: scores[:, k] for k, name in enumerate(SCORE_COLUMNS)}
    # Scores in column blocks of about MAX_CELLS values, to bound temporary memory on large data.
    step = max(1, MAX_CELLS // max(len(scores), 1))
    for first in range(0, len(SCORE_COLUMNS), step):
        names = SCORE_COLUMNS[first : first + step]
        out.update(score_changes(scores[:, first : first + step], rounds.day, rounds.rank, names))
    enrolled = day_numbers(dataset.citizens["enrolled_on"])[rounds.citizen_row]
    out.update(round_history(rounds.day, enrolled, rounds.rank))
    caseworker_ids = strings(m["caseworker_id"])[rounds.order]
    cw = dataset.caseworkers
    found = lookup(strings(cw["caseworker_id"]), caseworker_ids, "caseworkers.caseworker_id")
    orientation = np.where(found >= 0, cw["job_orientation"].to_numpy(dtype=float, na_value=np.nan)[found], np.nan)
    out.update(caseworker_history(pd.factorize(caseworker_ids)[0], orientation, rounds.rank))
    return out


def background_features(dataset: Dataset, rounds: Rounds) -> dict[str, np.ndarray]:
    """Age at the measurement (its year minus birth year), children and benefit share, per sorted row."""
    c = dataset.citizens
    year = (rounds.day.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970).astype(float)
    row = rounds.citizen_row

    def numbers(column: str) -> np.ndarray:
        return c[column].to_numpy(dtype=float, na_value=np.nan)[row]

    return {"age": year - numbers("birth_year"), "children": numbers("children"), "benefit_share_5y": numbers("benefit_share_5y")}


def intervention_features(dataset: Dataset, rounds: Rounds) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The intervention histories of `history.intervention_history` for the sorted rows.

    Episodes of citizens without measurements play no part.
    """
    e = dataset.interventions
    citizen = lookup(rounds.citizen_ids, strings(e["citizen_id"]), "citizen ids")
    e = e[citizen >= 0]
    citizen = citizen[citizen >= 0]
    code = lookup(_CODES, strings(e["intervention"]), "intervention codes")
    if (code < 0).any():
        unknown = pd.unique(strings(e["intervention"])[code < 0])[:5]
        raise ValueError(f"interventions.intervention has unknown code(s): {', '.join(map(str, unknown))}")
    start = day_numbers(e["started_on"])
    if np.isnan(start).any():
        raise ValueError("interventions.started_on must not be empty")
    return intervention_history(rounds.citizen, rounds.day, citizen, code, start.astype(np.int64), day_numbers(e["ended_on"]))


def row_labels(dataset: Dataset, rounds: Rounds, horizon_months: int) -> dict[str, np.ndarray]:
    """The label columns (LABEL_COLUMNS) of the sorted rows; IPCW weights are over these rows.

    A citizen without an outcome row is censored at every measurement.
    """
    o = dataset.outcomes
    at = lookup(rounds.citizen_ids, strings(o["citizen_id"]), "citizen ids")
    known = at >= 0
    event_day = np.full(len(rounds.citizen_ids), np.nan)
    followed_day = np.full(len(rounds.citizen_ids), np.nan)
    is_event = lookup(_EVENT_KINDS, strings(o["event"]), "event kinds") >= 0
    event_day[at[known]] = np.where(is_event, day_numbers(o["event_on"]), np.nan)[known]
    followed_day[at[known]] = day_numbers(o["followed_until"])[known]
    labels = horizon_labels(rounds.day, event_day[rounds.citizen], followed_day[rounds.citizen], horizon_months)
    horizon_days = labels.pop("horizon_days")
    labels["ipcw_weight"] = ipcw_weights(
        labels["label"], labels["time_to_event_days"], labels["event_observed"], horizon_days
    )
    return {name: labels[name] for name in LABEL_COLUMNS}


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


def build_features(dataset: Dataset, horizon_months: int = 12, as_of: date | None = None) -> pd.DataFrame:
    """One row per measurement: ID_COLUMNS, FEATURE_COLUMNS, LABEL_COLUMNS (see docs/feature-catalogue.md).

    Rows are sorted by citizen id, measured_on and measurement id. With `as_of`, the dataset is first
    truncated to what was known at the end of that day (`truncate_dataset`). `ipcw_weight` is
    estimated over the rows built together, so it only means something for a training set.
    """
    require_columns(dataset)
    if as_of is not None:
        dataset = truncate_dataset(dataset, as_of)
    rounds = sorted_rounds(dataset)
    numeric = measurement_features(dataset, rounds)
    numeric.update(background_features(dataset, rounds))
    history, pattern = intervention_features(dataset, rounds)
    numeric.update(history)
    block = np.empty((len(NUMERIC_FEATURES), len(rounds.day)))
    for k, name in enumerate(NUMERIC_FEATURES):
        block[k] = numeric[name]
    m, c = dataset.measurements, dataset.citizens
    # All non-numeric columns in one frame, the numeric block (no copy) between its two halves:
    # the cheapest assembly for one citizen, and no copy of the block for a register.
    others = {
        "measurement_id": m["measurement_id"].array.take(rounds.order),
        "citizen_id": pd.array(rounds.citizen_ids[rounds.citizen], dtype="str"),
        "measured_on": rounds.day.astype("datetime64[D]").astype("datetime64[s]"),
        PATTERN_COLUMN: pd.Categorical.from_codes(pattern, dtype=PATTERN_DTYPE),
        **{name: c[name].array.take(rounds.citizen_row) for name in BACKGROUND_CATEGORIES},
        **row_labels(dataset, rounds, horizon_months),
    }
    others = pd.DataFrame(others, copy=False)
    head = len(ID_COLUMNS)
    numeric_frame = pd.DataFrame(block.T, columns=_NUMERIC_INDEX, copy=False)
    return pd.concat([others.iloc[:, :head], numeric_frame, others.iloc[:, head:]], axis=1)
