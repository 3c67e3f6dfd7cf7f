"""Retraining on new rounds end to end: a real store (SQLite), a real MLflow store, `bip retrain` and
`bip promote` in-process and as processes, the lock, a killed retrain, and a real BentoML server that
picks up the new champion and offers the admin endpoints.

Every test gets its own installation (`champion_home`): round 1 (the extract of 2015-09-30) ingested
and a champion trained on it; `next_round` is the extract a quarter later.

(About 500 lines: 16 tests on the same `champion_home` fixture, the retrain's whole life in one place.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest_service import REPO, free_port, small_train_config, start_server, wait_for
from fastapi import HTTPException

from bip.settings import Settings, load_settings
from features.build import truncate_dataset
from features.catalogue import SCORE_COLUMNS
from features.dataset import Dataset
from features.store import ingest, ingests, load
from serving.process import stop_process_tree
from simulator.simulation import simulate
from training import registry
from training.lifecycle import Gates, RetrainError, _move_alias, retrain
from training.locks import LockHeld, exclusive
from training.train import train

pytestmark = pytest.mark.xdist_group("retrain")

CITIZENS, SEED = 1500, 2024
ROUND_1, ROUND_2, ROUND_3 = date(2015, 9, 30), date(2015, 12, 31), date(2016, 3, 31)


@pytest.fixture(scope="module")
def simulated() -> Dataset:
    return simulate(CITIZENS, seed=SEED, truth_draws=0).dataset


@dataclass
class Home:
    settings: Settings
    dataset: Dataset

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BIP_", "MLFLOW_"))}
        return {**env, "BIP_HOME": str(self.settings.home), "OMP_NUM_THREADS": "1"}

    def ingest_round(self, on: date, scramble: bool = False) -> None:
        extract = truncate_dataset(self.dataset, on)
        # Scrambled follow-ups end before the stored ones for some citizens: taken as a correction would be.
        data = scrambled_outcomes(extract) if scramble else extract
        ingest(data, self.settings.store_url, source=f"extract {on}", allow_older=scramble)

    def champion(self) -> int | None:
        s = self.settings
        return registry.champion_version(s.model_name, alias=s.model_alias, tracking_uri=s.tracking_uri)

    def versions(self) -> list[int]:
        found = registry.client(self.settings.tracking_uri).search_model_versions(f"name='{self.settings.model_name}'")
        return sorted(int(v.version) for v in found)

    def bip(self, *args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", "from bip.cli import main; main()", *args]
        return subprocess.run(command, capture_output=True, text=True, env=self.env, cwd=REPO, timeout=300)

    def retrain(self, **kwargs) -> object:
        return retrain(
            load(self.settings.store_url), self.settings, small_train_config(1), Gates.of(self.settings), **kwargs
        )


# Enough scrambled rows for the challenger's AUC to fall far below the champion's, few enough for its
# scores still to rank a little (a positive calibration slope), so that it is registered as rejected.
SCRAMBLED_SHARE = 0.6


def scrambled_outcomes(dataset: Dataset) -> Dataset:
    """The outcomes of SCRAMBLED_SHARE of the citizens shuffled between citizens: those rows are someone
    else's, except where another's follow-up would end before this citizen's enrolment (the citizen's own
    row then: the store refuses an export that breaks the contract, merged with it or not)."""
    outcomes = dataset.outcomes.reset_index(drop=True)
    rng = np.random.default_rng(7)
    order = rng.permutation(len(outcomes))
    enrolled = outcomes["citizen_id"].map(dataset.citizens.set_index("citizen_id")["enrolled_on"])
    fits = (outcomes["followed_until"].to_numpy()[order] >= enrolled.to_numpy()).astype(bool)
    fits &= rng.random(len(outcomes)) < SCRAMBLED_SHARE
    columns = ["event", "event_on", "followed_until"]
    shuffled = outcomes[columns].iloc[order].reset_index(drop=True)
    outcomes.loc[fits, columns] = shuffled.loc[fits, columns]
    return Dataset(dataset.citizens, dataset.caseworkers, dataset.measurements, dataset.interventions, outcomes)


def isolated_settings(home: Path, **overrides) -> Settings:
    """Settings of an installation in `home`, whatever MLflow left in the environment (`set_tracking_uri`
    sets MLFLOW_TRACKING_URI for the whole process)."""
    return load_settings(home=home, mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}", **overrides)


@pytest.fixture
def home(tmp_path, simulated) -> Home:
    """Round 1 ingested into a fresh store and a champion (version 1) trained on it."""
    settings = isolated_settings(tmp_path / "bip")
    settings.home.mkdir()
    found = Home(settings, simulated)
    found.ingest_round(ROUND_1)
    s = settings
    train(load(s.store_url), s.tracking_uri, s.artifact_root, s.experiment, s.model_name, small_train_config(1))
    assert found.champion() == 1
    return found


def run_of(settings: Settings, run_id: str):
    return registry.client(settings.tracking_uri).get_run(run_id)


def store_state(settings: Settings) -> tuple:
    data = load(settings.store_url)
    return tuple(len(getattr(data, t)) for t in Dataset.__dataclass_fields__), len(ingests(settings.store_url))


def test_good_round_is_promoted_in_one_run(home):
    home.ingest_round(ROUND_2)
    outcome = home.retrain()
    assert outcome.promoted and outcome.decision == "promoted", [g.reason for g in outcome.gates]
    assert (outcome.champion_version, outcome.challenger_version, home.champion()) == (1, 2, 2)
    assert {g.name for g in outcome.gates} == {"ordering", "auc", "auc_drop", "ece", "fairness"}
    # The window: outcomes that became known since the champion's data, which neither model was fitted on.
    assert outcome.window["after"] == "2014-09-30" and outcome.window["until"] <= "2014-12-31"
    assert outcome.window["rows"] > 300
    run = run_of(home.settings, outcome.run_id)
    assert run.data.tags["decision"] == "promoted" and run.data.tags["challenger_version"] == "2"
    for model in ("challenger", "champion"):
        assert 0.6 < run.data.metrics[f"{model}_window_roc_auc"] < 1.0
    assert run.data.metrics["gate_auc_passed"] == 1.0 and "psi_cit_self_efficacy" in run.data.metrics
    artifacts = {f.path for f in registry.client(home.settings.tracking_uri).list_artifacts(outcome.run_id, "retrain")}
    assert {"retrain/gates.json", "retrain/drift.csv"} <= artifacts
    assert set(outcome.drift["column"]) == set(SCORE_COLUMNS)
    tags = registry.client(home.settings.tracking_uri).get_model_version(home.settings.model_name, "2").tags
    assert tags["decision"] == "promoted" and tags["retrain_run"] == outcome.run_id


def test_scrambled_outcomes_are_rejected_with_the_reason(home):
    home.ingest_round(ROUND_2, scramble=True)
    outcome = home.retrain()
    assert not outcome.promoted and outcome.decision == "rejected"
    failed = {g.name: g.reason for g in outcome.failed}
    assert "auc_drop" in failed and "validated out-of-time AUC" in failed["auc_drop"]
    assert home.champion() == 1  # the champion stays
    # The challenger is kept, registered as rejected, for an administrator to look at (or promote by hand).
    version = registry.client(home.settings.tracking_uri).get_model_version(home.settings.model_name, "2")
    assert version.tags["decision"] == "rejected"
    assert run_of(home.settings, outcome.run_id).data.tags["failed_gates"].split(",") == list(failed)


def test_cli_reports_failed_gate_and_exit_code_dry_run_moves_nothing(home):
    home.ingest_round(ROUND_2, scramble=True)
    dry = home.bip("retrain", "--dry-run", "--n-boot", "20", "--json", str(home.settings.home / "out.json"))
    assert dry.returncode == 1, dry.stderr
    assert "FAIL  auc_drop" in dry.stdout and "decision: dry run: would reject" in dry.stdout
    outcome = json.loads((home.settings.home / "out.json").read_text())
    assert outcome["challenger_version"] is None and not outcome["promoted"]
    assert home.versions() == [1] and home.champion() == 1  # nothing registered, nothing moved


def test_no_new_round_is_refused(home):
    with pytest.raises(RetrainError, match="ingest a new measurement round"):
        home.retrain()
    result = home.bip("retrain")
    assert result.returncode == 2 and "ingest a new measurement round" in result.stderr


def test_retrain_needs_a_champion(tmp_path, simulated):
    settings = isolated_settings(tmp_path / "empty")
    settings.home.mkdir()
    ingest(truncate_dataset(simulated, ROUND_1), settings.store_url)
    with pytest.raises(RetrainError, match="run `bip train` first"):
        retrain(load(settings.store_url), settings, small_train_config(1), Gates.of(settings))


def test_promote_by_hand_rolls_back_and_forward_and_is_logged(home):
    home.ingest_round(ROUND_2)
    assert home.retrain().promoted and home.champion() == 2
    back = home.bip("promote", "--version", "1", "--reason", "rollback drill")
    assert back.returncode == 0 and "version 2 -> 1" in back.stdout
    assert home.champion() == 1
    tags = registry.client(home.settings.tracking_uri).get_model_version(home.settings.model_name, "1").tags
    assert tags["promoted_reason"] == "rollback drill" and tags["promoted_by"]
    mlflow.set_tracking_uri(home.settings.tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="attributes.run_name = 'promote'")
    assert runs[["params.from_version", "params.to_version"]].values.tolist() == [["2", "1"]]
    missing = home.bip("promote", "--version", "9")
    assert missing.returncode == 2 and "has no version 9" in missing.stderr
    assert home.champion() == 1


def test_promotion_refused_when_the_champion_moved_meanwhile(home):
    home.ingest_round(ROUND_2)
    home.retrain(dry_run=False)  # version 2, champion
    with pytest.raises(RetrainError, match="moved from version 1 to 2"):
        _move_alias(home.settings, 1, "stale retrain", expected=1, check=True)
    assert home.champion() == 2


def wait_for_running_retrain(settings: Settings, process: subprocess.Popen, timeout: float = 120) -> str:
    """The id of the "retrain" run once the process has started it (i.e. it is training)."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert process.poll() is None, "the retrain ended before it could be killed"
        runs = mlflow.search_runs(
            search_all_experiments=True,
            filter_string="attributes.run_name = 'retrain' and attributes.status = 'RUNNING'",
            output_format="list",
        )
        if runs:
            return runs[0].info.run_id
        time.sleep(0.1)
    pytest.fail("the retrain run did not start")


