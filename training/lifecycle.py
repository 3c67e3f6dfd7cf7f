"""Retraining on new measurement rounds: a challenger against the champion, gates, promotion.

`retrain` rebuilds the features from the data (the store), fits a challenger with `bip train`'s recipe
(monotone XGBoost, hyperparameters by grouped CV, Platt calibration on the out-of-fold margins) on the
rows measured up to the date the champion has learnt outcomes through, and scores champion and
challenger on the *window*: the rows measured after that date whose outcomes are known now. Neither
model was fitted on them. The gates compare the two there; the drift report compares the answers the
champion was trained on with the new round's. The version registered is the challenger's recipe refitted
on all the data, as `bip train` registers; the `champion` alias moves to it only when every gate passes.
All of it is one MLflow run named "retrain".

Safe under failure: the store is only read; nothing is registered until the decision is made; the alias
moves last, under the registry lock, only while the retrain lock is still held and only if the champion
is still the one compared against. Both locks are leases in the store database (`training.locks`), so
they hold across machines: a second retrain while one runs is refused; a killed one leaves its MLflow
run RUNNING, which the next retrain marks KILLED once its lease has run out. A registry that cannot be
read stops the retrain (`registry.RegistryUnavailable`): its silence is never taken for "no champion".

(About 570 lines in one module: the retrain, its gates, the window comparison and promotion share one
MLflow run and one lease; they are one procedure, read top to bottom.)
"""

from __future__ import annotations

import getpass
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bip.errors import UserError
from bip.progress import QUIET, Progress, step
from bip.settings import Settings
from features.build import build_features
from features.catalogue import SCORE_COLUMNS
from features.dataset import Dataset
from training.config import CHAMPION_CANDIDATE, TrainConfig
from training.data import fingerprint, labelled_rows, with_weights
from training.drift import MIN_DRIFT_CITIZENS, drift_report
from training.evaluation import evaluation_metrics, headline, truth_of
from training.learners import learners
from training.locks import Lease, LockHeld, exclusive
from training.model import JobChanceModel
from training.model_card import card_facts, log_model_card
from training.tracking import RunLog, experiment_id, log_model, started_run, tracking_client
from training.train import FamilyResult, fit_job_chance_model, train_family
from training.validation import Split, split_at

if TYPE_CHECKING:
    from mlflow import MlflowClient

RETRAIN_RUN = "retrain"
PROMOTE_RUN = "promote"
FAIRNESS_GAPS: tuple[str, ...] = ("auc_gap", "calibration_gap")
REGISTRY_LOCK_WAIT_SECONDS = 30.0
AWAITING_PROMOTION = "awaiting promotion"


class UnknownVersion(UserError):
    """A version the registry does not have (the message names where it looked)."""

    def __init__(self, name: str, version: int, where: str) -> None:
        super().__init__(f"{name} has no version {version} in {where}")
        self.name, self.version = name, version


class RetrainError(UserError):
    """Retraining cannot go ahead (no champion, no new outcomes, another horizon)."""


@dataclass(frozen=True)
class Gates:
    """What a challenger must show on the window to replace the champion (see `check_gates`); the
    defaults are the settings' (`Gates.of`)."""

    auc_margin: float
    max_auc_drop: float
    max_ece: float
    fairness_margin: float

    @classmethod
    def of(cls, settings: Settings, **overrides: float | None) -> Gates:
        values = {
            "auc_margin": settings.gate_auc_margin,
            "max_auc_drop": settings.gate_max_auc_drop,
            "max_ece": settings.gate_max_ece,
            "fairness_margin": settings.gate_fairness_margin,
        }
        return cls(**{**values, **{k: v for k, v in overrides.items() if v is not None}})


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    value: float
    limit: float
    reason: str


@dataclass
class RetrainOutcome:
    """What `retrain` did and why."""

    run_id: str
    decision: str
    promoted: bool
    champion_version: int
    challenger_version: int | None
    gates: list[GateResult]
    window: dict[str, object]
    drift: pd.DataFrame
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def summary(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "decision": self.decision,
            "promoted": self.promoted,
            "champion_version": self.champion_version,
            "challenger_version": self.challenger_version,
            "gates": [asdict(g) for g in self.gates],
            "window": self.window,
            "drift": self.drift.to_dict(orient="records"),
            "seconds": round(self.seconds, 1),
        }


# --- the window and the gates (pure) ----------------------------------------------------------------


