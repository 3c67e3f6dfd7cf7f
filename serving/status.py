"""`bip status`: what state the system is in, for an administrator, in one command.

It reads, and changes nothing in: the measurement store (counts and the ingest log), the MLflow
registry and tracking store (the champion, the other versions, the last retrain), the admin retrain
jobs' folders and the audit trail's admin actions. Through an MlflowClient on the settings' tracking
URI, never MLflow's process-wide one. Everything shown is an aggregate, a version, a date or a user
name: never a citizen's id or answers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bip.settings import Settings, load_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

DRIFT_WARNING = 0.25
"""PSI above which an indicator's answers count as shifted a lot (training.drift.LARGE)."""
STALE_ROUNDS = 2
"""A champion trained before this many newer measurement rounds (quarters) is due a retrain."""
RETRAIN_RUN = "retrain"  # training.lifecycle.RETRAIN_RUN, without importing training to read a name
ADMIN_EVENTS = ("admin_retrain", "admin_promote")
SHOWN_ADMIN_ACTIONS = 5


# --- pure pieces ------------------------------------------------------------------------------------------


def quarter(day: date) -> str:
    """The calendar quarter of a day, e.g. 2015Q3: BIP measures each citizen about once a quarter."""
    return f"{day.year}Q{(day.month - 1) // 3 + 1}"


def rounds_after(quarters: list[str], last_trained_on: str) -> int:
    """How many of the store's measurement quarters come after the quarter of `last_trained_on`."""
    if not last_trained_on:
        return 0
    trained = quarter(date.fromisoformat(last_trained_on))
    return sum(1 for q in quarters if q > trained)


def interval(metrics: Mapping[str, float], key: str) -> dict[str, float | None] | None:
    """A metric with its bootstrap interval (`KEY`, `KEY_low`, `KEY_high`), None when not logged."""
    if key not in metrics:
        return None

    return {
        "estimate": rounded(metrics.get(key)),
        "low": rounded(metrics.get(f"{key}_low")),
        "high": rounded(metrics.get(f"{key}_high")),
    }


