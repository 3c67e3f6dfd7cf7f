"""Fixtures of the service tests: a real MLflow store in a temp dir, a model trained into it with the
training code, and the real BentoML server as a subprocess, shared by the whole test module.

The server is started before any model exists, so that the module also sees it unready (503)
and then picking up the first champion without a restart.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

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


def small_train_config(seed: int, models: tuple[str, ...] = ("xgboost_monotone",), max_rounds: int = 80):
    """The champion family (and any other `models`), two folds, one grid point, few trees: seconds, not
    minutes. The champion is always blended with its linear part (half the log-odds), so that what the
    service and the page explain includes the linear part's terms."""
    from training.config import TrainConfig

    return TrainConfig(
        folds=2,
        n_boot=5,
        models=models,
        xgboost_grid=({"max_depth": 3, "learning_rate": 0.1},),
        max_rounds=max_rounds,
        shap_rows=200,
        seed=seed,
        linear_shares=(0.5,),
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


PASSWORD = "correct horse battery staple"
ROLES = ("caseworker", "researcher", "service", "admin")


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    token: str
    password: str = PASSWORD


def make_accounts(store_url: str, jobcentres: list[str]) -> dict[str, Account]:
    """Real users in the server's store, one per role, with API tokens: `caseworker` sees every job
    centre, `caseworker_a` only the first one."""
    from serving import accounts

    made = {}
    for key, role, centres in [
        ("caseworker", "caseworker", jobcentres),
        ("caseworker_a", "caseworker", jobcentres[:1]),
        ("researcher", "researcher", []),
        ("service", "service", []),
        ("admin", "admin", []),
    ]:
        name = key.replace("_", "-")
        accounts.add_user(store_url, name, accounts.Role(role), centres, PASSWORD)
        made[key] = Account(name, role, accounts.issue_token(store_url, name))
    return made


@dataclass
class Served:
    """The running server and what it serves from. `client` calls as the `service` user (the API's
    caller); `as_(key)` as any other account of `accounts`, `anonymous()` without credentials."""

    url: str
    home: Path
    data: Path
    dataset: Dataset
    env: dict[str, str]
    process: subprocess.Popen
    log: Path
    client: httpx.Client
    accounts: dict[str, Account]
    before_model: dict[str, int] = field(default_factory=dict)
    before_model_text: dict[str, str] = field(default_factory=dict)  # the bodies of those answers

    @property
    def tracking_uri(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    @property
    def store_url(self) -> str:
        return f"sqlite:///{self.home / 'store.db'}"

    def as_(self, key: str) -> httpx.Client:
        token = self.accounts[key].token
        return httpx.Client(base_url=self.url, timeout=60, headers={"Authorization": f"Bearer {token}"})

    def anonymous(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

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
    from simulator.simulation import simulate
    from training.train import train

    home = tmp_path_factory.mktemp("service")
    tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    env = {
        **os.environ,
        "BIP_HOME": str(home),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "BIP_MODEL_POLL_SECONDS": "1",
        "BIP_BODY_SECONDS": "4",  # the 408 test waits this long (the default is 8)
        "OMP_NUM_THREADS": "1",
        # BentoML keeps its Prometheus files under BENTOML_HOME: a home of its own keeps /metrics to this server.
        "BENTOML_HOME": str(home / "bentoml"),
    }
    for name in ("BIP_DATABASE_URL", "BIP_AUDIT_LOG", "BIP_MODEL_NAME", "BIP_MODEL_ALIAS", "MLFLOW_RUN_ID"):
        env.pop(name, None)
    # Create the store's tables here, once, rather than in a race between the server and training.
    from training.registry import client as registry_client

    registry_client(tracking_uri).search_registered_models()
    dataset = simulate(CITIZENS, seed=SEED, truth_draws=0).dataset
    jobcentres = sorted(dataset.citizens["jobcentre"].unique())
    made = make_accounts(f"sqlite:///{home / 'store.db'}", jobcentres)
    port = free_port()
    log = home / "server.log"
    process = start_server(env, port, log)
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", timeout=60, headers={"Authorization": f"Bearer {made['service'].token}"}
    )
    try:
        # While the server starts, write the data for `bip predict`.
        data = home / "data"
        write_dataset(dataset, data)
        wait_for(lambda: client.get("/livez").status_code == 200, 180, f"the server to start (log: {log})")
        from serving.schemas import EXAMPLE_HISTORY

        answers = {
            "readyz": client.get("/readyz"),
            "predict": client.post("/predict", json=EXAMPLE_HISTORY),
            "predict_batch": client.post("/predict_batch", json={"citizens": [EXAMPLE_HISTORY]}),
            "model": client.get("/model"),
        }
        before = {name: answer.status_code for name, answer in answers.items()}
        before_text = {name: answer.text for name, answer in answers.items()}
        train(dataset, tracking_uri, home / "mlartifacts", "bip-job-chance", MODEL_NAME, small_train_config(SEED))
        wait_for(lambda: client.get("/readyz").status_code == 200, 60, "the first champion to be loaded")
        url = client.base_url.__str__().rstrip("/")
        yield Served(url, home, data, dataset, env, process, log, client, made, before, before_text)
    finally:
        client.close()
        stop_process_tree(process)


def raw(served: Served, request: bytes, timeout: float = 30) -> tuple[str, str]:
    """Send `request` as it is; the status line and the body of the answer."""
    address = urlsplit(served.url)
    with socket.create_connection((address.hostname, address.port), timeout=timeout) as connection:
        connection.sendall(request)
        answer = b""
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if length and len(body) >= int(length.group(1)):
                break
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode("latin-1"), body.decode("utf-8", "replace")