def window_start(training_fingerprint: Mapping[str, object], horizon_months: int) -> pd.Timestamp:
    """The last day the champion learnt outcomes for: its fingerprint's `labelled_through`, or, for a
    model that predates it, a horizon before the last measurement it saw."""
    through = str(training_fingerprint.get("labelled_through") or "")
    if through:
        return pd.Timestamp(through)
    last = str(training_fingerprint.get("last_measured_on") or "")
    if not last:
        raise RetrainError("the champion's training fingerprint has no dates; retrain it with `bip train`")
    return pd.Timestamp(last) - pd.DateOffset(months=horizon_months)


def gate_auc(challenger: float, champion: float, margin: float) -> GateResult:
    passed = challenger >= champion - margin
    return GateResult(
        "auc",
        bool(passed),
        challenger - champion,
        -margin,
        f"challenger AUC {challenger:.3f} against the champion's {champion:.3f} on the same window "
        f"({'within' if passed else 'beyond'} the allowed {margin:.3f} worse)",
    )


def gate_auc_drop(challenger: float, validated: float | None, max_drop: float) -> GateResult:
    if validated is None or not math.isfinite(validated):
        return GateResult("auc_drop", True, math.nan, -max_drop, "the champion carries no validated AUC: not checked")
    passed = challenger >= validated - max_drop
    return GateResult(
        "auc_drop",
        bool(passed),
        challenger - validated,
        -max_drop,
        f"challenger AUC {challenger:.3f} against the champion's validated out-of-time AUC {validated:.3f} "
        f"({'within' if passed else 'beyond'} the allowed drop of {max_drop:.3f})",
    )


def gate_ece(challenger: float, max_ece: float) -> GateResult:
    passed = challenger <= max_ece
    return GateResult(
        "ece",
        bool(passed),
        challenger,
        max_ece,
        f"challenger calibration error (ECE) {challenger:.3f} on the window "
        f"({'within' if passed else 'above'} the bound {max_ece:.3f})",
    )


def gate_fairness(challenger: Mapping[str, float], champion: Mapping[str, float], margin: float) -> GateResult:
    """The largest growth, over FAIRNESS_GAPS, of the largest gap between groups of a sensitive column."""
    growth = {
        gap: challenger.get(f"window_fairness_max_{gap}", math.nan)
        - champion.get(f"window_fairness_max_{gap}", math.nan)
        for gap in FAIRNESS_GAPS
    }
    measured = {gap: g for gap, g in growth.items() if math.isfinite(g)}
    if not measured:
        return GateResult("fairness", True, math.nan, margin, "no group large enough to compare: not checked")
    worst = max(measured, key=measured.get)
    passed = measured[worst] <= margin
    return GateResult(
        "fairness",
        bool(passed),
        measured[worst],
        margin,
        f"largest growth of a gap between groups: {worst.replace('_', ' ')} "
        f"{challenger[f'window_fairness_max_{worst}']:.3f} against the champion's "
        f"{champion[f'window_fairness_max_{worst}']:.3f} ({'within' if passed else 'beyond'} the allowed {margin:.3f})",
    )


def gate_ordering(slope: float) -> GateResult:
    """The challenger's calibration slope: positive when its scores order citizens the right way round."""
    passed = slope > 0
    return GateResult(
        "ordering",
        bool(passed),
        slope,
        0.0,
        f"calibration slope {slope:.3f} of the challenger's out-of-fold scores "
        + ("(higher score, higher observed rate)" if passed else "(not positive: its scores do not rank citizens)"),
    )


def check_gates(
    challenger: Mapping[str, float],
    champion: Mapping[str, float],
    validated_auc: float | None,
    slope: float,
    gates: Gates,
) -> list[GateResult]:
    """Every gate, on the window metrics (`window_*` keys) of both models and the challenger's calibration slope."""
    return [
        gate_ordering(slope),
        gate_auc(challenger["window_roc_auc"], champion["window_roc_auc"], gates.auc_margin),
        gate_auc_drop(challenger["window_roc_auc"], validated_auc, gates.max_auc_drop),
        gate_ece(challenger["window_ece"], gates.max_ece),
        gate_fairness(challenger, champion, gates.fairness_margin),
    ]


def round_drift(dataset: Dataset, trained_through: pd.Timestamp) -> pd.DataFrame:
    """PSI per indicator answer: measurements the champion was trained on against the ones after; none
    when the rounds after are of fewer than MIN_DRIFT_CITIZENS citizens (their answers, not a drift)."""
    m = dataset.measurements
    new = m["measured_on"] > trained_through
    if new.all() or m.loc[new, "citizen_id"].nunique() < MIN_DRIFT_CITIZENS:
        return pd.DataFrame(columns=["column", "psi", "reference_mean", "current_mean", "level"])
    return drift_report(m[~new], m[new], SCORE_COLUMNS)


