"""Scoring and explaining citizens' histories: the one code path behind the API and the caseworker page.

A request's histories become the contract tables as numpy arrays (`serving.histories.history_tables`),
whose features come from `features.build.feature_arrays` — the core of the `build_features` that
training uses — with no Dataset, no DataFrame and no label. The last measurement of each citizen goes
into the model matrix (`JobChanceModel.matrix_of`) and is scored with one XGBoost call for the
probability and one for the TreeSHAP contributions. Contributions are summed (one `np.add.reduceat`)
per indicator, intervention group, history, caseworker and background item (`belongs_to` of the
model's catalogue) on the calibrated log-odds scale, so base value + factors = the log-odds whose probability is shown.

`Predictor` holds the model. It loads the version under the champion alias from the MLflow registry
and, on a background thread, notices when the alias moves and swaps the new version in with one
reference assignment: a request reads the reference once, so it is scored wholly by one version.

(About 560 lines: scoring, the batched what-if and the model holder share the LoadedModel and the
explanation layout.)

Use (the service and the caseworker page):
    predictor = Predictor(load_settings()); predictor.start()       # or Predictor.of_model(model)
    history = history_from_dataset(features.store.load(url, [citizen_id]), citizen_id)  # serving.histories
    prediction = predictor.predict(history)                         # schemas.Prediction
    score_tables(loaded, tables, [history])                         # the same from ready tables (the page)
    predictions = predictor.predict_many(histories)                 # one feature build, one model call
    moves, at_top = predictor.step_ups(history, prediction)         # each indicator a step up, one batch
    info = predictor.model_info()                                   # schemas.ModelInfo
    score(predictor.loaded, histories)                              # the same, on a LoadedModel
    predictor.predict_records(histories)                            # dicts, for large JSON answers
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from pydantic import TypeAdapter

from bip.errors import redacted
from features.build import FeatureArrays, feature_arrays, numeric_positions
from features.catalogue import (
    INDICATOR_CODES,
    INDICATORS,
    SCORE_MAX,
    factor_label,
)
from features.dataset import Dataset
from features.feature_catalogue import NUMERIC_FEATURES, change_column
from features.tables import FeatureTables, tables_of
from serving.histories import history_tables
from serving.schemas import (
    CitizenHistory,
    FeatureEntry,
    ModelInfo,
    ModelRef,
    Prediction,
)
from training.model import expit

logger = logging.getLogger(__name__)

CHANGE = "change_prev"


class ModelUnavailable(RuntimeError):
    """No model is loaded (no version under the alias yet, or it could not be loaded)."""


@dataclass(frozen=True)
class Factors:
    """How the model's features sum into factors (each feature belongs to one), and each factor's labels."""

    features: np.ndarray  # the feature positions, grouped factor by factor (in `keys` order)
    starts: np.ndarray  # where each factor's features begin in `features`
    keys: list[str]
    kinds: list[str]
    labels_da: list[str]
    labels_en: list[str]

    @classmethod
    def of(cls, catalogue: pd.DataFrame) -> Factors:
        owners = catalogue["belongs_to"].astype(str).tolist()
        keys = list(dict.fromkeys(owners))
        position = {k: j for j, k in enumerate(keys)}
        owner = np.array([position[k] for k in owners], dtype=np.intp)
        features = np.argsort(owner, kind="stable")
        starts = np.searchsorted(owner[features], np.arange(len(keys)))
        kinds = [str(catalogue.loc[catalogue["belongs_to"].astype(str) == k, "kind"].iloc[0]) for k in keys]
        labels = [factor_label(k, kind) for k, kind in zip(keys, kinds, strict=True)]
        return cls(features, starts, keys, kinds, [da for da, _ in labels], [en for _, en in labels])

    def sums(self, contributions: np.ndarray) -> np.ndarray:
        """Each row's contributions (rows x features; further columns are ignored) summed per factor
        (rows x factors). A plain sum rather than a product with a 0/1 matrix: BLAS would start threads
        that burn a second core for nothing (a 4,000-citizen batch spent a fifth more CPU than wall)."""
        return np.add.reduceat(contributions[:, self.features], self.starts, axis=1)


@dataclass(frozen=True)
class LoadedModel:
    """A model with its registry identity and what explaining with it needs, computed once at load."""

    model: Any  # training.model.JobChanceModel
    name: str
    version: str
    alias: str
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    factors: Factors = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "factors", Factors.of(self.model.catalogue))  # frozen: set once here

    @property
    def ref(self) -> ModelRef:
        return ModelRef(name=self.name, version=self.version)


# ---------------------------------------------------------------------------------------------
# Scoring and explaining


_PREDICTIONS = TypeAdapter(list[Prediction])
_INDICATOR_SCORES = tuple(
    score for code in INDICATOR_CODES for score in (f"cit_{code}", f"cw_{code}") if score in NUMERIC_FEATURES
)
_INDICATOR_CHANGES = tuple(change_column(score, CHANGE) for score in _INDICATOR_SCORES)


def _plain(values: np.ndarray, whole: bool = False) -> list:
    """Floats as a list of Python numbers (ints when `whole`), None where NaN."""
    missing = np.isnan(values)
    out = np.where(missing, 0, values).astype(int if whole else float).astype(object)
    out[missing] = None
    return out.tolist()


def _indicator_scores(features: FeatureArrays, positions: np.ndarray) -> dict[str, list[dict]]:
    """Per indicator, each row's citizen and caseworker score and change since the round before
    (None where unanswered, or where the indicator has no such question)."""
    scores = _plain(features.numeric[numeric_positions(_INDICATOR_SCORES)][:, positions], whole=True)
    changes = _plain(features.numeric[numeric_positions(_INDICATOR_CHANGES)][:, positions])
    column = {
        **dict(zip(_INDICATOR_SCORES, scores, strict=True)),
        **dict(zip(_INDICATOR_CHANGES, changes, strict=True)),
    }
    missing = [None] * len(positions)
    out = {}
    for code in INDICATOR_CODES:
        cit, cw = f"cit_{code}", f"cw_{code}"
        out[code] = [
            {"citizen": a, "caseworker": b, "citizen_change": c, "caseworker_change": d}
            for a, b, c, d in zip(
                column.get(cit, missing),
                column.get(cw, missing),
                column.get(change_column(cit, CHANGE), missing),
                column.get(change_column(cw, CHANGE), missing),
                strict=True,
            )
        ]
    return out


def probability_steps(base: np.ndarray, ranked: np.ndarray) -> np.ndarray:
    """The waterfall in probability terms: adding the ranked contributions (rows x factors, log-odds) one
    at a time to the base value, how much each moves the probability. Per row the steps add up to the
    probability minus the average citizen's; their sizes depend on the order (the log-odds do not)."""
    after = expit(base[:, None] + np.cumsum(ranked, axis=1))
    before = np.concatenate([expit(base)[:, None], after[:, :-1]], axis=1)
    return after - before