def retrain_process(env: dict[str, str], *args: str) -> subprocess.Popen:
    command = [sys.executable, "-c", "from bip.cli import main; main()", "retrain", *args]
    return subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_two_retrains_on_different_homes_and_one_store_one_runs_and_a_killed_one_frees_the_lease(
    tmp_path, simulated, store_url
):
    """Two installations (two BIP_HOMEs, as two machines would have) share one store and one registry:
    while one retrains, the other is refused; killed with SIGKILL, the first frees the lease when it
    runs out, and the next retrain marks its run KILLED and goes ahead."""
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first, second = (
        Home(load_settings(home=tmp_path / name, database_url=store_url, mlflow_tracking_uri=tracking), simulated)
        for name in ("first", "second")
    )
    for home in (first, second):
        home.settings.home.mkdir()
    first.ingest_round(ROUND_1)
    s = first.settings
    train(load(s.store_url), s.tracking_uri, s.artifact_root, s.experiment, s.model_name, small_train_config(1))
    first.ingest_round(ROUND_2)
    before = store_state(first.settings)
    lease = {"BIP_DATABASE_URL": store_url, "MLFLOW_TRACKING_URI": tracking, "BIP_LOCK_LEASE_SECONDS": "10"}
    # Many bootstrap replicates: the first retrain is still running when the second asks.
    process = retrain_process({**first.env, **lease}, "--n-boot", "20000")
    try:
        run_id = wait_for_running_retrain(first.settings, process)
        refused = subprocess.run(
            [sys.executable, "-c", "from bip.cli import main; main()", "retrain"],
            capture_output=True,
            text=True,
            env={**second.env, **lease},
            cwd=REPO,
            timeout=300,
        )
        assert refused.returncode == 2, refused.stderr
        assert f"another process holds the retrain lock (pid {process.pid}: retrain" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert "decision" not in run_of(first.settings, run_id).data.tags  # the first still trains
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert first.champion() == 1 and first.versions() == [1]
    assert store_state(first.settings) == before
    # Until its lease runs out, the dead holder still holds it; then the second installation goes ahead.
    with pytest.raises(LockHeld, match=f"pid {process.pid}: retrain"):
        second.retrain()
    killed = time.monotonic()
    with exclusive(store_url, "retrain", "a look", wait_seconds=30):
        assert time.monotonic() - killed < 12  # within a lease (10 s) of the kill
    outcome = second.retrain()
    assert run_of(second.settings, run_id).info.status == "KILLED"
    assert outcome.promoted and second.champion() == 2