def decision_of(passed: bool, dry_run: bool) -> str:
    if dry_run:
        return "dry run: would promote" if passed else "dry run: would reject"
    return "promoted" if passed else "rejected"


# --- the registry ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Promotion:
    name: str
    from_version: int | None
    to_version: int
    reason: str


def _move_alias(
    settings: Settings,
    version: int,
    reason: str,
    expected: int | None,
    check: bool,
    held: Lease | None = None,
    by: str | None = None,
) -> Promotion:
    """Point the alias at `version` under the registry lock; with `check`, only if it still points at
    `expected` (compare and set), and only while the lease `held` (the retrain's) is still held. Tags the
    version with when, by whom (`by`, else this process's user) and why."""
    from mlflow.exceptions import MlflowException

    from training import registry

    client = registry.client(settings.tracking_uri)
    name, alias = settings.model_name, settings.model_alias
    with exclusive(
        settings.store_url,
        "registry",
        f"promotion of {name} {version}",
        REGISTRY_LOCK_WAIT_SECONDS,
        settings.lock_lease_seconds,
    ):
        try:
            client.get_model_version(name, str(version))
        except MlflowException as error:
            raise UnknownVersion(name, version, registry.shown_uri(settings.tracking_uri)) from error
        current = registry.champion_version(name, alias=alias, tracking_uri=settings.tracking_uri)
        if check and current != expected:
            raise RetrainError(f"the {alias} moved from version {expected} to {current} while retraining: not promoted")
        if held is not None:
            held.check()
        registry.set_champion(name, version, alias=alias, tracking_uri=settings.tracking_uri)
        for key, value in {
            "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "promoted_by": by or getpass.getuser(),
            "promoted_reason": reason,
        }.items():
            client.set_model_version_tag(name, str(version), key, value)
    return Promotion(name, current, version, reason)


def promote(settings: Settings, version: int, reason: str, by: str | None = None) -> Promotion:
    """Move the alias to `version` by hand (roll back or forward), logged as an MLflow run "promote";
    `by` names who asked (the admin API's caller), else this process's user (the command line)."""
    by = by or getpass.getuser()
    promotion = _move_alias(settings, version, reason, None, check=False, by=by)
    experiment = experiment_id(settings.experiment, settings.artifact_root, settings.tracking_uri)
    with started_run(tracking_client(settings.tracking_uri), experiment, PROMOTE_RUN) as run:
        run.params(
            {
                "model_name": promotion.name,
                "from_version": promotion.from_version,
                "to_version": promotion.to_version,
                "reason": reason,
                "by": by,
            }
        )
    return promotion


def mark_killed_runs(client: MlflowClient, experiment: str) -> list[str]:
    """Runs named "retrain" still RUNNING: their process died (the caller holds the retrain lock)."""
    found = client.search_runs(
        [experiment], filter_string=f"attributes.run_name = '{RETRAIN_RUN}' and attributes.status = 'RUNNING'"
    )
    for run in found:
        client.set_terminated(run.info.run_id, status="KILLED")
    return [run.info.run_id for run in found]


# --- retrain ------------------------------------------------------------------------------------------


def load_current_champion(settings: Settings):
    """The champion's version number and its JobChanceModel (loaded by number, so the two agree)."""
    from training import registry
    from training.model import load_model

    version = registry.champion_version(
        settings.model_name, alias=settings.model_alias, tracking_uri=settings.tracking_uri
    )
    if version is None:
        raise RetrainError(
            f"no {settings.model_name}@{settings.model_alias} in {registry.shown_uri(settings.tracking_uri)}: "
            "run `bip train` first"
        )
    # Resolved through this registry's client, so MLflow's process-wide registry URI is left alone.
    source = registry.client(settings.tracking_uri).get_model_version_download_uri(settings.model_name, str(version))
    return version, load_model(source)


