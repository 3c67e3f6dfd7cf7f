"""No personal data leaves the store through MLflow (issue #13): a model trained with the real training
code into a temporary MLflow store carries no citizen, measurement or caseworker id in any artifact file, param,
tag or metric name of any run, logged model or registered model version.

The simulated ids are re-labelled to long random-looking ones ("cit-3f9a61c2d0b7") before training, so
that a substring match means the id itself, not a run of digits. The scan reads every file under the
artifact root and the tracking database itself as bytes, and walks every entity MLflow lists. It is
checked to find the ids where they are (the dataset folder), so a scan that sees nothing cannot pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from conftest_service import small_train_config
from relabelled_ids import relabelled

from features.contract import write_dataset
from features.dataset import Dataset
from simulator.simulation import simulate

CITIZENS, SEED = 300, 1307
MODEL = "bip-job-chance"


@dataclass(frozen=True)
class Trained:
    dataset: Dataset
    data: Path
    tracking_uri: str
    database: Path
    artifacts: Path

    @property
    def ids(self) -> list[str]:
        return [
            *self.dataset.citizens["citizen_id"],
            *self.dataset.measurements["measurement_id"],
            *self.dataset.caseworkers["caseworker_id"],
        ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    from training.train import train

    root = tmp_path_factory.mktemp("privacy")
    simulation = simulate(CITIZENS, seed=SEED, truth_draws=0)
    dataset = relabelled(simulation.dataset)
    write_dataset(dataset, root / "data")
    database, artifacts = root / "mlflow.db", root / "mlartifacts"
    tracking_uri = f"sqlite:///{database}"
    # As the service tests train (conftest_service.small_train_config): the champion family and the
    # logit, so both a booster's SHAP plots and a linear model's tables are scanned.
    config = small_train_config(SEED, models=("xgboost_monotone", "logit"), max_rounds=60)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        train(dataset, tracking_uri, artifacts, "bip-job-chance", MODEL, config)
    return Trained(dataset, root / "data", tracking_uri, database, artifacts)


def files_under(folder: Path) -> Iterator[Path]:
    return (path for path in sorted(folder.rglob("*")) if path.is_file())


def found_in_files(paths: Iterable[Path], ids: list[str]) -> dict[str, list[str]]:
    """Per file that holds any, the ids found in its bytes."""
    needles = [(i, i.encode()) for i in ids]
    found = {}
    for path in paths:
        content = path.read_bytes()
        hits = [i for i, needle in needles if needle in content]
        if hits:
            found[str(path)] = hits[:3]
    return found


def mlflow_texts(tracking_uri: str) -> Iterator[tuple[str, str]]:
    """(where, text) for every name and value MLflow lists: runs' params, tags and metric names, logged
    models' params and tags, registered models' and versions' tags, descriptions and sources."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    for run in client.search_runs(experiments):
        where = f"run {run.info.run_name}"
        yield where, str(run.info.run_name)
        for key, value in {**run.data.params, **run.data.tags}.items():
            yield where, f"{key}={value}"
        for key in run.data.metrics:
            yield where, key
    for logged in client.search_logged_models(experiments):
        for key, value in {**logged.params, **logged.tags}.items():
            yield f"logged model {logged.model_id}", f"{key}={value}"
    for model in client.search_registered_models():
        yield f"model {model.name}", f"{model.description} {model.tags}"
        for version in client.search_model_versions(f"name='{model.name}'"):
            yield f"{model.name} v{version.version}", f"{version.source} {version.description} {version.tags}"


def test_the_scan_finds_ids_where_they_are(trained):
    found = found_in_files(files_under(trained.data), trained.ids)
    assert any(path.endswith("measurements.csv") for path in found)


def test_training_logged_artifacts_a_model_and_runs(trained):
    """What the scan below reads is really there: plots, tables, the model and its input example."""
    names = {path.name for path in files_under(trained.artifacts)}
    assert {"shap_beeswarm.png", "fairness_cv.csv", "feature_catalogue.csv", "input_example.json"} <= names
    # The model card (with its fairness table by job centre) and the family comparison table (issue #17).
    assert {"model_card.md", "model_card.html", "model_card.json", "family_comparison.json"} <= names
    assert {"booster.ubj", "job_chance_model.json", "MLmodel"} <= names
    assert sum(1 for _ in mlflow_texts(trained.tracking_uri)) > 100


def test_no_artifact_file_holds_an_id(trained):
    assert found_in_files(files_under(trained.artifacts), trained.ids) == {}


def test_the_tracking_database_holds_no_id(trained):
    """Dataset lineage included: its schema, digest and profile are rows of this database."""
    import sqlite3

    with sqlite3.connect(trained.database) as db:
        assert db.execute("select count(*) from datasets where dataset_schema like '%citizen_id%'").fetchone()[0] == 1
    assert found_in_files([trained.database], trained.ids) == {}


def test_no_param_tag_or_metric_name_holds_an_id(trained):
    ids = trained.ids
    leaks = [(where, text[:80]) for where, text in mlflow_texts(trained.tracking_uri) if any(i in text for i in ids)]
    assert leaks == []


def test_the_input_example_is_synthetic(trained):
    """The MLflow input example is one row of mid values and first codes, not a row of the data."""
    import json

    from features.catalogue import SCORE_COLUMNS

    (example_file,) = [p for p in files_under(trained.artifacts) if p.name == "input_example.json"]
    example = json.loads(example_file.read_text())
    row = pd.DataFrame(example["data"], columns=example["columns"])
    assert len(row) == 1
    levels = [c for c in SCORE_COLUMNS if c in row.columns]
    assert levels and (row[levels] == 3.0).all(axis=None)
    assert "citizen_id" not in row.columns and "birth_year" not in row.columns