def _explanations(
    loaded: LoadedModel, features: FeatureArrays, positions: np.ndarray, feature_contributions: bool
) -> tuple[np.ndarray, list[dict]]:
    """Probabilities and explanations (plain dicts, validated into pydantic models once, by the caller,
    in Rust) of the rows at `positions` of the feature arrays: one model call for the probabilities,
    one for the contributions, whatever the number of rows."""
    model, factors = loaded.model, loaded.factors
    X = model.matrix_of(features, positions)
    log_odds = model.log_odds(X)
    probability = expit(log_odds)
    contributions = model.contributions(X)
    summed = factors.sums(contributions)  # the last column, the base value, belongs to no factor
    order = np.argsort(-np.abs(summed), axis=1, kind="stable")
    base = contributions[:, -1]
    ranked = np.take_along_axis(summed, order, axis=1)
    steps = probability_steps(base, ranked)
    scores = _indicator_scores(features, positions)
    described = [
        (k, kind, da, en, scores[k] if kind == "indicator" else None)
        for k, kind, da, en in zip(factors.keys, factors.kinds, factors.labels_da, factors.labels_en, strict=True)
    ]
    # Plain Python numbers made once per array (not per row and factor): 100,000 factors in a large batch.
    rows = zip(
        order.tolist(),
        ranked.tolist(),
        steps.tolist(),
        base.tolist(),
        expit(base).tolist(),
        log_odds.tolist(),
        probability.tolist(),
        strict=True,
    )
    explanations = []
    for r, (factor_order, values, changes, base_value, base_probability, row_log_odds, p) in enumerate(rows):
        explanations.append(
            {
                "scale": "log-odds",
                "base_value": base_value,
                "base_probability": base_probability,
                "log_odds": row_log_odds,
                "probability": p,
                "factors": [
                    {
                        "key": key,
                        "kind": kind,
                        "label_da": da,
                        "label_en": en,
                        "contribution": value,
                        "probability_change": step,
                        "direction": "raises" if value >= 0 else "lowers",
                        "scores": None if indicator_scores is None else indicator_scores[r],
                    }
                    for (key, kind, da, en, indicator_scores), value, step in zip(
                        map(described.__getitem__, factor_order), values, changes, strict=True
                    )
                ],
                "features": _feature_list(model, X[r], contributions[r]) if feature_contributions else None,
            }
        )
    return probability, explanations