def test_a_busy_registry_lock_keeps_the_champion_and_tags_no_promotion(home, monkeypatch):
    """The registry lock stays held past the wait: the retrain ends normally, decides "not promoted",
    and the registered challenger is not tagged as promoted."""
    import training.lifecycle

    monkeypatch.setattr(training.lifecycle, "REGISTRY_LOCK_WAIT_SECONDS", 0.5)
    home.ingest_round(ROUND_2)
    with exclusive(home.settings.store_url, "registry", "a promotion by hand"):
        outcome = home.retrain()
    assert not outcome.promoted and outcome.decision.startswith("not promoted: promotion of")
    assert "a promotion by hand" in outcome.decision
    assert home.champion() == 1 and outcome.challenger_version == 2
    tags = registry.client(home.settings.tracking_uri).get_model_version(home.settings.model_name, "2").tags
    assert tags["decision"] == outcome.decision
    assert run_of(home.settings, outcome.run_id).data.tags["decision"] == outcome.decision


def closed_port_env(home: Home) -> dict[str, str]:
    """The installation's environment with its registry at a port nothing listens on, failing fast."""
    return {
        **home.env,
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    }


def test_an_unreachable_registry_is_an_error_not_no_champion(home):
    s = home.settings
    down = f"http://127.0.0.1:{free_port()}"
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        with pytest.raises(registry.RegistryUnavailable, match="could not be read"):
            registry.champion_version(s.model_name, tracking_uri=down)
    finally:
        del os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    assert registry.champion_version("no-such-model", tracking_uri=s.tracking_uri) is None
    assert registry.champion_version(s.model_name, alias="no-such-alias", tracking_uri=s.tracking_uri) is None


