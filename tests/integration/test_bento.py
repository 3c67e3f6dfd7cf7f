"""The Bento: `bip build` in a temporary BentoML home, then `bentoml serve TAG` from an empty folder
outside the checkout, serving a model trained into a temporary MLflow store.

Access control as in production (built-in users): a service user with an API token is made in the
Bento's store before it starts, and every request carries the token.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from conftest_service import BIN, MODEL_NAME, REPO, SEED, free_port, small_train_config, wait_for

from serving.process import stop_process_tree

CITIZENS = 400
# One worker builds the Bento once: two `bentoml build`s of one checkout at once need not see the same files.
pytestmark = pytest.mark.xdist_group("bento")


def service_token(home: Path) -> str:
    """A `service` user's API token in the store under `home` (the Bento's BIP_HOME)."""
    from serving import accounts

    url = f"sqlite:///{home / 'store.db'}"
    accounts.add_user(url, "bento-test", accounts.Role.service)
    return accounts.issue_token(url, "bento-test")


@dataclass
class Built:
    tag: str
    path: Path
    env: dict[str, str]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without bip's, MLflow's, BentoML's or Python's path settings."""
    prefixes = ("BIP_", "MLFLOW_", "BENTOML_", "PYTHONPATH")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(prefixes)}, **extra}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    env = clean_env(BENTOML_HOME=str(tmp_path_factory.mktemp("bentoml")))
    done = subprocess.run(
        [sys.executable, "-m", "bip", "build"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )
    assert done.returncode == 0, done.stderr
    tag = done.stdout.strip().splitlines()[-1]
    assert tag.startswith("bip-job-chance:")
    where = subprocess.run(
        [str(BIN / "bentoml"), "get", tag, "-o", "path"],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "4096"},  # a narrow console (CI) would wrap the printed path
        timeout=120,
    )
    assert where.returncode == 0, where.stderr
    name, version = tag.split(":")
    path = Path(env["BENTOML_HOME"]) / "bentos" / name / version  # where `bentoml build` stores it
    assert path == Path("".join(where.stdout.split())), where.stdout
    return Built(tag, path, env)


def test_the_bento_holds_what_the_service_reads_and_nothing_of_the_checkout_else(built):
    src = built.path / "src"
    for needed in (
        "serving/service.py",
        "serving/static/page.css",
        "serving/templates/citizen.html",
        "features/catalogue.py",
        "training/model.py",
        "bip/settings.py",
        "bip/__main__.py",
    ):
        assert (src / needed).is_file(), needed
    assert (src / "serving/static/page.css").read_bytes() == (REPO / "serving/static/page.css").read_bytes()
    found = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()}
    assert not [p for p in found if p.startswith(("tests/", "benchmarks/", "docs/", "mlproject/", ".venv/"))]
    assert not [p for p in found if p.endswith((".yaml", ".csv", ".parquet", ".db")) and p != "bentofile.yaml"]
    # The generated Dockerfile is the path to an image (`bentoml containerize`), with the envs set.
    dockerfile = (built.path / "env" / "docker" / "Dockerfile").read_text()
    assert "ENV BIP_HOME=" in dockerfile and "requirements.txt" in dockerfile


def test_the_bentofile_lists_the_project_dependencies():
    """One list of dependencies: the Bento's must be pyproject.toml's."""
    bentofile = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert bentofile["python"]["packages"] == project["dependencies"]


@dataclass
class Serving:
    client: httpx.Client
    log: Path


@pytest.fixture(scope="module")
def serving(built, tmp_path_factory) -> Iterator[Serving]:
    from simulator.simulation import simulate
    from training import registry
    from training.train import train

    home = tmp_path_factory.mktemp("bip-home")
    tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    dataset = simulate(CITIZENS, seed=SEED, truth_draws=0).dataset
    registry.client(tracking_uri).search_registered_models()  # the store's tables, before training
    train(dataset, tracking_uri, home / "mlartifacts", "bip-job-chance", MODEL_NAME, small_train_config(SEED))
    empty = tmp_path_factory.mktemp("empty-cwd")
    token = service_token(home)
    env = {
        **built.env,
        "BIP_HOME": str(home),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "OMP_NUM_THREADS": "1",
    }
    port, log = free_port(), home / "bento-server.log"
    command = [str(BIN / "bentoml"), "serve", built.tag, "--port", str(port), "--host", "127.0.0.1"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=empty, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, headers={"Authorization": f"Bearer {token}"})
    try:
        wait_for(lambda: client.get("/readyz").status_code == 200, 240, f"the Bento to be ready (log: {log})")
        yield Serving(client, log)
    finally:
        client.close()
        stop_process_tree(process)
    assert not list(empty.iterdir())  # it wrote nothing where it was started


def test_the_bento_serves_the_model_from_an_empty_folder(serving):
    from serving.schemas import EXAMPLE_HISTORY

    client = serving.client
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    answer = client.post("/predict", json=EXAMPLE_HISTORY)
    assert answer.status_code == 200, answer.text
    assert 0.0 < answer.json()["probability"] < 1.0
    assert client.get("/model").json()["version"] == "1"


def test_the_bento_serves_the_caseworker_page_css(serving):
    css = serving.client.get("/caseworker/static/page.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert css.content == (REPO / "serving/static/page.css").read_bytes()
