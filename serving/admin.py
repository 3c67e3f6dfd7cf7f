"""The administrators' HTTP endpoints: start a retrain, follow it, promote a version by hand.

For users with the `admin` role only (`serving.access.RULES`: 401 without credentials, 403 for any
other role; checked again here). Each action is audited with who did it. Bodies are capped at a few
KiB before they are read (`serving.service.BODY_LIMITS`), and only after the caller is known.

    POST /admin/retrain   {"dry_run": false}        202: {"job": ID, ...}; runs `bip retrain` in the background
    GET  /admin/jobs/ID                              the job's status, exit code, outcome and log tail
    POST /admin/promote   {"version": N, "reason"}  moves the champion alias (as `bip promote`)

A retrain job is a `bip retrain` process with the service's own environment, never a thread of the
server's worker: training competes with nothing that serves. It takes the retrain lease itself, so a
second one (from any replica or a scheduled job) is refused and a killed one changes nothing. Its
files (log, outcome JSON, exit code) are under BIP_HOME/admin/jobs/ID, so any worker of this replica can
answer for any job; its status is one of JOB_STATES. In production a scheduler runs `bip retrain`
(docs/deploy.md), and this endpoint is for a retrain between schedules.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from bip.settings import Settings, load_settings
from serving.access import principal_of
from serving.accounts import Role

JOB_STATES: tuple[str, ...] = ("running", "promoted", "kept", "failed", "lost")
"""A retrain job's states, one meaning each: still running; ended and moved the champion alias; ended
and kept the champion (a gate failed, a dry run, or the champion moved meanwhile); ended with a usage or
data error (exit 2, e.g. the retrain lock was held) or crashed (exit 3); ended unseen (its server
stopped first)."""
LOG_TAIL_CHARS = 4000


# Strict, as the prediction API's models are: `"yes"` or `1` is no flag, `true` or `"1"` no version.
_STRICT = ConfigDict(extra="forbid", strict=True)
JOB_ID = re.compile(r"\d{8}T\d{6}-[0-9a-f]{8}")  # as start_retrain names them


class RetrainRequest(BaseModel):
    model_config = _STRICT
    dry_run: bool = False


class PromoteRequest(BaseModel):
    model_config = _STRICT
    version: int = Field(ge=1, description="The registered version to make the champion.")
    reason: str = Field(default="by hand over the admin endpoint", max_length=500)


def job_folder(settings: Settings, job: str) -> Path:
    return settings.home.resolve() / "admin" / "jobs" / job


def start_retrain(settings: Settings, dry_run: bool) -> str:
    """Start `bip retrain` in the background; its job id. A thread records the exit code when it ends."""
    job = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    folder = job_folder(settings, job)
    folder.mkdir(parents=True)
    command = [
        sys.executable,
        "-c",
        "from bip.cli import main; main()",
        "retrain",
        "--json",
        str(folder / "outcome.json"),
    ]
    if dry_run:
        command.append("--dry-run")
    (folder / "request.json").write_text(json.dumps({"dry_run": dry_run, "command": command[3:]}), encoding="utf-8")
    log = (folder / "log.txt").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    (folder / "pid").write_text(str(process.pid), encoding="utf-8")

    def wait() -> None:
        (folder / "exit_code").write_text(str(process.wait()), encoding="utf-8")

    threading.Thread(target=wait, name=f"retrain-{job}", daemon=True).start()
    return job


def alive(folder: Path) -> bool:
    """Whether the job's process still runs. A job whose server stopped before it ended has no exit code
    and no process: "lost" (the retrain lock makes a lost job harmless; its MLflow run is marked KILLED
    by the next retrain)."""
    try:
        os.kill(int((folder / "pid").read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def job_state(exit_code: int | None, outcome: dict[str, Any] | None, running: bool) -> str:
    """The state of a job from its exit code (None: not ended or not recorded), outcome and process."""
    if exit_code is None:
        return "running" if running else "lost"
    if exit_code == 0 and outcome is not None and outcome.get("promoted"):
        return "promoted"
    if exit_code in (0, 1):  # 1: a gate failed, so the champion stays
        return "kept"
    return "failed"


def job_status(settings: Settings, job: str) -> dict[str, Any]:
    """What a job's files say: running until its exit code is written."""
    folder = job_folder(settings, job)
    if not JOB_ID.fullmatch(job) or not (folder / "request.json").exists():
        raise HTTPException(404, f"no retrain job {job[:40]!r}")
    code_file, outcome_file, log_file = folder / "exit_code", folder / "outcome.json", folder / "log.txt"
    code = int(code_file.read_text()) if code_file.exists() else None
    log = log_file.read_text(encoding="utf-8", errors="replace") if log_file.exists() else ""
    outcome = json.loads(outcome_file.read_text(encoding="utf-8")) if outcome_file.exists() else None
    return {
        "job": job,
        "request": json.loads((folder / "request.json").read_text(encoding="utf-8")),
        "status": job_state(code, outcome, code is None and alive(folder)),
        "exit_code": code,
        "outcome": outcome,
        "log_tail": log[-LOG_TAIL_CHARS:],
    }


