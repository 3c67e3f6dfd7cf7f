"""Fixtures of the service tests: a real MLflow store in a temp dir, a model trained into it with the
training code, and the real BentoML server as a subprocess, shared by the whole test module.

The server is started before any model exists, so that the module also sees it unready (503)
and then picking up the first champion without a restart.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from features.dataset import Dataset
from serving.process import stop_process_tree

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODEL_NAME = "bip-job-chance"
CITIZENS, SEED = 600, 2024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_train_config(seed: int):
    """The champion family only, two folds, one grid point, few trees: seconds, not minutes."""
    from training.train import TrainConfig

    return TrainConfig(
        folds=2,
        n_boot=5,
        models=("xgboost_monotone",),
        xgboost_grid=({"max_depth": 3, "learning_rate": 0.1},),
        max_rounds=80,
        shap_rows=200,
        seed=seed,
    )


def wait_for(check, timeout: float, what: str, interval: float = 0.25):
    """Poll `check()` until it returns a truthy value; fail the test after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = check()
        except httpx.TransportError:
            value = None
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Served:
    """The running server and what it serves from."""

    url: str
    home: Path
    data: Path
    dataset: Dataset
    env: dict[str, str]
    process: subprocess.Popen
    log: Path
    client: httpx.Client
    before_model: dict[str, int] = field(default_factory=dict)

    @property
    def tracking_uri(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    @property
    def audit_log(self) -> Path:
        return self.home / "logs" / "audit.jsonl"

    def bip(self, *args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", "from bip.cli import main; main()", *args]
        return subprocess.run(command, capture_output=True, text=True, env=self.env, cwd=REPO, timeout=300)


def start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    command = [str(BIN / "bentoml"), "serve", "serving.service:JobChance", "--port", str(port), "--host", "127.0.0.1"]
    with log.open("wb") as out:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    from features.contract import write_dataset
    from features.simulator import simulate
    from training.train import train

    home = tmp_path_factory.mktemp("service")
    tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    env = {
        **os.environ,
        "BIP_HOME": str(home),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "BIP_MODEL_POLL_SECONDS": "1",
        "OMP_NUM_THREADS": "1",
    }
    for name in ("BIP_DATABASE_URL", "BIP_AUDIT_LOG", "BIP_MODEL_NAME", "BIP_MODEL_ALIAS", "MLFLOW_RUN_ID"):
        env.pop(name, None)
    # Create the store's tables here, once, rather than in a race between the server and training.
    from training.registry import client as registry_client

    registry_client(tracking_uri).search_registered_models()
    port = free_port()
    log = home / "server.log"
    process = start_server(env, port, log)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        # While the server starts, simulate and write the data for `bip predict`.
        dataset = simulate(CITIZENS, seed=SEED, truth_draws=0).dataset
        data = home / "data"
        write_dataset(dataset, data)
        wait_for(lambda: client.get("/livez").status_code == 200, 180, f"the server to start (log: {log})")
        from serving.schemas import EXAMPLE_HISTORY

        before = {
            "readyz": client.get("/readyz").status_code,
            "predict": client.post("/predict", json=EXAMPLE_HISTORY).status_code,
            "model": client.get("/model").status_code,
        }
        train(dataset, tracking_uri, home / "mlartifacts", "bip-job-chance", MODEL_NAME, small_train_config(SEED))
        wait_for(lambda: client.get("/readyz").status_code == 200, 60, "the first champion to be loaded")
        yield Served(client.base_url.__str__().rstrip("/"), home, data, dataset, env, process, log, client, before)
    finally:
        client.close()
        stop_process_tree(process)