def test_an_unreachable_registry_stops_train_and_retrain_and_moves_no_alias(home):
    home.ingest_round(ROUND_2)
    env = closed_port_env(home)
    for command in (["retrain"], ["train", "--n-boot", "5"]):
        stopped = subprocess.run(
            [sys.executable, "-c", "from bip.cli import main; main()", *command],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=600,
        )
        assert stopped.returncode == 3, (command, stopped.stderr[-2000:])
        assert f"{env['MLFLOW_TRACKING_URI']}" in stopped.stderr and "failed" in stopped.stderr
    assert home.champion() == 1 and home.versions() == [1]


def test_a_crashed_retrain_job_reports_failed_with_exit_code_3(home, monkeypatch):
    """A retrain whose store is broken (not a database) crashes: exit code 3, job state "failed"."""
    from serving.admin import job_status, start_retrain

    broken = home.settings.home / "broken.db"
    broken.write_bytes(b"this is not a database" * 100)
    for key, value in home.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("BIP_DATABASE_URL", f"sqlite:///{broken}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", home.settings.tracking_uri)
    job = start_retrain(home.settings, dry_run=False)
    status = wait_for(lambda: (s := job_status(home.settings, job))["status"] != "running" and s, 120, "the job to end")
    assert (status["status"], status["exit_code"], status["outcome"]) == ("failed", 3, None), status["log_tail"]
    assert "not a database" in status["log_tail"]
    assert home.champion() == 1 and home.versions() == [1]


# --- the running service and the admin endpoints -----------------------------------------------------


