"""Training and serving through a remote MLflow tracking server with proxied artifacts, as in
production (docs/deploy.md): a real `mlflow server --serve-artifacts` subprocess on a free port, its
backend a SQLite file and its artifacts a folder, both in tmp.

A new experiment must leave its artifact location to the server (`mlflow-artifacts:/...`): a local
file:// path would be unreadable for serving replicas on other machines.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import pytest
from conftest_service import BIN, MODEL_NAME, SEED, free_port, small_train_config, wait_for

from bip.settings import load_settings
from serving.process import stop_process_tree

EXPERIMENT = "bip-job-chance"


@dataclass
class Remote:
    url: str
    root: Path

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"


@pytest.fixture(scope="module")
def remote(tmp_path_factory) -> Iterator[Remote]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    command = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'backend.db'}",
        "--serve-artifacts",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = root / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/health").status_code == 200, 180, f"the MLflow server (log: {log})")
        yield Remote(url, root)
    finally:
        stop_process_tree(process)


@pytest.fixture
def restore_mlflow_uris():
    """The service's loader sets MLflow's process-wide URIs: put them back for the other tests."""
    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


def test_train_register_and_serve_through_a_remote_tracking_server(remote, tmp_path, restore_mlflow_uris):
    from serving.core import Predictor
    from serving.schemas import EXAMPLE_HISTORY, PredictRequest
    from simulator.simulation import simulate
    from training import registry
    from training.train import train

    local_root = tmp_path / "local-artifacts"
    dataset = simulate(400, seed=SEED, truth_draws=0).dataset
    outcome = train(dataset, remote.url, local_root, EXPERIMENT, MODEL_NAME, small_train_config(SEED))
    assert (outcome.model_version, outcome.champion_set) == (1, True)

    # The server chose where the artifacts go, and they went there, not to a folder of this machine.
    experiment = registry.client(remote.url).get_experiment_by_name(EXPERIMENT)
    assert experiment.artifact_location.startswith("mlflow-artifacts:"), experiment.artifact_location
    assert not local_root.exists()
    assert list(remote.artifacts.rglob("MLmodel")), "no model among the server's artifacts"
    version = registry.client(remote.url).get_model_version(MODEL_NAME, "1")
    assert not version.source.startswith("file:")

    # A replica elsewhere loads the champion the way the service does: over the server only.
    settings = load_settings(home=tmp_path / "replica", mlflow_tracking_uri=remote.url)
    predictor = Predictor(settings)
    predictor.start(poll_seconds=0)
    try:
        assert predictor.ready, predictor.last_error
        assert predictor.loaded.version == "1"
        answer = predictor.predict_records([PredictRequest.model_validate_json(json.dumps(EXAMPLE_HISTORY))])[0]
        assert 0.0 < answer["probability"] < 1.0
    finally:
        predictor.stop()