def _feature_list(model: Any, x: np.ndarray, contributions: np.ndarray) -> list[dict]:
    catalogue = model.catalogue
    return [
        {"name": name, "belongs_to": str(belongs), "value": value, "contribution": c}
        for name, belongs, value, c in zip(
            catalogue["name"],
            catalogue["belongs_to"],
            _plain(x.astype(float)),
            contributions[:-1].tolist(),
            strict=True,
        )
    ]


def score(
    loaded: LoadedModel, histories: Sequence[CitizenHistory], feature_contributions: bool = False
) -> list[Prediction]:
    """Predictions with explanations for the last round of each history, in the order given."""
    return _PREDICTIONS.validate_python(score_records(loaded, histories, feature_contributions))


class _GarbageCollectionPaused:
    """Pause Python's cyclic garbage collector while any thread is inside (reentrant, counted).

    Scoring thousands of citizens creates hundreds of thousands of small objects, and the full
    collections they trigger traverse the whole heap (the validated request included): a third of
    the time of a 4,000-citizen batch. None of these objects form cycles, so nothing is lost by
    collecting once afterwards instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._inside == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._inside += 1

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self._inside -= 1
            if self._inside == 0 and self._was_enabled:
                gc.enable()


gc_paused = _GarbageCollectionPaused()


def score_records(
    loaded: LoadedModel, histories: Sequence[CitizenHistory], feature_contributions: bool = False
) -> list[dict]:
    """`score` as plain dicts in the shape of `schemas.Prediction` (dates as `date`), for answers too
    large to build as pydantic objects: `pydantic_core.to_json` writes them as they are."""
    with gc_paused:
        return _score_records(loaded, histories, feature_contributions)


def _score_records(loaded: LoadedModel, histories: Sequence[CitizenHistory], feature_contributions: bool) -> list[dict]:
    if not histories:
        return []
    return _records(loaded, history_tables(histories), histories, feature_contributions)


def score_stored(loaded: LoadedModel, dataset: Dataset, histories: Sequence[CitizenHistory]) -> list[Prediction]:
    """Predictions for stored citizens (the caseworker page): the store's rows (`features.store.load`)
    go into the feature core's arrays once, with no round trip through pydantic; `histories`, made
    from the same rows for display (`serving.histories.history_from_dataset`), give the ids and as_of."""
    return _PREDICTIONS.validate_python(score_tables(loaded, tables_of(dataset), histories))


def score_tables(
    loaded: LoadedModel, tables: FeatureTables, histories: Sequence[CitizenHistory], feature_contributions: bool = False
) -> list[dict]:
    """`score_records` from tables already made (e.g. `features.tables.tables_of` of a stored citizen's
    rows, for the caseworker page): the histories give only the citizen ids and `as_of` of the answers."""
    with gc_paused:
        return _records(loaded, tables, histories, feature_contributions)


def _records(
    loaded: LoadedModel, tables: FeatureTables, histories: Sequence[CitizenHistory], feature_contributions: bool
) -> list[dict]:
    features = feature_arrays(tables, last_only=True)  # a prediction is for each citizen's last round
    rounds = features.rounds
    positions = features.last_rounds()
    probability, explanations = _explanations(loaded, features, positions, feature_contributions)
    at = {cid: r for r, cid in enumerate(rounds.citizen_ids[rounds.citizen[positions]].tolist())}
    measured = rounds.day[positions].astype("datetime64[D]").tolist()
    ids = tables.measurement_id[rounds.order[positions]].tolist()
    ref = {"name": loaded.name, "version": loaded.version}
    horizon = int(loaded.model.horizon_months)
    out = []
    for h in histories:
        r = at[h.citizen.citizen_id]
        out.append(
            {
                "citizen_id": h.citizen.citizen_id,
                "as_of": h.effective_as_of,
                "measured_on": measured[r],
                "measurement_id": str(ids[r]),
                "horizon_months": horizon,
                "probability": float(probability[r]),
                "model": ref,
                "explanation": explanations[r],
            }
        )
    return out


def model_info(loaded: LoadedModel) -> ModelInfo:
    """Name, version, alias, provenance, headline metrics and feature catalogue of a loaded model."""
    model = loaded.model
    catalogue = model.catalogue
    return ModelInfo(
        name=loaded.name,
        version=loaded.version,
        alias=loaded.alias,
        horizon_months=int(model.horizon_months),
        training_fingerprint=_jsonable(model.training_fingerprint),
        metrics=_jsonable(model.metrics),
        features=[
            FeatureEntry(
                name=r.name,
                belongs_to=str(r.belongs_to),
                kind=str(r.kind),
                label_da=str(r.label_da),
                label_en=str(r.label_en),
                monotone=int(r.monotone),
            )
            for r in catalogue.itertuples(index=False)
        ],
    )


def _jsonable(value: Any) -> Any:
    """Nested dicts/lists with NaN and infinities as None, so that the JSON answer stays valid."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# ---------------------------------------------------------------------------------------------
