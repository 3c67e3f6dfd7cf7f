"""Citizens' histories (the API's pydantic requests) as the feature core's arrays, and as Datasets.

A request's histories become the contract tables as numpy arrays (`history_tables`), whose features
come from `features.build.feature_arrays`, the core of the `build_features` that training uses: no
contract `Dataset` and no DataFrame for a request. `history_dataset` gives the same tables as a
Dataset (for tests and benchmarks that compare the two paths); a stored citizen's rows become a
history (`history_from_dataset`) for the caseworker page's display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from features.build import string_array
from features.catalogue import CASEWORKER_COLUMNS, CITIZEN_COLUMNS, SCORE_COLUMNS
from features.dataset import COLUMNS, Dataset
from features.feature_catalogue import BACKGROUND_CATEGORIES
from features.tables import BACKGROUND_VALUES, FeatureTables, date_objects_as_days
from serving.schemas import CitizenHistory


def _column(kind: str, values: list) -> Any:
    """`values` as the canonical dtype of a contract column (see features.dataset)."""
    if kind == "str":
        return string_array(values)
    if kind == "date":
        return np.array(values, dtype="datetime64[D]").astype("datetime64[s]")
    if kind == "Int64":
        numbers = np.array(values, dtype=float)
        missing = np.isnan(numbers)
        return pd.arrays.IntegerArray(np.where(missing, 0, numbers).astype(np.int64), missing)
    return np.array(values, dtype=float)


def _table(name: str, columns: Mapping[str, list]) -> pd.DataFrame:
    """A contract table with canonical dtypes, built from plain column lists.

    `features.dataset.canonical` would give the same frame; building the arrays directly skips its
    per-column parsing, which dominates the time of a one-citizen request.
    """
    kinds = COLUMNS[name]
    return pd.DataFrame({c: _column(kinds[c], columns[c]) for c in kinds}, copy=False)


@cache
def _no_outcomes() -> pd.DataFrame:
    """The empty outcomes table of every request (a request has no outcomes); shared, never changed."""
    return _table("outcomes", {c: [] for c in COLUMNS["outcomes"]})


def history_dataset(histories: Sequence[CitizenHistory]) -> Dataset:
    """One contract Dataset holding every history (no outcomes), for one `build_features` call.

    Caseworker ids are prefixed with the citizen's position, so two histories that give the same
    caseworker different job orientations cannot clash; only equality within a citizen matters to
    the features. A round without `measurement_id` gets `round-<n>`, n its position in the request.
    """
    citizens = {c: [getattr(h.citizen, c) for h in histories] for c in COLUMNS["citizens"]}
    m_ids, m_citizens, m_caseworkers, m_days, scores = [], [], [], [], []
    for i, h in enumerate(histories):
        for k, m in enumerate(h.measurements):
            m_ids.append(m.measurement_id or f"round-{k + 1}")
            m_citizens.append(h.citizen.citizen_id)
            m_caseworkers.append(f"{i}/{m.caseworker_id}")
            m_days.append(m.measured_on)
            scores.append([*m.citizen.__dict__.values(), *m.caseworker.__dict__.values()])
    values = np.array(scores, dtype=float).reshape(len(scores), len(SCORE_COLUMNS)).T
    measurements = {"measurement_id": m_ids, "citizen_id": m_citizens, "caseworker_id": m_caseworkers}
    measurements |= {"measured_on": m_days, **dict(zip(SCORE_COLUMNS, values, strict=True))}
    # Every round's caseworker gets a row, as the contract requires; unlisted ones an empty orientation.
    workers: dict[str, float | None] = {}
    for i, h in enumerate(histories):
        workers.update({f"{i}/{m.caseworker_id}": None for m in h.measurements})
        workers.update({f"{i}/{c.caseworker_id}": c.job_orientation for c in h.caseworkers})
    episodes = [(h.citizen.citizen_id, e) for h in histories for e in h.interventions]
    tables = {
        "citizens": _table("citizens", citizens),
        "caseworkers": _table(
            "caseworkers",
            {
                "caseworker_id": list(workers),
                "jobcentre": [None] * len(workers),
                "job_orientation": list(workers.values()),
            },
        ),
        "measurements": _table("measurements", measurements),
        "interventions": _table(
            "interventions",
            {
                "citizen_id": [c for c, _ in episodes],
                "intervention": [e.intervention for _, e in episodes],
                "started_on": [e.started_on for _, e in episodes],
                "ended_on": [e.ended_on for _, e in episodes],
            },
        ),
        "outcomes": _no_outcomes(),
    }
    return Dataset(**tables)


def _objects(values: list) -> np.ndarray:
    """Python values as a 1-D object array (a list of tuples stays a list of tuples)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def history_tables(histories: Sequence[CitizenHistory]) -> FeatureTables:
    """The feature core's tables of every history, as `tables_of(history_dataset(histories))` gives
    them, built straight from the pydantic objects (see `history_dataset` for the caseworker ids and
    the ids of rounds without one)."""
    citizens = [h.citizen for h in histories]
    m_ids, m_citizens, m_caseworkers, m_days, scores = [], [], [], [], []
    workers: dict[str, float | None] = {}
    e_citizens, e_codes, e_starts, e_ends = [], [], [], []
    for i, h in enumerate(histories):
        cid = h.citizen.citizen_id
        for k, m in enumerate(h.measurements):
            m_ids.append(m.measurement_id or f"round-{k + 1}")
            m_citizens.append(cid)
            worker = f"{i}/{m.caseworker_id}"
            m_caseworkers.append(worker)
            workers[worker] = None
            m_days.append(m.measured_on)
            scores.append([*m.citizen.__dict__.values(), *m.caseworker.__dict__.values()])
        workers.update({f"{i}/{c.caseworker_id}": c.job_orientation for c in h.caseworkers})
        for e in h.interventions:
            e_citizens.append(cid)
            e_codes.append(e.intervention)
            e_starts.append(e.started_on)
            e_ends.append(e.ended_on)
    return FeatureTables(
        citizen_id=_objects([c.citizen_id for c in citizens]),
        enrolled_day=date_objects_as_days([c.enrolled_on for c in citizens]),
        background=np.array([[getattr(c, name) for name in BACKGROUND_VALUES] for c in citizens], dtype=float).reshape(
            len(citizens), len(BACKGROUND_VALUES)
        ),
        categories={name: _objects([getattr(c, name) for c in citizens]) for name in BACKGROUND_CATEGORIES},
        caseworker_id=_objects(list(workers)),
        job_orientation=np.array(list(workers.values()), dtype=float),
        measurement_id=_objects(m_ids),
        measured_citizen=_objects(m_citizens),
        measured_caseworker=_objects(m_caseworkers),
        measured_day=date_objects_as_days(m_days),
        scores=np.array(scores, dtype=float).reshape(len(scores), len(SCORE_COLUMNS)),
        episode_citizen=_objects(e_citizens),
        intervention=_objects(e_codes),
        started_day=date_objects_as_days(e_starts),
        ended_day=date_objects_as_days(e_ends),
    )


