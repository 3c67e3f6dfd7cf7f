"""The in-memory form of a contract dataset: five tables with canonical dtypes.

Canonical dtypes, used by the validator's output, the store's output and the simulator:
ids and codes `str`; dates `datetime64[s]` (NaT = empty); scores and counts nullable `Int64`;
shares and job orientation `float64` (NaN = empty).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import pandas as pd

from features.catalogue import SCORE_COLUMNS

TABLES: tuple[str, ...] = ("citizens", "caseworkers", "measurements", "interventions", "outcomes")

COLUMNS: dict[str, dict[str, str]] = {
    "citizens": {
        "citizen_id": "str",
        "jobcentre": "str",
        "birth_year": "Int64",
        "gender": "str",
        "origin": "str",
        "civil_status": "str",
        "children": "Int64",
        "education": "str",
        "benefit_share_5y": "float64",
        "enrolled_on": "date",
    },
    "caseworkers": {"caseworker_id": "str", "jobcentre": "str", "job_orientation": "float64"},
    "measurements": {
        "measurement_id": "str",
        "citizen_id": "str",
        "caseworker_id": "str",
        "measured_on": "date",
        **{c: "Int64" for c in SCORE_COLUMNS},
    },
    "interventions": {"citizen_id": "str", "intervention": "str", "started_on": "date", "ended_on": "date"},
    "outcomes": {"citizen_id": "str", "event": "str", "event_on": "date", "followed_until": "date"},
}

KEYS: dict[str, tuple[str, ...]] = {
    "citizens": ("citizen_id",),
    "caseworkers": ("caseworker_id",),
    "measurements": ("measurement_id",),
    "interventions": ("citizen_id", "intervention", "started_on"),
    "outcomes": ("citizen_id",),
}


@dataclass(frozen=True)
class Dataset:
    citizens: pd.DataFrame
    caseworkers: pd.DataFrame
    measurements: pd.DataFrame
    interventions: pd.DataFrame
    outcomes: pd.DataFrame

    def table(self, name: str) -> pd.DataFrame:
        return getattr(self, name)

    def tables(self) -> dict[str, pd.DataFrame]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def canonical(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The table's contract columns, in contract order, cast to the canonical dtypes."""
    out = {}
    for column, kind in COLUMNS[table].items():
        values = frame[column] if column in frame else pd.Series(pd.NA, index=frame.index)
        if kind == "date":
            out[column] = pd.to_datetime(values).astype("datetime64[s]")
        elif kind == "str":
            out[column] = values.astype("str").where(values.notna(), None) if len(values) else values.astype("str")
        else:
            out[column] = values.astype(kind)
    return pd.DataFrame(out, index=frame.index).reset_index(drop=True)


def empty_dataset() -> Dataset:
    return Dataset(**{t: canonical(t, pd.DataFrame(columns=list(COLUMNS[t]))) for t in TABLES})