def _log_window_tables(out: Path, outcome_tables: Mapping[str, pd.DataFrame]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, table in outcome_tables.items():
        table.to_csv(out / f"{name}.csv", index=False)


def window_split(full: pd.DataFrame, since: pd.Timestamp, config: TrainConfig) -> tuple[Split, dict[str, object]]:
    """The rows up to `since` to fit the challenger on, the rows after it, and the window: those of
    them with a known outcome. Refuses when either side lacks labelled rows of both outcomes."""
    split = split_at(full, since + pd.Timedelta(days=1), config)
    rows = labelled_rows(split.test)
    if len(np.unique(split.test["label"].to_numpy(float)[rows])) < 2:
        raise RetrainError(
            f"no outcomes have become known since the champion's training data (outcomes through "
            f"{since.date()}): ingest a new measurement round first"
        )
    if len(np.unique(split.period["label"].to_numpy(float)[labelled_rows(split.period)])) < 2:
        raise RetrainError(f"no labelled measurements of both outcomes up to {since.date()} to train on")
    window = {
        "after": str(since.date()),
        "until": str(split.test["measured_on"][rows].max().date()),
        "rows": int(rows.sum()),
        "citizens": int(split.test["citizen_id"][rows].nunique()),
    }
    return split, window


@dataclass
class Comparison:
    """Challenger and champion on the window: metrics, fairness tables, the gates."""

    challenger: dict[str, float]
    champion: dict[str, float]
    tables: dict[str, pd.DataFrame]
    gates: list[GateResult]


def compare_on_window(
    split: Split,
    challenger: FamilyResult,
    champion: JobChanceModel,
    truth: pd.DataFrame | None,
    config: TrainConfig,
    gates: Gates,
    progress: Progress = QUIET,
) -> Comparison:
    """Both models' window metrics (with intervals and fairness gaps) and every gate."""
    true_p = truth_of(split.test, truth)
    ours, our_fairness = evaluation_metrics(
        split.test, challenger.oot_probability, true_p, config, "window", progress=progress
    )
    champion_p = champion.probability(champion.matrix(split.test))
    theirs, their_fairness = evaluation_metrics(split.test, champion_p, true_p, config, "window", progress=progress)
    results = check_gates(ours, theirs, champion.metrics.get("oot_roc_auc"), challenger.calibration[0], gates)
    tables = {"fairness_window_challenger": our_fairness, "fairness_window_champion": their_fairness}
    return Comparison(ours, theirs, tables, results)


def retrain_metrics(comparison: Comparison, challenger: FamilyResult, drift: pd.DataFrame) -> dict[str, float]:
    """What the retrain run logs as metrics (finite values only)."""
    metrics = {
        **{f"challenger_{k}": v for k, v in comparison.challenger.items()},
        **{f"champion_{k}": v for k, v in comparison.champion.items()},
        **{f"challenger_{k}": v for k, v in challenger.metrics.items() if k.startswith("cv_")},
        **{f"gate_{g.name}_passed": float(g.passed) for g in comparison.gates},
        **{f"gate_{g.name}_value": g.value for g in comparison.gates},
        **{f"psi_{r.column}": r.psi for r in drift.itertuples()},
    }
    return {k: float(v) for k, v in metrics.items() if np.isfinite(v)}


def register_challenger(
    settings: Settings, full: pd.DataFrame, challenger: FamilyResult, config: TrainConfig, run: RunLog, decision: str
) -> int:
    """The challenger's recipe refitted on all of `full`, logged into `run` and registered (tagged with
    the run and the decision); its version."""
    from training import registry

    model = fit_job_chance_model(full, challenger.params, challenger.calibration, config, headline(challenger.metrics))
    with tempfile.TemporaryDirectory() as tmp:
        logged = log_model(run, model, Path(tmp))
    version = registry.register(
        logged,
        settings.model_name,
        tags={"retrain_run": run.run_id, "decision": decision},
        tracking_uri=settings.tracking_uri,
    )
    return int(version.version)


def promote_challenger(
    settings: Settings, version: int, reason: str, champion_version: int, held: Lease
) -> tuple[str, bool]:
    """Move the alias to the challenger (compare and set, under both locks) and tag the version with the
    decision; "not promoted: why" when the champion moved, the registry lock stayed busy or a lease ran out."""
    from training import registry

    try:
        _move_alias(settings, version, reason, champion_version, True, held)
        decision, promoted = "promoted", True
    except (RetrainError, LockHeld) as error:
        decision, promoted = f"not promoted: {error}", False
    registry.client(settings.tracking_uri).set_model_version_tag(
        settings.model_name, str(version), "decision", decision
    )
    return decision, promoted


def retrain(
    dataset: Dataset,
    settings: Settings,
    config: TrainConfig,
    gates: Gates,
    dry_run: bool = False,
    truth: pd.DataFrame | None = None,
    progress: Progress = QUIET,
) -> RetrainOutcome:
    """Challenger against champion on the window, gates, and (not `dry_run`) register and promote;
    `progress` shows the features, the challenger's folds, the bootstraps and the registration."""
    start = time.perf_counter()
    config = replace(config, models=(CHAMPION_CANDIDATE,))
    client = tracking_client(settings.tracking_uri)
    with exclusive(settings.store_url, "retrain", "retrain", lease_seconds=settings.lock_lease_seconds) as held:
        experiment = experiment_id(settings.experiment, settings.artifact_root, settings.tracking_uri)
        killed = mark_killed_runs(client, experiment)
        champion_version, champion = load_current_champion(settings)
        if champion.horizon_months != config.horizon_months:
            raise RetrainError(
                f"the champion predicts {champion.horizon_months} months ahead, the settings ask for "
                f"{config.horizon_months}: train a model for the new horizon with `bip train`"
            )
        since = window_start(champion.training_fingerprint, config.horizon_months)
        full = with_weights(
            build_features(dataset, horizon_months=config.horizon_months, progress=progress),
            config.horizon_months,
            config.weighting,
        )
        split, window = window_split(full, since, config)
        trained_through = pd.Timestamp(str(champion.training_fingerprint.get("last_measured_on") or since.date()))
        drift = round_drift(dataset, trained_through)
        project_run = os.environ.get("MLFLOW_RUN_ID")  # set by `mlflow run`: log into the run it made
        with (
            tempfile.TemporaryDirectory() as tmp,
            started_run(client, experiment, RETRAIN_RUN, run_id=project_run) as run,
        ):
            run.tags({"dry_run": str(dry_run), "champion_version": str(champion_version)})
            run.params(
                {
                    **{f"gate_{k}": v for k, v in asdict(gates).items()},
                    **{f"window_{k}": v for k, v in window.items()},
                    "horizon_months": config.horizon_months,
                    "seed": config.seed,
                    "folds": config.folds,
                    "xgboost_grid": json.dumps(list(config.xgboost_grid)),
                    "champion_version": champion_version,
                    "marked_killed": ",".join(killed),
                    **{f"data_{k}": v for k, v in fingerprint(full).items()},
                }
            )
            with step(progress, "retrain: challenger"):
                challenger = train_family(
                    learners(split.encoding.catalogue, config)[CHAMPION_CANDIDATE], split, truth, config, progress
                )
            with step(progress, "retrain: compare on window"):
                comparison = compare_on_window(split, challenger, champion, truth, config, gates, progress)
            passed = all(g.passed for g in comparison.gates)
            metrics = retrain_metrics(comparison, challenger, drift)
            run.metrics(metrics)
            tables = {"drift": drift, **comparison.tables, "grid_search": challenger.trials}
            _log_window_tables(Path(tmp) / "retrain", tables)
            (Path(tmp) / "retrain" / "gates.json").write_text(
                json.dumps([asdict(g) for g in comparison.gates], indent=1)
            )
            run.artifacts(Path(tmp) / "retrain", "retrain")
            decision, challenger_version, promoted = decision_of(passed, dry_run), None, False
            # A challenger whose scores rank the wrong way round (calibration slope <= 0) is no model to keep.
            if not dry_run and challenger.calibration[0] > 0:
                # Tagged "promoted" only once the alias has moved: a refusal below leaves no false tag.
                tagged = AWAITING_PROMOTION if passed else decision
                with step(progress, "retrain: register"):
                    challenger_version = register_challenger(settings, full, challenger, config, run, tagged)
                facts = card_facts(
                    model_name=settings.model_name,
                    version=challenger_version,
                    made_by="retrain",
                    run_id=run.run_id,
                    result=challenger,
                    split=split,
                    config=config,
                    data_print=fingerprint(full),
                    extra_metrics=comparison.challenger,
                )
                log_model_card(run, facts, settings.tracking_uri)  # before the alias moves: served with its card
                if passed:
                    decision, promoted = promote_challenger(
                        settings, challenger_version, f"retrain run {run.run_id}", champion_version, held
                    )
            run.tags(
                {
                    "decision": decision,
                    "failed_gates": ",".join(g.name for g in comparison.gates if not g.passed),
                    "challenger_version": str(challenger_version or ""),
                }
            )
            seconds = time.perf_counter() - start
            run.metrics({"seconds": seconds})
    return RetrainOutcome(
        run.run_id,
        decision,
        promoted,
        champion_version,
        challenger_version,
        comparison.gates,
        window,
        drift,
        metrics,
        seconds,
    )