def _plain_columns(frame: pd.DataFrame) -> dict[str, list]:
    """Each column as a list of plain Python values (dates as `date`), None where empty."""
    out = {}
    for name in frame.columns:
        values = frame[name]
        if values.dtype.kind == "M":
            out[name] = [None if pd.isna(v) else v.date() for v in values]
        else:
            out[name] = values.astype(object).where(values.notna(), None).tolist()
    return out


def histories_from_dataset(
    dataset: Dataset, citizen_ids: Sequence[str] | None = None, as_of: date | None = None
) -> list[CitizenHistory]:
    """The histories of citizens of a contract Dataset (e.g. from `features.store.load`), as known at
    the end of `as_of` (default: everything): later rounds and episodes are left out, and an episode
    ending after `as_of` is still running.

    `citizen_ids` None: every citizen with a round by then, sorted by id. Raises KeyError naming a
    requested citizen without rounds by then.
    """
    m, e, c = dataset.measurements, dataset.interventions, dataset.citizens
    if citizen_ids is not None:
        m, e = m[m["citizen_id"].isin(citizen_ids)], e[e["citizen_id"].isin(citizen_ids)]
        c = c[c["citizen_id"].isin(citizen_ids)]
    if as_of is not None:
        cut = pd.Timestamp(as_of)
        m, e = m[m["measured_on"] <= cut], e[e["started_on"] <= cut].copy()
        e["ended_on"] = e["ended_on"].mask(e["ended_on"] > cut)
    m = m.sort_values(["citizen_id", "measured_on", "measurement_id"])
    orientation = dict(
        zip(*_plain_columns(dataset.caseworkers[["caseworker_id", "job_orientation"]]).values(), strict=True)
    )
    register = {row["citizen_id"]: row for row in pd.DataFrame(_plain_columns(c)).to_dict("records")}
    rounds: dict[str, list[dict]] = {}
    mc = _plain_columns(m)
    for k, cid in enumerate(mc["citizen_id"]):
        rounds.setdefault(cid, []).append(
            {
                "measurement_id": mc["measurement_id"][k],
                "measured_on": mc["measured_on"][k],
                "caseworker_id": mc["caseworker_id"][k],
                "citizen": {col[4:]: mc[col][k] for col in CITIZEN_COLUMNS if mc[col][k] is not None},
                "caseworker": {col[3:]: mc[col][k] for col in CASEWORKER_COLUMNS if mc[col][k] is not None},
            }
        )
    episodes: dict[str, list[dict]] = {}
    ec = _plain_columns(e)
    for k, cid in enumerate(ec["citizen_id"]):
        episodes.setdefault(cid, []).append(
            {"intervention": ec["intervention"][k], "started_on": ec["started_on"][k], "ended_on": ec["ended_on"][k]}
        )
    wanted = sorted(rounds) if citizen_ids is None else list(citizen_ids)
    out = []
    for cid in wanted:
        if cid not in rounds or cid not in register:
            raise KeyError(f"citizen {cid!r} has no measurements" + (f" by {as_of}" if as_of else ""))
        workers = dict.fromkeys(r["caseworker_id"] for r in rounds[cid])
        out.append(
            CitizenHistory.model_validate(
                {
                    "citizen": register[cid],
                    "measurements": rounds[cid],
                    "interventions": episodes.get(cid, []),
                    "caseworkers": [{"caseworker_id": w, "job_orientation": orientation.get(w)} for w in workers],
                    "as_of": as_of,
                }
            )
        )
    return out


def history_from_dataset(dataset: Dataset, citizen_id: str, as_of: date | None = None) -> CitizenHistory:
    """The history of one citizen of a contract Dataset; see `histories_from_dataset`."""
    return histories_from_dataset(dataset, [citizen_id], as_of)[0]