def rounded(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


def moment(milliseconds: int | None) -> datetime | None:
    return None if milliseconds is None else datetime.fromtimestamp(milliseconds / 1000, tz=UTC)


def age_days(since: datetime | None, now: datetime) -> float | None:
    return None if since is None else round((now - since).total_seconds() / 86400, 1)


def status_warnings(status: Mapping[str, Any]) -> list[str]:
    """What an administrator should act on: no champion, a stale champion, large drift, a failed retrain."""
    found: list[str] = []
    registry, champion, retrain = status.get("registry") or {}, status.get("champion"), status.get("last_retrain")
    if registry.get("error"):
        found.append(f"the model registry could not be read: {registry['error']}")
    elif champion is None:
        found.append("no champion: run `bip train`")
    else:
        newer = champion.get("rounds_since_training") or 0
        if newer >= STALE_ROUNDS:
            found.append(
                f"the champion (version {champion['version']}) was trained on data up to "
                f"{champion['training_data'].get('last_measured_on')}; the store holds {newer} newer measurement "
                "rounds: run `bip retrain`"
            )
    if retrain:
        shifted = [d for d in retrain.get("drift", []) if d["psi"] > DRIFT_WARNING]
        if shifted:
            found.append(
                f"drift above PSI {DRIFT_WARNING} at the last retrain: "
                + ", ".join(f"{d['column']} {d['psi']:.2f}" for d in shifted)
            )
        if retrain.get("status") not in ("FINISHED", None):
            found.append(f"the last retrain run ended {retrain['status']}")
    return found


# --- the store ---------------------------------------------------------------------------------------------


def sqlite_file_missing(url: str) -> bool:
    """Whether a SQLite URL names a file that does not exist (reading it would create it)."""
    prefix = "sqlite:///"
    return url.startswith(prefix) and not Path(url.removeprefix(prefix).split("?")[0]).exists()


def store_status(url: str) -> dict[str, Any]:
    """Counts of the store, its measurement rounds (quarters) and its last ingest."""
    from sqlalchemy import func, inspect, select

    from features import store

    if sqlite_file_missing(url):
        return {"citizens": 0, "measurements": 0, "rounds": 0, "quarters": [], "ingests": 0, "last_ingest": None}
    citizens, measurements = store.SCHEMA.tables["citizens"], store.SCHEMA.tables["measurements"]
    with store.engine(url).connect() as conn:
        if not inspect(conn).has_table("measurements"):
            quarters, counts = [], (0, 0)
        else:
            counts = (
                conn.execute(select(func.count()).select_from(citizens)).scalar_one(),
                conn.execute(select(func.count()).select_from(measurements)).scalar_one(),
            )
            days = conn.execute(select(measurements.c.measured_on).distinct()).scalars()
            quarters = sorted({quarter(to_date(day)) for day in days if day is not None})
    log = store.ingests(url)
    last = log[-1] if log else None
    return {
        "citizens": int(counts[0]),
        "measurements": int(counts[1]),
        "rounds": len(quarters),
        "quarters": quarters,
        "ingests": len(log),
        "last_ingest": None
        if last is None
        else {
            "at": last["ingested_at"].isoformat(timespec="seconds"),
            "source": last["source"],
            "added": last["added"],
            "updated": last["updated"],
        },
    }


def to_date(value: Any) -> date:
    """A stored measurement date (a date, a datetime, or ISO text on SQLite) as a date."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


# --- the registry ----------------------------------------------------------------------------------------


def run_metrics_and_fingerprint(client: MlflowClient, run_id: str) -> tuple[dict[str, float], dict[str, str]]:
    """A version's run's metrics and its training data fingerprint (`data_*` params: of the run, or of its
    parent "train" run, where `bip train` logs them)."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    run = client.get_run(run_id)
    fingerprint = {k.removeprefix("data_"): v for k, v in run.data.params.items() if k.startswith("data_")}
    parent = run.data.tags.get(MLFLOW_PARENT_RUN_ID)
    if not fingerprint and parent:
        params = client.get_run(parent).data.params
        fingerprint = {k.removeprefix("data_"): v for k, v in params.items() if k.startswith("data_")}
    return dict(run.data.metrics), fingerprint


def validated_metrics(metrics: Mapping[str, float]) -> dict[str, Any]:
    """The out-of-time AUC and ECE with intervals: the out-of-time test of `bip train`, or, for a version
    registered by `bip retrain`, the window its challenger was compared on."""
    for prefix, measured_on in (("oot", "out-of-time test"), ("challenger_window", "retrain window")):
        if f"{prefix}_roc_auc" in metrics:
            return {
                "measured_on": measured_on,
                "roc_auc": interval(metrics, f"{prefix}_roc_auc"),
                "ece": interval(metrics, f"{prefix}_ece"),
            }
    return {"measured_on": None, "roc_auc": None, "ece": None}


def version_summary(version: Any, aliases: list[str]) -> dict[str, Any]:
    tags = dict(version.tags or {})
    registered = moment(version.creation_timestamp)
    return {
        "version": int(version.version),
        "aliases": aliases,
        "registered_at": registered.isoformat(timespec="seconds") if registered else None,
        "by": "retrain" if "retrain_run" in tags else "train" if "train_run" in tags else None,
        "decision": tags.get("decision"),
        "promoted_at": tags.get("promoted_at"),
        "run_id": version.run_id,
    }


def registry_status(settings: Settings, quarters: list[str], now: datetime) -> dict[str, Any]:
    """The champion (with metrics, training data and age), every version and alias, and the last retrain."""
    from mlflow.exceptions import MlflowException

    from training import registry

    name = settings.model_name
    if not registry.is_remote(settings.tracking_uri) and sqlite_file_missing(settings.tracking_uri):
        return {"registry": {"model": name, "versions": [], "aliases": {}}, "champion": None, "last_retrain": None}
    client = registry.client(settings.tracking_uri)
    try:
        try:
            model = client.get_registered_model(name)
        except MlflowException as error:
            if not registry.not_found(error):
                raise
            model = None
        aliases = dict(model.aliases) if model is not None else {}
        versions = client.search_model_versions(f"name = '{name}'") if model is not None else []
        last_retrain = retrain_status(client, settings.experiment)
    except MlflowException as error:
        failed = {"model": name, "versions": [], "aliases": {}, "error": f"{error.error_code}"}
        return {"registry": failed, "champion": None, "last_retrain": None}
    by_version: dict[str, list[str]] = {}
    for alias, number in aliases.items():
        by_version.setdefault(str(number), []).append(alias)
    listed = sorted(
        (version_summary(v, sorted(by_version.get(str(v.version), []))) for v in versions),
        key=lambda v: v["version"],
        reverse=True,
    )
    champion = None
    chosen = aliases.get(settings.model_alias)
    if chosen is not None:
        found = next(v for v in versions if str(v.version) == str(chosen))
        metrics, fingerprint = run_metrics_and_fingerprint(client, found.run_id)
        summary = version_summary(found, by_version.get(str(chosen), []))
        registered = moment(found.creation_timestamp)
        champion = {
            **summary,
            "alias": settings.model_alias,
            "age_days": age_days(registered, now),
            "training_data": fingerprint,
            "rounds_since_training": rounds_after(quarters, fingerprint.get("last_measured_on", "")),
            **validated_metrics(metrics),
        }
    others = [v for v in listed if champion is None or v["version"] != champion["version"]]
    registry_summary = {"model": name, "versions": others, "aliases": {a: int(v) for a, v in aliases.items()}}
    return {"registry": registry_summary, "champion": champion, "last_retrain": last_retrain}


def retrain_status(client: MlflowClient, experiment: str) -> dict[str, Any] | None:
    """The latest run named "retrain": when, its decision, each gate and the drift of the indicators."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"attributes.run_name = '{RETRAIN_RUN}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]
    metrics, tags = run.data.metrics, run.data.tags
    gates = sorted({k.removeprefix("gate_").removesuffix("_passed") for k in metrics if k.endswith("_passed")})
    drift = sorted(
        ({"column": k.removeprefix("psi_"), "psi": round(v, 4)} for k, v in metrics.items() if k.startswith("psi_")),
        key=lambda d: -d["psi"],
    )
    started = moment(run.info.start_time)
    return {
        "run_id": run.info.run_id,
        "started_at": started.isoformat(timespec="seconds") if started else None,
        "status": run.info.status,
        "dry_run": tags.get("dry_run") == "True",
        "decision": tags.get("decision"),
        "champion_version": tags.get("champion_version"),
        "challenger_version": tags.get("challenger_version") or None,
        "gates": [
            {"name": g, "passed": metrics[f"gate_{g}_passed"] == 1.0, "value": rounded(metrics.get(f"gate_{g}_value"))}
            for g in gates
        ],
        "drift": drift,
        "largest_psi": drift[0]["psi"] if drift else None,
    }


# --- the admin jobs and actions ---------------------------------------------------------------------------


def jobs_status(settings: Settings) -> list[dict[str, Any]]:
    """The admin retrain jobs still running (serving.admin's job folders)."""
    from serving.admin import alive, job_folder, job_state

    root = job_folder(settings, "x").parent
    if not root.is_dir():
        return []
    running = []
    for folder in sorted(root.iterdir()):
        if not (folder / "request.json").exists() or (folder / "exit_code").exists():
            continue
        if job_state(None, None, alive(folder)) == "running":
            request = json.loads((folder / "request.json").read_text(encoding="utf-8"))
            running.append({"job": folder.name, "status": "running", "dry_run": bool(request.get("dry_run"))})
    return running


def admin_actions(url: str) -> list[dict[str, Any]]:
    """The latest admin actions over the HTTP API (who started a retrain or promoted a version, when)."""
    from serving import audit

    if sqlite_file_missing(url):
        return []
    rows = [row for event in ADMIN_EVENTS for row in audit.events(url, event=event)]
    rows.sort(key=lambda row: row["at"])
    return [
        {"at": r["at"].isoformat(timespec="seconds"), "event": r["event"], "by": r["user_id"], "detail": r["detail"]}
        for r in rows[-SHOWN_ADMIN_ACTIONS:]
    ]


def system_status(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """Everything `bip status` shows, as one JSON-ready dict."""
    from training.registry import shown_uri

    now = now or datetime.now(UTC)
    data = store_status(settings.store_url)
    status: dict[str, Any] = {
        "at": now.isoformat(timespec="seconds"),
        "tracking_uri": shown_uri(settings.tracking_uri),
        "store": data,
        **registry_status(settings, data["quarters"], now),
        "admin_jobs_running": jobs_status(settings),
        "admin_actions": admin_actions(settings.store_url),
    }
    status["warnings"] = status_warnings(status)
    return status


# --- the command ------------------------------------------------------------------------------------------


def shown_interval(value: Mapping[str, Any] | None) -> str:
    if not value or value.get("estimate") is None:
        return "not logged"
    if value.get("low") is None:
        return f"{value['estimate']:.3f}"
    return f"{value['estimate']:.3f} ({value['low']:.3f}–{value['high']:.3f})"


def status_lines(status: Mapping[str, Any]) -> list[str]:
    """The status as text for a terminal."""
    s, champion, retrain = status["store"], status["champion"], status["last_retrain"]
    lines = [f"store: {s['citizens']} citizens, {s['measurements']} measurements in {s['rounds']} rounds (quarters)"]
    if s["last_ingest"]:
        i = s["last_ingest"]
        added = ", ".join(f"{t} {n}" for t, n in i["added"].items())
        lines.append(f"  last ingest {i['at']} from {i['source']}: added {added} ({s['ingests']} ingests in all)")
    if champion:
        data = champion["training_data"]
        lines += [
            f"champion: {status['registry']['model']} version {champion['version']}, registered "
            f"{champion['registered_at']} by {champion['by']} ({champion['age_days']} days ago)",
            f"  trained on {data.get('rows', '?')} measurements of {data.get('citizens', '?')} citizens, "
            f"{data.get('first_measured_on', '?')} to {data.get('last_measured_on', '?')} "
            f"(sha256 {str(data.get('content_sha256', ''))[:12]})",
            f"  {champion['measured_on'] or 'validation'}: AUC {shown_interval(champion['roc_auc'])}, "
            f"ECE {shown_interval(champion['ece'])}",
        ]
    else:
        lines.append("champion: none")
    registry = status["registry"]
    if registry["aliases"]:
        lines.append("aliases: " + ", ".join(f"{a} -> {v}" for a, v in registry["aliases"].items()))
    for v in registry["versions"]:
        lines.append(
            f"  version {v['version']}: registered {v['registered_at']} by {v['by']}"
            + (f", {v['decision']}" if v["decision"] else "")
        )
    if retrain:
        gates = ", ".join(f"{g['name']} {'pass' if g['passed'] else 'FAIL'}" for g in retrain["gates"])
        lines.append(f"last retrain: {retrain['started_at']}, {retrain['decision'] or retrain['status']}; {gates}")
        if retrain["drift"]:
            top = ", ".join(f"{d['column']} {d['psi']:.2f}" for d in retrain["drift"][:3])
            lines.append(f"  drift (PSI, largest): {top}")
    else:
        lines.append("last retrain: none")
    jobs = status["admin_jobs_running"]
    lines.append("admin jobs running: " + (", ".join(j["job"] for j in jobs) if jobs else "none"))
    if status["admin_actions"]:
        last = status["admin_actions"][-1]
        lines.append(f"last admin action: {last['event']} by {last['by']} at {last['at']} {json.dumps(last['detail'])}")
    lines += [f"warning: {w}" for w in status["warnings"]]
    return lines


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as one JSON object.")] = False,
) -> None:
    """What state bip is in: the store, the champion and its metrics, the versions, the last retrain,
    running admin jobs and warnings (a stale champion, large drift). Reads only."""
    found = system_status(load_settings())
    if as_json:
        typer.echo(json.dumps(found, indent=1, default=str))
        return
    for line in status_lines(found):
        typer.echo(line)


COMMANDS = [status]
