"""The administrators' HTTP endpoints: start a retrain, follow it, promote a version by hand.

Off unless a token is configured (BIP_ADMIN_TOKEN, or a file named by BIP_ADMIN_TOKEN_FILE): then every
route answers 404, as if it did not exist. With a token, a request must carry `Authorization: Bearer
<token>` (401 without, 403 with a wrong one). Nothing on the caseworker page links here or carries the
token, so a caseworker's request cannot reach it.

    POST /admin/retrain   {"dry_run": false}        202: {"job": ID, ...}; runs `bip retrain` in the background
    GET  /admin/jobs/ID                              the job's status, exit code, outcome and log tail
    POST /admin/promote   {"version": N, "reason"}  moves the champion alias (as `bip promote`)

A retrain job is a `bip retrain` process with the service's own environment: it takes the retrain lock
itself, so a second one is refused (the job's status says so) and a killed one changes nothing. Its
files (log, outcome JSON, exit code) are under BIP_HOME/admin/jobs/ID, so any server worker can answer
for any job.
"""

from __future__ import annotations

import hmac
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from bip.errors import UserError
from bip.settings import Settings, load_settings

JOB_STATES = {0: "succeeded", 1: "rejected", 2: "refused"}
LOG_TAIL_CHARS = 4000


class RetrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dry_run: bool = False


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
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


def job_status(settings: Settings, job: str) -> dict[str, Any]:
    """What a job's files say: running until its exit code is written."""
    folder = job_folder(settings, job)
    if not job or "/" in job or job.startswith(".") or not (folder / "request.json").exists():
        raise HTTPException(404, f"no retrain job {job!r}")
    code_file, outcome_file, log_file = folder / "exit_code", folder / "outcome.json", folder / "log.txt"
    code = int(code_file.read_text()) if code_file.exists() else None
    log = log_file.read_text(encoding="utf-8", errors="replace") if log_file.exists() else ""
    return {
        "job": job,
        "request": json.loads((folder / "request.json").read_text(encoding="utf-8")),
        "status": (("running" if alive(folder) else "lost") if code is None else JOB_STATES.get(code, "failed")),
        "exit_code": code,
        "outcome": json.loads(outcome_file.read_text(encoding="utf-8")) if outcome_file.exists() else None,
        "log_tail": log[-LOG_TAIL_CHARS:],
    }


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def admin_settings(request: Request, authorization: Annotated[str | None, Header()] = None) -> Settings:
    """The settings, once the request has shown the admin token; 404 while no token is configured."""
    current = request.app.state.settings()
    secret = current.admin_secret
    if not secret:
        raise HTTPException(404, "Not Found")
    given = bearer_token(authorization)
    if given is None:
        raise HTTPException(401, "admin token required", headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise HTTPException(403, "wrong admin token")
    return current


AdminSettings = Annotated[Settings, Depends(admin_settings)]


def retrain(request: RetrainRequest, current: AdminSettings) -> dict[str, Any]:
    """Start `bip retrain` (202); follow it at the status URL."""
    job = start_retrain(current, request.dry_run)
    return {"job": job, "status": "running", "dry_run": request.dry_run, "status_url": f"/admin/jobs/{job}"}


def job(job: str, current: AdminSettings) -> dict[str, Any]:
    """A retrain job's status, exit code, outcome and log tail."""
    return job_status(current, job)


def promote(request: PromoteRequest, current: AdminSettings) -> Any:
    """Move the champion alias to a registered version (409 while another promotion holds the lock)."""
    from training.lifecycle import promote as promote_version
    from training.locks import LockHeld

    try:
        done = promote_version(current, request.version, request.reason)
    except LockHeld as error:
        return JSONResponse({"error": str(error)}, status_code=409)
    except UserError as error:
        return JSONResponse({"error": str(error)}, status_code=404)
    return {"name": done.name, "from_version": done.from_version, "to_version": done.to_version}


def create_admin_app(settings: Callable[[], Settings] = load_settings) -> FastAPI:
    """The admin endpoints as an app to mount at /admin; `settings` is called per request."""
    app = FastAPI(title="bip admin", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.post("/retrain", status_code=202, include_in_schema=False)(retrain)
    app.get("/jobs/{job}", include_in_schema=False)(job)
    app.post("/promote", include_in_schema=False)(promote)
    return app