# What would move it: the batched what-if


@dataclass(frozen=True)
class StepUp:
    """The chance had both latest answers to an indicator been one step higher."""

    indicator: str
    citizen: int | None  # the latest answers, before the step
    caseworker: int | None
    probability: float
    change: float  # probability minus the current probability


def stepped_up(history: CitizenHistory, code: str, variant_id: str) -> CitizenHistory:
    """The history with both answers to `code` in the last round one step higher (capped at the top),
    under another citizen id so that several variants can be scored in one batch."""
    data = history.model_dump()
    data["citizen"]["citizen_id"] = variant_id
    last = max(data["measurements"], key=lambda m: m["measured_on"])
    for side in ("citizen", "caseworker"):
        if (answer := last[side].get(code)) is not None:
            last[side][code] = min(SCORE_MAX, answer + 1)
    return CitizenHistory.model_validate(data)


def step_ups(loaded: LoadedModel, history: CitizenHistory, now: Prediction) -> tuple[list[StepUp], list[str]]:
    """For each indicator the citizen answers and could still progress on, the chance one step up
    (largest gain first), and the codes of those already at the top or unanswered.

    All variants are scored in one batch (one feature build and one model call, not one per
    indicator); not audited, as they are no citizen's answers.
    """
    last = max(history.measurements, key=lambda m: m.measured_on)
    movable, at_top = [], []
    for item in INDICATORS:
        if not item.citizen_answers:
            continue
        answers = (getattr(last.citizen, item.code), getattr(last.caseworker, item.code))
        present = [a for a in answers if a is not None]
        (movable if present and min(present) < SCORE_MAX else at_top).append((item.code, answers))
    variants = [stepped_up(history, code, f"what-if-{k}") for k, (code, _) in enumerate(movable)]
    predictions = score(loaded, variants) if variants else []
    rows = [
        StepUp(code, answers[0], answers[1], p.probability, p.probability - now.probability)
        for (code, answers), p in zip(movable, predictions, strict=True)
    ]
    rows.sort(key=lambda r: -r.change)
    return rows, [code for code, _ in at_top]


# ---------------------------------------------------------------------------------------------
# The model holder


