"""The model card and MLflow as researchers use it (issue #17, items 3 and 4), on a model trained with the
real training code into a temporary MLflow store:

- the champion version carries a model card (Markdown, HTML, its facts as JSON, a reliability plot) as
  artifacts of the run that logged it, found through the version's `model_card` tag, with every part
  the issue asks for, and the caseworker page's model view shows it and links to it;
- the parent run has the dataset lineage (schema, digest and the fingerprint as profile, no rows), the
  family comparison as an MLflow table and system metrics; the logged model carries its metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest_service import served as served  # noqa: F401  (the module fixture: a real BentoML server)
from conftest_service import small_train_config

from simulator.simulation import simulate

MODEL = "bip-job-chance"
CITIZENS, SEED = 300, 1311


@dataclass(frozen=True)
class Trained:
    tracking_uri: str
    outcome: object
    dataset: object

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    from training.train import train

    root = tmp_path_factory.mktemp("card")
    dataset = simulate(CITIZENS, seed=SEED, truth_draws=0).dataset
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    config = small_train_config(SEED, models=("xgboost_monotone", "logit"), max_rounds=60)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        outcome = train(dataset, tracking_uri, root / "mlartifacts", "bip-job-chance", MODEL, config)
    return Trained(tracking_uri, outcome, dataset)


def card_file(trained: Trained, name: str, tmp_path: Path) -> Path:
    """A file of the champion's card, found as a reader would: alias -> version tag -> run artifacts."""
    client = trained.client()
    version = client.get_model_version_by_alias(MODEL, "champion")
    where = version.tags["model_card"]
    run_id, folder = where.removeprefix("runs:/").split("/", 1)
    assert run_id == version.run_id  # the run that logged the registered model
    return Path(client.download_artifacts(run_id, f"{folder}/{name}", str(tmp_path)))


def test_the_champion_has_a_model_card_among_its_run_artifacts(trained, tmp_path):
    client = trained.client()
    version = client.get_model_version_by_alias(MODEL, "champion")
    names = {f.path for f in client.list_artifacts(version.run_id, "model_card")}

    assert names == {
        f"model_card/{n}" for n in ("model_card.md", "model_card.html", "model_card.json", "reliability.svg")
    }
    assert version.tags["model_card"] == f"runs:/{version.run_id}/model_card"
    assert card_file(trained, "model_card.html", tmp_path).read_text().startswith("<!doctype html>")


def test_the_card_covers_what_the_issue_asks(trained, tmp_path):
    text = card_file(trained, "model_card.md", tmp_path).read_text()
    facts = json.loads(card_file(trained, "model_card.json", tmp_path).read_text())
    version = trained.client().get_model_version_by_alias(MODEL, "champion")

    for heading in (
        "## Intended use",
        "## Not meant for",
        "## Training data",
        "## How good it is",
        "### Reliability (out of time)",
        "## Fairness",
        "## Monotone constraints",
        "## Known limitations",
        "## How to contest a score",
    ):
        assert heading in text, heading
    assert facts["version"] == int(version.version) == trained.outcome.model_version
    # The fingerprint is the registered model's own, and the training window its dates.
    model_fingerprint = trained.outcome.model.training_fingerprint
    assert facts["data"] == model_fingerprint and model_fingerprint["content_sha256"] in text
    assert f"{model_fingerprint['first_measured_on']} to {model_fingerprint['last_measured_on']}" in text
    # Metrics with intervals, as training logged them on the champion's run (reused, not recomputed).
    logged = trained.client().get_run(version.run_id).data.metrics
    auc = next(
        m for m in facts["metrics"] if m["metric"].startswith("ROC AUC") and m["split"].startswith("out of time")
    )
    assert (auc["estimate"], auc["low"], auc["high"]) == pytest.approx(
        (logged["oot_roc_auc"], logged["oot_roc_auc_low"], logged["oot_roc_auc_high"])
    )
    assert len(facts["reliability"]) == 10 and "<svg" in card_file(trained, "reliability.svg", tmp_path).read_text()
    by = {row["column"] for row in facts["fairness"]}
    assert {"gender", "origin", "age_band", "jobcentre"} <= by
    jobcentres = {row["group"] for row in facts["fairness"] if row["column"] == "jobcentre"}
    assert jobcentres == set(trained.dataset.citizens["jobcentre"])
    monotone = {row["feature"] for row in facts["monotone"]}
    catalogue = trained.outcome.model.catalogue
    assert monotone == set(catalogue.loc[catalogue["monotone"] != 0, "name"]) and monotone


def test_the_card_holds_no_citizen_id(trained, tmp_path):
    ids = [*trained.dataset.citizens["citizen_id"], *trained.dataset.measurements["measurement_id"]]
    for name in ("model_card.md", "model_card.html", "model_card.json"):
        text = card_file(trained, name, tmp_path).read_text()
        # Simulated ids are short ("c12"): look for them as whole cells/words, not as substrings.
        words = set(text.replace("|", " ").replace("<", " ").replace(">", " ").replace('"', " ").split())
        assert not words & set(ids), name


def test_the_model_page_shows_and_links_the_card(trained):
    from starlette.testclient import TestClient

    from serving.core import Predictor
    from serving.page import create_app
    from serving.page.app import PageContext

    settings = SimpleNamespace(model_name=MODEL, model_alias="champion", tracking_uri=trained.tracking_uri)
    predictor = Predictor(settings)
    assert predictor.refresh()
    app = create_app(lambda: PageContext(predictor, settings, audit=None, sessions=None))

    page = TestClient(app).get("/model?lang=en")

    assert page.status_code == 200
    assert '<a href="#card">Model card' in page.text
    assert '<article class="model-card" id="card"' in page.text
    assert f"Model card: {MODEL} version {trained.outcome.model_version}" in page.text
    assert "How to contest a score" in page.text and "<svg" in page.text


