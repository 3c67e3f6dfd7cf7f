"""The contract tables that feature building reads, as plain numpy arrays: the core's input.

`build_features` (training, batch scoring, Dask) gets them from a contract `Dataset` with
`tables_of`; a serving request builds them straight from its pydantic histories
(`serving.histories.history_tables`), so that one citizen never pays pandas' fixed cost per column
and per frame. Only the columns the features use are here, and no outcomes: labels and censoring
weights are training's, made from the Dataset at the frame's edge (`features.build`).

Conventions: ids and codes are object arrays (None or NaN = empty), dates are day numbers since
1970-01-01 as float (NaN = empty), numbers are float (NaN = empty).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from features.catalogue import SCORE_COLUMNS
from features.dataset import Dataset
from features.feature_catalogue import BACKGROUND_CATEGORIES

# The citizens' numeric columns the features read, in the column order of `FeatureTables.background`.
BACKGROUND_VALUES: tuple[str, ...] = ("birth_year", "children", "benefit_share_5y")


@dataclass(frozen=True)
class FeatureTables:
    """Citizens, caseworkers, measurements and interventions as arrays (one row per table row)."""

    citizen_id: np.ndarray  # citizens
    enrolled_day: np.ndarray
    background: np.ndarray  # (citizens, BACKGROUND_VALUES)
    categories: dict[str, np.ndarray]  # BACKGROUND_CATEGORIES, each (citizens,) object
    caseworker_id: np.ndarray  # caseworkers
    job_orientation: np.ndarray
    measurement_id: np.ndarray  # measurements
    measured_citizen: np.ndarray
    measured_caseworker: np.ndarray
    measured_day: np.ndarray
    scores: np.ndarray  # (measurements, SCORE_COLUMNS)
    episode_citizen: np.ndarray  # interventions
    intervention: np.ndarray
    started_day: np.ndarray
    ended_day: np.ndarray


def day_numbers(values: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 of a date column, as float (NaN for an empty date)."""
    dates = values.to_numpy()
    if dates.dtype.kind != "M":
        dates = pd.to_datetime(values).to_numpy()
    return dates_as_days(dates)


def dates_as_days(dates: np.ndarray) -> np.ndarray:
    """Day numbers (float, NaN for NaT) of datetime64 values or of Python dates (None = empty)."""
    dates = np.asarray(dates, dtype="datetime64[D]")
    return np.where(np.isnat(dates), np.nan, dates.astype(np.int64).astype(float))


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def date_objects_as_days(dates: Iterable[date | None]) -> np.ndarray:
    """`dates_as_days` of Python dates (None = empty) by their ordinals: a tenth of the time numpy
    takes to parse a list of date objects into datetime64 (a 4,000-citizen request has 30,000)."""
    return np.array([np.nan if d is None else d.toordinal() - _EPOCH_ORDINAL for d in dates], dtype=float)


def strings(values: pd.Series) -> np.ndarray:
    """A string column as a numpy object array."""
    return values.to_numpy(dtype=object)


def numbers(frame: pd.DataFrame, names: tuple[str, ...]) -> np.ndarray:
    """The columns `names` of `frame` as one (rows, names) float array, NaN where empty."""
    return frame[list(names)].to_numpy(dtype=float, na_value=np.nan).reshape(len(frame), len(names))


def tables_of(dataset: Dataset) -> FeatureTables:
    """The arrays of a contract Dataset (its columns checked by `features.build.require_columns`)."""
    c, cw, m, e = dataset.citizens, dataset.caseworkers, dataset.measurements, dataset.interventions
    return FeatureTables(
        citizen_id=strings(c["citizen_id"]),
        enrolled_day=day_numbers(c["enrolled_on"]),
        background=numbers(c, BACKGROUND_VALUES),
        categories={name: strings(c[name]) for name in BACKGROUND_CATEGORIES},
        caseworker_id=strings(cw["caseworker_id"]),
        job_orientation=cw["job_orientation"].to_numpy(dtype=float, na_value=np.nan),
        measurement_id=strings(m["measurement_id"]),
        measured_citizen=strings(m["citizen_id"]),
        measured_caseworker=strings(m["caseworker_id"]),
        measured_day=day_numbers(m["measured_on"]),
        scores=numbers(m, SCORE_COLUMNS),
        episode_citizen=strings(e["citizen_id"]),
        intervention=strings(e["intervention"]),
        started_day=day_numbers(e["started_on"]),
        ended_day=day_numbers(e["ended_on"]),
    )
