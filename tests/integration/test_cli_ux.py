"""What the command line shows a person: progress bars on a terminal and never in a pipe, `--version`,
`--verbose`/`--quiet`, choices refused before any work, and `bip status`.

Real `bip` processes throughout: under a pseudo-terminal (Python's `pty`) where a terminal is the point,
with captured pipes otherwise; the status test trains a small model into a temporary home first.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest_service import small_train_config

BAR = "━"  # rich's bar character
ESCAPE = "\x1b["
SIMULATE = ("simulate", "--citizens", "120", "--seed", "5")


def environment(home: Path) -> dict[str, str]:
    env = {**os.environ, "BIP_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}
    for name in ("BIP_DATABASE_URL", "MLFLOW_RUN_ID", "MLFLOW_CONFIGURE_LOGGING"):
        env.pop(name, None)
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from bip.cli import main; main()", *args]


def piped(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), capture_output=True, text=True, env=environment(home), timeout=300)


def under_terminal(*args: str, home: Path, timeout: float = 300) -> tuple[int, str]:
    """Run `bip ARGS` with stdin, stdout and stderr on a pseudo-terminal of 120 columns; its exit code
    and everything it wrote there."""
    import fcntl
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**environment(home), "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(command(*args), stdin=terminal, stdout=terminal, stderr=terminal, env=env)
    os.close(terminal)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the process has closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)
    return code, b"".join(chunks).decode("utf-8", "replace")


# --- progress ---------------------------------------------------------------------------------------------


def test_progress_is_drawn_on_a_terminal(tmp_path):
    code, shown = under_terminal(*SIMULATE, "--out", str(tmp_path / "data"), home=tmp_path / "home")
    assert code == 0, shown
    assert BAR in shown and "simulate: citizens followed" in shown
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)  # without colours and cursor moves
    assert re.search(r"\d:\d\d:\d\d / \d:\d\d:\d\d left", plain)  # time spent and the estimate left
    assert "120/120" in shown  # the bar ends full
    assert "simulated 120 citizens" in shown


def test_progress_stays_out_of_pipes(tmp_path):
    done = piped(*SIMULATE, "--out", str(tmp_path / "data"), home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    assert "simulated 120 citizens" in done.stdout
    for stream in (done.stdout, done.stderr):
        assert BAR not in stream and ESCAPE not in stream and "\r" not in stream
    ingested = piped("ingest", str(tmp_path / "data"), home=tmp_path / "home")
    assert ingested.returncode == 0, ingested.stderr
    assert BAR not in ingested.stderr + ingested.stdout and "ingest:" not in ingested.stderr


def test_quiet_draws_no_progress_even_on_a_terminal(tmp_path):
    code, shown = under_terminal("--quiet", *SIMULATE, "--out", str(tmp_path / "data"), home=tmp_path / "home")
    assert code == 0, shown
    assert BAR not in shown and "simulated 120 citizens" in shown


def test_ingest_shows_each_table_on_a_terminal(tmp_path):
    home = tmp_path / "home"
    assert piped(*SIMULATE, "--out", str(tmp_path / "data"), home=home).returncode == 0
    code, shown = under_terminal("ingest", str(tmp_path / "data"), home=home)
    assert code == 0, shown
    assert "ingest: compare" in shown and "ingest: write" in shown and "5/5" in shown


# --- version, verbosity, choices --------------------------------------------------------------------------


def test_version_comes_from_the_package_metadata(tmp_path):
    done = piped("--version", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"bip {version('bip')}"


def test_verbose_lets_mlflow_and_alembic_lines_through_one_format(tmp_path):
    # `bip promote` on a new tracking store: MLflow creates its tables (alembic), then refuses the version.
    loud = piped("--verbose", "promote", "--version", "1", home=tmp_path / "loud")
    assert loud.returncode == 2, loud.stderr
    assert "INFO mlflow.store.db.utils: Creating initial MLflow database tables" in loud.stderr
    assert "INFO alembic." in loud.stderr
    plain = piped("promote", "--version", "1", home=tmp_path / "plain")
    assert plain.returncode == 2
    assert "INFO" not in plain.stderr and "has no version 1" in plain.stderr
    assert piped("--verbose", "--quiet", "status", home=tmp_path / "both").returncode == 2


def test_a_wrong_format_is_refused_before_any_work(tmp_path):
    out = tmp_path / "data"
    done = piped("simulate", "--out", str(out), "--format", "xlsx", home=tmp_path / "home")
    assert done.returncode == 2
    words = "".join(c for c in done.stderr if c not in "│ \n")  # the message wraps inside a box
    assert "'xlsx'isnotoneof'csv','parquet'" in words
    assert not out.exists() and not out.with_name("data-truth").exists()
    exported = piped("export", str(tmp_path / "exported"), "--format", "xlsx", home=tmp_path / "home")
    assert exported.returncode == 2 and not (tmp_path / "exported").exists()
    assert not (tmp_path / "home").exists()  # not even the home folder was made
    helped = piped("simulate", "--help", home=tmp_path / "home")
    assert "csv|parquet" in helped.stdout
    weighted = piped("train", "--weighting", "uniform", home=tmp_path / "home")
    assert weighted.returncode == 2 and not (tmp_path / "home").exists()


def test_the_format_choice_is_the_contracts():
    from features.commands import TableFormat
    from features.contract_reading import FORMATS
    from training.commands import Weighting
    from training.data import WEIGHTINGS

    assert tuple(TableFormat) == FORMATS
    assert tuple(Weighting) == WEIGHTINGS


# --- progress hooks of the library, seen through a recording Progress ---------------------------------------


@dataclass
class Recorded:
    """A Progress (bip.progress) that remembers each task: its description, total and the work advanced."""

    tasks: list[dict]

    @contextmanager
    def task(self, description: str, total: float | None = None):
        entry = {"description": description, "total": total, "done": 0.0}
        self.tasks.append(entry)

        class Task:
            def advance(self, amount: float = 1) -> None:
                entry["done"] += amount

        yield Task()

    def described(self, text: str) -> list[dict]:
        return [t for t in self.tasks if text in t["description"]]


# --- bip status ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trained:
    home: Path
    citizen_ids: list[str]
    version: int
    metrics: dict[str, float]
    progress: Recorded


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    """A store with one ingested dataset and a small champion trained into the same home (in process)."""
    from features.contract import write_dataset
    from features.store import load
    from simulator.simulation import simulate
    from training.train import train

    home = tmp_path_factory.mktemp("status")
    dataset = simulate(300, seed=17, truth_draws=0).dataset
    write_dataset(dataset, home / "data")
    ingested = piped("ingest", str(home / "data"), home=home)
    assert ingested.returncode == 0, ingested.stderr
    recorded = Recorded([])
    outcome = train(
        load(f"sqlite:///{home / 'store.db'}"),
        f"sqlite:///{home / 'mlflow.db'}",
        home / "mlartifacts",
        "bip-job-chance",
        "bip-job-chance",
        small_train_config(17),
        progress=recorded,
    )
    metrics = outcome.metrics["xgboost_monotone"]
    return Trained(home, list(dataset.citizens["citizen_id"]), outcome.model_version, metrics, recorded)


def test_training_reports_each_family_fold_and_bootstrap(trained):
    shown = trained.progress
    assert shown.described("features") and shown.described("training: model families")
    (folds,) = shown.described("xgboost_monotone: folds")
    assert folds["total"] == 2 and folds["done"] == 2  # small_train_config: two folds
    bootstraps = shown.described("bootstrap")
    assert len(bootstraps) == 2 and all(b["total"] == 5 and b["done"] == 5 for b in bootstraps)  # CV and OOT
    assert all(t["done"] == t["total"] for t in shown.tasks if t["total"] is not None)


def test_ingest_reports_each_table(tmp_path):
    from features.dataset import TABLES
    from features.store import ingest
    from simulator.simulation import simulate

    recorded = Recorded([])
    ingest(simulate(40, seed=3, truth_draws=0).dataset, f"sqlite:///{tmp_path / 'store.db'}", progress=recorded)
    assert [t["description"] for t in recorded.tasks] == ["ingest: compare", "ingest: write"]
    assert all(t["total"] == len(TABLES) == t["done"] for t in recorded.tasks)


def test_status_json_shows_the_store_and_the_champion_with_its_metrics(trained):
    done = piped("status", "--json", home=trained.home)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    store = status["store"]
    assert store["citizens"] == 300 and store["measurements"] > 300
    assert store["rounds"] == len(store["quarters"]) > 4
    assert store["last_ingest"]["added"]["citizens"] == 300
    champion = status["champion"]
    assert champion["version"] == trained.version == 1 and champion["by"] == "train"
    assert champion["alias"] == "champion" and status["registry"]["aliases"] == {"champion": 1}
    auc, ece = champion["roc_auc"], champion["ece"]
    assert auc["estimate"] == pytest.approx(trained.metrics["oot_roc_auc"], abs=1e-4)
    assert ece["estimate"] == pytest.approx(trained.metrics["oot_ece"], abs=1e-4)
    assert auc["low"] <= auc["estimate"] <= auc["high"]
    assert champion["measured_on"] == "out-of-time test"
    assert champion["training_data"]["rows"] == str(store["measurements"])
    assert champion["rounds_since_training"] == 0 and 0 <= champion["age_days"] < 1
    assert status["last_retrain"] is None and status["admin_jobs_running"] == []
    assert status["warnings"] == []


def test_status_names_no_citizen(trained):
    shown = piped("status", home=trained.home).stdout + piped("status", "--json", home=trained.home).stdout
    assert "champion: bip-job-chance version 1" in shown and "AUC" in shown
    assert not [c for c in trained.citizen_ids if c in shown]


def test_status_of_a_new_home_creates_nothing(tmp_path):
    done = piped("status", "--json", home=tmp_path / "new")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["champion"] is None and status["store"]["citizens"] == 0
    assert status["warnings"] == ["no champion: run `bip train`"]
    assert not (tmp_path / "new" / "mlflow.db").exists() and not (tmp_path / "new" / "store.db").exists()


def test_status_warns_of_a_stale_champion_and_large_drift():
    from serving.status import rounds_after, status_warnings

    quarters = ["2015Q3", "2015Q4", "2016Q1", "2016Q2"]
    assert rounds_after(quarters, "2015-12-31") == 2 and rounds_after(quarters, "2016-06-30") == 0
    status = {
        "registry": {"aliases": {"champion": 3}},
        "champion": {"version": 3, "rounds_since_training": 2, "training_data": {"last_measured_on": "2015-12-31"}},
        "last_retrain": {
            "status": "FINISHED",
            "drift": [{"column": "cit_self_efficacy", "psi": 0.31}, {"column": "cit_health", "psi": 0.12}],
        },
    }
    warnings = status_warnings(status)
    assert any("2 newer measurement rounds" in w and "bip retrain" in w for w in warnings)
    assert any("cit_self_efficacy 0.31" in w and "cit_health" not in w for w in warnings)
    fresh = {**status, "champion": {**status["champion"], "rounds_since_training": 1}, "last_retrain": None}
    assert status_warnings(fresh) == []


# --- a user's mistakes: one line and exit 2, never a traceback ------------------------------------------


def refused(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and all(w in done.stderr for w in words), done.stderr[-2000:]


def test_an_output_that_is_a_folder_is_refused_before_any_work(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    refused(piped("predict", "--out", str(folder), home=tmp_path / "home"), "is a folder")
    refused(piped("evaluate", "--out", str(folder), home=tmp_path / "home"), "is a folder")
    # retrain checks its --json before it trains, registers or promotes anything
    refused(piped("retrain", "--json", str(folder), home=tmp_path / "home"), "is a folder")
    blocked = tmp_path / "a-file"
    blocked.write_text("x")
    refused(piped("predict", "--out", str(blocked / "p.csv"), home=tmp_path / "home"), "is a file, not a folder")
    refused(piped("export", str(blocked), home=tmp_path / "home"), "is a file")


@pytest.mark.parametrize(
    "args",
    [
        ("simulate", "--out", "x", "--citizens", "0"),
        ("simulate", "--out", "x", "--seed", "-1"),
        ("evaluate", "--out", "e.json", "--n-boot", "0"),
        ("train", "--horizon-months", "0"),
        ("retrain", "--max-ece", "-1"),
        ("predict", "--out", "p.csv", "--top", "-3"),
    ],
)
def test_an_option_out_of_its_range_is_refused(tmp_path, args):
    done = piped(*args, home=tmp_path / "home")
    assert done.returncode == 2 and "Traceback" not in done.stderr and "Invalid value" in done.stderr, done.stderr


def test_a_missing_config_file_is_named(tmp_path):
    refused(
        piped("simulate", "--out", str(tmp_path / "x"), "--config", "/no/such.yaml", home=tmp_path), "/no/such.yaml"
    )


@pytest.mark.parametrize(
    "url",
    ["notaurl", "postgresql+psycopg://user:pw-4417@127.0.0.1:notaport/x", "mysql://user:pw-4417@localhost/x"],
)
def test_a_store_url_bip_cannot_use_is_a_setting_error_without_the_url(tmp_path, url):
    env = {**environment(tmp_path), "BIP_DATABASE_URL": url}
    done = subprocess.run(command("status"), capture_output=True, text=True, env=env, timeout=300)
    refused(done, "database_url", "is not a database URL bip can use")
    assert "pw-4417" not in done.stderr + done.stdout


def test_a_model_the_registry_does_not_have_is_named(tmp_path):
    done = piped("predict", "--out", str(tmp_path / "p.csv"), "--model", "models:/bip-job-chance/99", home=tmp_path)
    refused(done, "the model registry says")


def test_a_report_on_an_empty_store_says_what_is_missing(tmp_path):
    refused(piped("report", "--out", str(tmp_path / "rep"), home=tmp_path), "no citizen has two measurements")