def test_the_served_model_links_its_card_in_the_api_and_on_the_page(served):
    """The real service: GET /model answers where the card is, and that page shows the served version's."""
    info = served.client.get("/model").json()
    assert info["model_card_url"] == "/caseworker/model#card"

    with served.as_("researcher") as researcher:
        page = researcher.get(info["model_card_url"].split("#")[0], params={"lang": "en"})

    assert page.status_code == 200, page.text[:500]
    assert '<a href="#card">Model card' in page.text and 'id="card"' in page.text
    assert f"Model card: {info['name']} version {info['version']}" in page.text


def test_the_parent_run_has_lineage_without_rows(trained):
    run = trained.client().get_run(trained.outcome.parent_run_id)

    (dataset_input,) = run.inputs.dataset_inputs
    dataset = dataset_input.dataset
    fingerprint = trained.outcome.model.training_fingerprint
    assert dataset.name == "features" and dataset.digest == fingerprint["content_sha256"][:32]
    assert json.loads(dataset.profile) == fingerprint  # counts and dates only
    columns = {c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]}
    assert {"label", "cit_self_efficacy", "jobcentre"} <= columns
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"


def test_the_parent_run_has_the_family_table_and_system_metrics(trained, tmp_path):
    client = trained.client()
    run_id = trained.outcome.parent_run_id
    path = client.download_artifacts(run_id, "family_comparison.json", str(tmp_path))
    table = json.loads(Path(path).read_text())
    frame = pd.DataFrame(table["data"], columns=table["columns"])

    assert set(frame["family"]) == {"xgboost_monotone", "logit"} and "OOT AUC" in frame.columns
    assert any(key.startswith("system/") for key in client.get_run(run_id).data.metrics)


def test_the_logged_model_carries_its_metrics(trained):
    client = trained.client()
    version = client.get_model_version_by_alias(MODEL, "champion")
    experiments = [e.experiment_id for e in client.search_experiments()]
    (logged,) = [m for m in client.search_logged_models(experiments) if m.source_run_id == version.run_id]

    metrics = {m.key: m for m in logged.metrics}
    assert metrics["oot_roc_auc"].value == pytest.approx(trained.outcome.model.metrics["oot_roc_auc"])
    assert metrics["oot_roc_auc"].dataset_name == "features"


def test_the_mlproject_has_an_environment_main_and_report(tmp_path):
    """The MLproject's spec as MLflow reads it, and one entry point run by `mlflow run` itself."""
    import os
    import subprocess
    import sys

    from mlflow.projects._project_spec import load_project

    repo = Path(__file__).resolve().parents[2]
    project = load_project(str(repo / "mlproject"))
    assert project.env_type == "python_env" and Path(project.env_config_path).name == "python_env.yaml"
    assert {"main", "train", "retrain", "report"} <= set(project._entry_points)
    assert "bip report --out" in project.get_entry_point("report").compute_command({}, None)
    assert "bip train " in project.get_entry_point("main").compute_command({}, None)
    # One list of dependencies: the project environment's are pyproject.toml's (psutil among them, for system metrics).
    import tomllib

    import yaml

    environment = yaml.safe_load((repo / "mlproject" / "python_env.yaml").read_text())
    dependencies = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]
    assert environment["dependencies"] == dependencies and "psutil>=5.9" in dependencies

    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "BIP_HOME": str(tmp_path / "home"),
    }
    out = tmp_path / "simulated"
    command = [str(bin_dir / "mlflow"), "run", "mlproject", "-e", "simulate", "--env-manager", "local"]
    command += ["-P", f"out={out}", "-P", "citizens=30"]
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "measurements.csv").is_file()


def test_a_retrain_registers_its_version_with_a_card(tmp_path):
    """Round 1 ingested and trained on, round 2 ingested: the retrain's registered version has its card,
    in the retrain run, with the challenger's window metrics."""

    from bip.settings import load_settings
    from features.build import truncate_dataset
    from features.store import ingest, load
    from training.lifecycle import Gates, retrain
    from training.train import train

    home = tmp_path / "bip"
    home.mkdir()
    settings = load_settings(home=home, mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    dataset = simulate(1500, seed=2024, truth_draws=0).dataset
    ingest(truncate_dataset(dataset, pd.Timestamp("2015-09-30").date()), settings.store_url, source="round 1")
    s = settings
    train(load(s.store_url), s.tracking_uri, s.artifact_root, s.experiment, s.model_name, small_train_config(1))
    ingest(truncate_dataset(dataset, pd.Timestamp("2015-12-31").date()), settings.store_url, source="round 2")

    outcome = retrain(load(s.store_url), s, small_train_config(1), Gates.of(s))

    assert outcome.challenger_version == 2
    client = Trained(s.tracking_uri, None, None).client()
    version = client.get_model_version(s.model_name, "2")
    assert version.tags["model_card"] == f"runs:/{outcome.run_id}/model_card"
    local = client.download_artifacts(outcome.run_id, "model_card/model_card.json", str(tmp_path))
    facts = json.loads(Path(local).read_text())
    assert facts["made_by"] == "retrain" and facts["version"] == 2
    assert any(m["split"].startswith("retraining window") for m in facts["metrics"])
