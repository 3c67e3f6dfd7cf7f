"""The `bip` commands of the serving stage: serve."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

REPO = Path(__file__).resolve().parents[1]


def serve_command(port: int, host: str) -> list[str]:
    """The `bentoml serve` command line of the prediction service."""
    bentoml = Path(sys.executable).with_name("bentoml")
    program = [str(bentoml)] if bentoml.exists() else [sys.executable, "-m", "bentoml"]
    return [*program, "serve", "serving.service:JobChance", "--port", str(port), "--host", host]


def serve(
    port: Annotated[int, typer.Option(help="Port of the HTTP API.")] = 3000,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 for every interface.")] = "127.0.0.1",
    poll_seconds: Annotated[
        float | None,
        typer.Option(
            help="How often to look for a new champion version (BIP_MODEL_POLL_SECONDS, default 5; 0: never)."
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Server worker processes (each loads the model).")] = 1,
) -> None:
    """Serve the champion model over HTTP (BentoML): /predict, /predict_batch, /model, /docs.json."""
    from bip.settings import load_settings

    settings = load_settings()
    env = dict(os.environ)
    # The settings resolve BIP_HOME against this working directory; the server runs from the repo root.
    env["BIP_HOME"] = str(settings.home.resolve())
    env.setdefault("MLFLOW_TRACKING_URI", settings.tracking_uri)
    env["BIP_AUDIT_LOG"] = str(settings.audit_log_path)
    if poll_seconds is not None:
        env["BIP_MODEL_POLL_SECONDS"] = str(poll_seconds)
    # One OpenMP thread per worker: a request is a few rows, and threads that spin waiting for each
    # other on a shared machine cost more than they save.
    env.setdefault("OMP_NUM_THREADS", "1")
    if workers != 1:
        options = env.get("BENTOML_CONFIG_OPTIONS", "")
        env["BENTOML_CONFIG_OPTIONS"] = f"{options} services.JobChance.workers={workers}".strip()
    typer.echo(
        f"serving {settings.model_name}@{settings.model_alias} from {env['MLFLOW_TRACKING_URI']} on http://{host}:{port}"
    )
    server = subprocess.Popen(serve_command(port, host), cwd=REPO, env=env)
    # A stop request to `bip serve` (a supervisor's SIGTERM) stops the server too; Ctrl+C reaches
    # both already, as they share the terminal's process group.
    signal.signal(signal.SIGTERM, lambda signum, _: server.send_signal(signum))
    try:
        code = server.wait()
    except KeyboardInterrupt:
        code = server.wait()
    raise typer.Exit(code)


COMMANDS = [serve]