@pytest.fixture
def server(home) -> tuple[Home, httpx.Client, str]:
    """The real service over the home's store and registry; `client` calls as a researcher (read-only),
    and the token returned belongs to a user with the admin role in the same store."""
    from serving import accounts

    accounts.add_user(home.settings.store_url, "ops", accounts.Role.admin)
    admin_token = accounts.issue_token(home.settings.store_url, "ops")
    accounts.add_user(home.settings.store_url, "reader", accounts.Role.researcher)
    reader = accounts.issue_token(home.settings.store_url, "reader")
    env = {**home.env, "BIP_MODEL_POLL_SECONDS": "1"}
    port, log = free_port(), home.settings.home / "server.log"
    process = start_server(env, port, log)
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", timeout=60, headers={"Authorization": f"Bearer {reader}"}
    )
    try:
        wait_for(lambda: client.get("/readyz").status_code == 200, 180, f"the server to be ready (log: {log})")
        yield home, client, admin_token
    finally:
        client.close()
        stop_process_tree(process)


def served_version(client: httpx.Client) -> str:
    return client.get("/model").json()["version"]


def test_service_serves_new_champion_and_admin_needs_the_role(server):
    home, client, admin_token = server
    admin = {"Authorization": f"Bearer {admin_token}"}
    assert served_version(client) == "1"
    # Without a token, with a wrong one, or as another role, the admin endpoints refuse.
    anonymous = {"Authorization": ""}
    assert client.post("/admin/promote", json={"version": 1}, headers=anonymous).status_code == 401
    assert client.post("/admin/retrain", json={}, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/admin/retrain", json={}).status_code == 403  # the researcher
    assert client.get("/admin/jobs/x", headers={"Authorization": "Basic " + admin_token}).status_code == 401
    page, api = client.get("/caseworker/model").text, client.get("/docs.json").json()
    assert "/admin" not in page and not [path for path in api["paths"] if path.startswith("/admin")]
    # A promotion by retrain is served without a restart.
    home.ingest_round(ROUND_2)
    assert home.retrain().promoted
    wait_for(lambda: served_version(client) == "2", 60, "the service to serve version 2")
    # Roll back over HTTP; a client's mistakes are 4xx.
    assert client.post("/admin/promote", json={"version": "two"}, headers=admin).status_code == 422
    assert client.post("/admin/promote", json={"version": 9}, headers=admin).status_code == 404
    back = client.post("/admin/promote", json={"version": 1, "reason": "drill"}, headers=admin)
    assert back.status_code == 200 and back.json() == {
        "name": home.settings.model_name,
        "from_version": 2,
        "to_version": 1,
    }
    wait_for(lambda: served_version(client) == "1", 60, "the service to serve version 1 again")
    tags = registry.client(home.settings.tracking_uri).get_model_version(home.settings.model_name, "1").tags
    assert tags["promoted_by"] == "ops" and tags["promoted_reason"] == "drill"  # the caller, not the server's account
    # A retrain started over HTTP runs in the background; its job reports the outcome.
    home.ingest_round(ROUND_3)
    started = client.post("/admin/retrain", json={"dry_run": True}, headers=admin)
    assert started.status_code == 202, started.text
    job = started.json()["job"]
    done = wait_for(
        lambda: (s := client.get(f"/admin/jobs/{job}", headers=admin).json())["status"] != "running" and s,
        240,
        "the retrain job to end",
        interval=1,
    )
    assert done["status"] == "kept", done["log_tail"]  # a dry run moves nothing
    assert done["outcome"]["decision"].startswith("dry run") and done["outcome"]["champion_version"] == 1
    assert client.get("/admin/jobs/nope", headers=admin).status_code == 404
    assert home.champion() == 1


def test_the_admin_app_refuses_everyone_without_the_access_middleware(tmp_path):
    """Mounted without serving.access.AccessControl (no principal in the scope), nobody gets in."""
    from fastapi.testclient import TestClient

    from serving.admin import create_admin_app

    bare = TestClient(create_admin_app(lambda: isolated_settings(tmp_path)))
    assert bare.post("/promote", json={"version": 1}, headers={"Authorization": "Bearer x"}).status_code == 401
    assert bare.post("/retrain", json={}).status_code == 401
    assert not (tmp_path / "admin").exists()  # nothing was started


def test_a_job_state_means_one_thing(tmp_path):
    """A job's status comes from its files: running or lost until an exit code is written; then promoted
    (0 and the alias moved), kept (0 otherwise, or 1: a gate failed) or failed (2: a usage or data error
    such as the lock, 3: a crash), with the log's last lines saying why; nothing outside the jobs folder
    is reachable."""
    from serving.admin import JOB_STATES, job_folder, job_state, job_status

    settings = isolated_settings(tmp_path)
    folder = job_folder(settings, "20261128T000000-0abc1234")
    folder.mkdir(parents=True)
    (folder / "request.json").write_text(json.dumps({"dry_run": False, "command": ["retrain"]}))
    (folder / "log.txt").write_text("error: retrain refused: another process holds the retrain lock (pid 7)\n")
    (folder / "pid").write_text(str(os.getpid()))  # a process that runs
    assert job_status(settings, folder.name)["status"] == "running"
    (folder / "pid").write_text("999999999")  # none does: the server stopped before the job ended
    assert job_status(settings, folder.name)["status"] == "lost"
    (folder / "exit_code").write_text("2")
    status = job_status(settings, folder.name)
    assert (status["status"], status["exit_code"], status["outcome"]) == ("failed", 2, None)
    assert "another process holds" in status["log_tail"]
    (folder / "outcome.json").write_text(json.dumps({"promoted": True, "decision": "promoted"}))
    (folder / "exit_code").write_text("0")
    assert job_status(settings, folder.name)["status"] == "promoted"
    assert [job_state(code, {"promoted": False}, False) for code in (0, 1, 2, 3, -9)] == [
        "kept",
        "kept",
        "failed",
        "failed",
        "failed",
    ]
    assert set(JOB_STATES) == {"running", "promoted", "kept", "failed", "lost"}
    for name in ("..", ".hidden", "missing"):
        with pytest.raises(HTTPException) as missing:
            job_status(settings, name)
        assert missing.value.status_code == 404


def test_simulated_extracts_arrive_round_after_round(tmp_path):
    """`bip simulate --extracts` writes one full export per quarter end; each is valid, holds what was
    known at its date, and ingesting them in order adds the new measurements and updates outcomes."""
    from features.contract import read_dataset

    out = tmp_path / "exports"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BIP_", "MLFLOW_"))}
    command = [sys.executable, "-c", "from bip.cli import main; main()", "simulate", "--out", str(out)]
    done = subprocess.run(
        [*command, "--citizens", "300", "--extracts"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )
    assert done.returncode == 0, done.stderr
    folders = sorted(out.iterdir())
    days = [date.fromisoformat(f.name.removeprefix("extract_")) for f in folders]
    assert len(days) >= 8 and all(pd.Timestamp(d).is_quarter_end for d in days)
    assert all((later - earlier).days in range(89, 93) for earlier, later in zip(days, days[1:], strict=False))
    assert (out.parent / "exports-truth" / "true_probabilities.csv").exists()  # beside, never inside
    url = f"sqlite:///{tmp_path / 'store.db'}"
    previous: set[str] = set()
    for folder, day in list(zip(folders, days, strict=True))[-3:]:
        extract, _ = read_dataset(folder)  # raises on any break of the contract
        assert extract.measurements["measured_on"].max() <= pd.Timestamp(day)
        assert extract.outcomes["followed_until"].max() <= pd.Timestamp(day)
        ids = set(extract.measurements["measurement_id"])
        assert previous <= ids and (not previous or ids - previous)  # a later export adds, never drops
        summary = ingest(extract, url, source=folder.name)
        if previous:
            assert summary.added["measurements"] == len(ids - previous) and summary.updated["outcomes"] > 0
        previous = ids
    assert [i["source"] for i in ingests(url)] == [f.name for f in folders[-3:]]
    # An older export after them would take back events and reopen interventions: refused, nothing stored,
    # unless asked for as a correction.
    from features.store import StoreError, load

    before = load(url)
    older, _ = read_dataset(folders[-2])
    with pytest.raises(StoreError, match="shorter time than the store says") as refused:
        ingest(older, url, source="older")
    assert "--allow-older" in str(refused.value) and not any(c in str(refused.value) for c in previous)
    after = load(url)
    for table in ("outcomes", "interventions", "measurements"):
        pd.testing.assert_frame_equal(after.table(table), before.table(table))
    assert ingest(older, url, source="older", allow_older=True).updated["outcomes"] > 0