def admin_settings(request: Request) -> Settings:
    """The settings, for a request that `serving.access.AccessControl` let through as an admin. The
    check is repeated here so that this app, mounted without the middleware, refuses everyone."""
    principal = principal_of(request.scope)
    if principal is None:
        raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})
    if Role.admin not in principal.roles:
        raise HTTPException(403, "your role does not give access to this route")
    return request.app.state.settings()


def admin_audit(request: Request, event: str, **detail: Any) -> None:
    """An audit row of an admin action, with who did it."""
    from serving.audit import AuditTrail, Event

    settings = request.app.state.settings()
    AuditTrail(settings.store_url).append([Event.by(principal_of(request.scope), event, detail=detail)])


AdminSettings = Annotated[Settings, Depends(admin_settings)]


def retrain(body: RetrainRequest, request: Request, current: AdminSettings) -> dict[str, Any]:
    """Start `bip retrain` (202); follow it at the status URL."""
    job = start_retrain(current, body.dry_run)
    admin_audit(request, "admin_retrain", job=job, dry_run=body.dry_run)
    return {"job": job, "status": "running", "dry_run": body.dry_run, "status_url": f"/admin/jobs/{job}"}


def job(job: str, current: AdminSettings) -> dict[str, Any]:
    """A retrain job's status, exit code, outcome and log tail."""
    return job_status(current, job)


def promote(body: PromoteRequest, request: Request, current: AdminSettings) -> Any:
    """Move the champion alias to a registered version (409 while another promotion holds the lock)."""
    from training.lifecycle import UnknownVersion
    from training.lifecycle import promote as promote_version
    from training.locks import LockHeld

    admin_audit(request, "admin_promote", version=body.version)
    try:
        # The caller, not the server's account: the user id of the admin who asked (as the audit row has it).
        done = promote_version(current, body.version, body.reason, by=principal_of(request.scope).user_id)
    except LockHeld as error:
        return JSONResponse({"error": str(error)}, status_code=409)
    except UnknownVersion as error:  # named without the tracking server's address
        return JSONResponse({"error": f"{error.name} has no version {error.version}"}, status_code=404)
    return {"name": done.name, "from_version": done.from_version, "to_version": done.to_version}


async def fields_only(_: Request, error: RequestValidationError) -> JSONResponse:
    """422 naming each wrong field and its rule, never the value sent."""
    detail = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in error.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


def create_admin_app(settings: Callable[[], Settings] = load_settings) -> FastAPI:
    """The admin endpoints as an app to mount at /admin; `settings` is called per request."""
    app = FastAPI(title="bip admin", docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False)
    app.state.settings = settings
    app.exception_handler(RequestValidationError)(fields_only)
    app.post("/retrain", status_code=202, include_in_schema=False)(retrain)
    app.api_route("/jobs/{job}", methods=["GET", "HEAD"], include_in_schema=False)(job)
    app.post("/promote", include_in_schema=False)(promote)
    return app