class Predictor:
    """Holds the champion model, swaps in a new version when the alias moves, scores histories.

    Auditing is the caller's: the service and the page know who asked (`serving.audit`).
    """

    def __init__(
        self,
        settings: Any,
        loaded: LoadedModel | None = None,
        on_check: Callable[[bool, str | None], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_check = on_check
        self.checked_at: float | None = None  # when the registry last answered (Unix time)
        self._loaded: LoadedModel | None = loaded
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    @classmethod
    def of_model(cls, model: Any, name: str = "local", version: str = "0") -> Predictor:
        """A Predictor around an in-memory model, without a registry (tests, benchmarks, notebooks)."""
        return cls(settings=None, loaded=LoadedModel(model, name, version, alias="none"))

    # -- loading ---------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._loaded is not None

    def current(self) -> LoadedModel | None:
        """The model now, or None: read once per page, so one page is scored by one version."""
        return self._loaded

    @property
    def loaded(self) -> LoadedModel:
        """The current model; ModelUnavailable (with the reason) when none is loaded."""
        loaded = self._loaded
        if loaded is None:
            # Said to any caller: no registry address (it may carry credentials) and no error text.
            raise ModelUnavailable("no model loaded yet: the service is waiting for a champion model")
        return loaded

    def refresh(self) -> bool:
        """Load the version under the alias if it differs from the loaded one; True if it swapped.

        Errors are logged and kept in `last_error`; the loaded model (if any) keeps serving.
        """
        from training.model import load_model
        from training.registry import champion_version

        s = self.settings
        with self._refresh_lock:
            try:
                version = champion_version(s.model_name, alias=s.model_alias, tracking_uri=s.tracking_uri)
                self.checked_at = time.time()
                current = self._loaded
                if version is None:
                    self.last_error = f"no version of {s.model_name} has alias {s.model_alias!r}"
                    return self._checked(True, False)
                if current is not None and current.version == str(version):
                    return self._checked(True, False)
                model = load_model(f"models:/{s.model_name}/{version}", s.tracking_uri)
                self._loaded = LoadedModel(model, s.model_name, str(version), s.model_alias)
                self.last_error = None
                logger.info("serving %s version %s (%s)", s.model_name, version, s.model_alias)
                return self._checked(True, True)
            except Exception as error:  # a broken registry or artifact must not stop serving
                self.last_error = redacted(f"{type(error).__name__}: {error}")
                logger.error("could not load %s@%s: %s", s.model_name, s.model_alias, self.last_error)
                return self._checked(False, False)

    def _checked(self, ok: bool, swapped: bool) -> bool:
        if self.on_check is not None:
            self.on_check(ok, self._loaded.version if self._loaded is not None else None)
        return swapped

    def start(self, poll_seconds: float = 5.0) -> None:
        """Load the champion from the settings' registry now, and poll the alias every
        `poll_seconds` on a daemon thread (0: never poll)."""
        self.refresh()
        if poll_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._poll, args=(poll_seconds,), name="bip-model-poll", daemon=True)
            self._thread.start()

    def _poll(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- predicting ------------------------------------------------------------------------------

    def predict(self, history: CitizenHistory, feature_contributions: bool = False) -> Prediction:
        """The calibrated chance of a job or education within the horizon, explained, for one history."""
        return self.predict_many([history], feature_contributions)[0]

    def predict_many(
        self, histories: Sequence[CitizenHistory], feature_contributions: bool = False
    ) -> list[Prediction]:
        """`predict` for many histories (distinct citizen ids) with one feature build and one model call."""
        return _PREDICTIONS.validate_python(self.predict_records(histories, feature_contributions))

    def predict_records(self, histories: Sequence[CitizenHistory], feature_contributions: bool = False) -> list[dict]:
        """`predict_many` as plain dicts (see `score_records`)."""
        return score_records(self.loaded, histories, feature_contributions)

    def step_ups(self, history: CitizenHistory, now: Prediction) -> tuple[list[StepUp], list[str]]:
        """`step_ups` with the current model: the chance one step up per indicator, in one batch."""
        return step_ups(self.loaded, history, now)

    def model_info(self) -> ModelInfo:
        return model_info(self.loaded)
