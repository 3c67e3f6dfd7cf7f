"""MLflow bookkeeping of a training run, through an `MlflowClient` on an explicit tracking URI.

Nothing here reads or sets MLflow's process-wide tracking URI: every function takes the client (or
the URI) to work on, so two stores can be used side by side (a test's temporary one, the product's)
without one leaking into the other. Runs are made with `started_run`; a family's params, metrics,
plots and tables go into its child run with `log_family`; the model is logged as an MLflow 3 logged
model with `log_model` (its headline metrics attached to it) and registered with
`register_champion_candidate`. The parent run also gets the dataset lineage (`log_dataset`: schema,
digest and profile, never rows), the family comparison as a table (`log_comparison`) and MLflow's
system metrics (`system_metrics`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from training import evaluation
from training.config import TrainConfig
from training.data import fingerprint, labelled_rows
from training.explanation import explanation_artifacts
from training.model import JobChanceModel, save_pyfunc

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from training.learners import Learner
    from training.train import FamilyResult
    from training.validation import Split


logger = logging.getLogger(__name__)


def tracking_client(tracking_uri: str) -> MlflowClient:
    """A client on one tracking server, used as the model registry too."""
    from training import registry

    return registry.client(tracking_uri)


def experiment_id(name: str, artifact_root: Path, tracking_uri: str | None = None) -> str:
    """The id of experiment `name` at `tracking_uri` (None: MLflow's current one), created when new, its
    artifacts under `artifact_root` for a local store (`registry.artifact_location`)."""
    from mlflow import MlflowClient, get_tracking_uri

    from training import registry

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = registry.artifact_location(tracking_uri or get_tracking_uri(), artifact_root, name)
    return client.create_experiment(name, artifact_location=location)


@dataclass(frozen=True)
class RunLog:
    """One MLflow run to log into, by client and id."""

    client: MlflowClient
    run_id: str
    experiment_id: str

    def params(self, values: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in values.items()])

    def metrics(
        self, values: Mapping[str, float], model_id: str | None = None, dataset: tuple[str, str] | None = None
    ) -> None:
        """The finite values (a metric of one class only is NaN and is left out); with `model_id`, attached
        to that logged model too (MLflow's Models tab compares them), measured on `dataset` (name, digest)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        name, digest = dataset or (None, None)
        finite = [
            Metric(k, float(v), now, 0, model_id=model_id, dataset_name=name, dataset_digest=digest)
            for k, v in values.items()
            if np.isfinite(v)
        ]
        for start in range(0, len(finite), 1000):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(self.run_id, metrics=finite[start : start + 1000])

    def tags(self, values: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in values.items()])

    def artifacts(self, folder: Path, path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), path)


@contextmanager
def started_run(
    client: MlflowClient, experiment: str, name: str, parent: RunLog | None = None, run_id: str | None = None
) -> Iterator[RunLog]:
    """A new run `name` in `experiment` (a child of `parent`), ended FINISHED, or FAILED when the block
    raises. With `run_id` (MLFLOW_RUN_ID, set by `mlflow run`), the block logs into that run instead,
    and `mlflow run`, which made it, ends it."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    if run_id is not None:
        yield RunLog(client, run_id, client.get_run(run_id).info.experiment_id)
        return
    tags = {MLFLOW_PARENT_RUN_ID: parent.run_id} if parent is not None else None
    run = client.create_run(experiment, run_name=name, tags=tags)
    try:
        yield RunLog(client, run.info.run_id, experiment)
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")


@dataclass(frozen=True)
class LoggedModel:
    """A model logged by `log_model`: what `registry.register` needs of it. `model_uri` is where its
    files lie: MLflow resolves a `models:/<model id>` source through its process-wide URI (a TODO in
    its SQL registry store), so the version is registered from the storage location itself."""

    model_uri: str
    run_id: str
    model_id: str


def log_model(run: RunLog, model: JobChanceModel, folder: Path, name: str = "model") -> LoggedModel:
    """`model` as an MLflow 3 logged model of `run` (its pyfunc files written under `folder` first)."""
    from mlflow.entities import LoggedModelOutput

    local = save_pyfunc(model, folder)
    logged = run.client.create_logged_model(run.experiment_id, name=name, source_run_id=run.run_id)
    try:
        run.client.log_model_artifacts(logged.model_id, str(local))
    except BaseException:
        run.client.finalize_logged_model(logged.model_id, "FAILED")
        raise
    run.client.finalize_logged_model(logged.model_id, "READY")
    run.client.log_outputs(run.run_id, [LoggedModelOutput(logged.model_id, 0)])
    run.metrics(model.metrics, model_id=logged.model_id, dataset=dataset_reference(model.training_fingerprint))
    return LoggedModel(logged.artifact_location, run.run_id, logged.model_id)


def log_training_data(run: RunLog, split: Split, config: TrainConfig, truth_available: bool, folder: Path) -> None:
    """The parent run's params (configuration, cutoff, row counts, the data fingerprint: aggregates only)
    and its feature catalogue and fingerprint files."""
    data_print = fingerprint(split.full)
    run.params(
        {
            "horizon_months": config.horizon_months,
            "seed": config.seed,
            "folds": config.folds,
            "out_of_time_cutoff": str(split.cutoff.date()),
            "out_of_time_share": config.out_of_time_share,
            "n_boot": config.n_boot,
            "weighting": config.weighting,
            "models": ",".join(config.models),
            "xgboost_grid": json.dumps(list(config.xgboost_grid)),
            **{f"data_{k}": v for k, v in data_print.items()},
            "training_period_rows": len(split.period),
            "training_period_labelled_rows": int(labelled_rows(split.period).sum()),
            "out_of_time_rows": len(split.test),
            "truth_available": truth_available,
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    split.encoding.catalogue.to_csv(folder / "feature_catalogue.csv", index=False)
    (folder / "data_fingerprint.json").write_text(json.dumps(data_print, indent=1))
    run.artifacts(folder)
    log_dataset(run, split.full, data_print)


DATASET_NAME = "features"


def dataset_reference(data_print: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, digest) of the feature rows a fingerprint describes, as `log_dataset` logged them."""
    digest = str(data_print.get("content_sha256") or "")
    return (DATASET_NAME, digest[:32]) if digest else None  # MLflow keeps at most 36 characters


def log_dataset(run: RunLog, frame: pd.DataFrame, data_print: Mapping[str, Any], context: str = "training") -> None:
    """The dataset lineage of `run`: the feature frame's schema (column names and types), its digest and
    profile from `fingerprint` (counts and dates). Never rows: MLflow's `from_pandas` is given the frame
    with zero rows, and its profile (which would count those zero rows) is replaced by the fingerprint."""
    import mlflow.data
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    name, digest = dataset_reference(data_print) or (DATASET_NAME, "")
    schema_only = mlflow.data.from_pandas(frame.head(0), name=name, digest=digest, targets="label")
    entity = schema_only._to_mlflow_entity()
    lineage = Dataset(name, digest, entity.source_type, entity.source, entity.schema, json.dumps(dict(data_print)))
    run.client.log_inputs(run.run_id, [DatasetInput(lineage, [InputTag(MLFLOW_DATASET_CONTEXT, context)])])


def log_comparison(run: RunLog, metrics: Mapping[str, Mapping[str, float]]) -> None:
    """The model families side by side (`summary_table`) as an MLflow table of `run`, which the UI's
    artifact view and `mlflow.load_table` read."""
    table = summary_table(metrics).rename_axis("family").reset_index()
    run.client.log_table(run.run_id, table, "family_comparison.json")


@contextmanager
def system_metrics(run: RunLog, tracking_uri: str, seconds: float = 5.0) -> Iterator[None]:
    """MLflow's system metrics (CPU, memory, disk, network; GPU when there is one) sampled into `run`
    every `seconds` while the block runs, on this tracking URI (never MLflow's process-wide one)."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run.run_id, sampling_interval=seconds, tracking_uri=tracking_uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
        try:
            # The monitor drops what it sampled since its last report: a last one, so that a run
            # shorter than `seconds` has its system metrics too.
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()
        except Exception as error:  # noqa: BLE001  (a missing sample must not fail the training)
            logger.warning("the last system metrics sample could not be logged: %s", error)


def family_params(result: FamilyResult, learner: Learner, config: TrainConfig) -> dict[str, Any]:
    """The params of one family's run: its grid, what it chose and the validation settings."""
    return {
        "model": result.name,
        "grid": json.dumps(list(learner.grid)),
        "chosen": json.dumps(result.params, sort_keys=True),
        "calibration": json.dumps(list(result.calibration)),
        "folds": config.folds,
        "inner_share": config.inner_share,
        "early_stopping_rounds": config.early_stopping_rounds,
        "max_rounds": config.max_rounds,
    }


def explanation_sample(split: Split, config: TrainConfig) -> np.ndarray:
    """The out-of-time rows (a seeded sample of at most `config.shap_rows`) that the SHAP plots show."""
    rng = np.random.default_rng(config.seed)
    return np.sort(rng.choice(len(split.X_test), size=min(config.shap_rows, len(split.X_test)), replace=False))


def log_family(run: RunLog, result: FamilyResult, learner: Learner, split: Split, config: TrainConfig, out: Path):
    """Log one family's params, metrics and artifacts into its (child) run."""
    run.params(family_params(result, learner, config))
    run.metrics({**result.metrics, "seconds": result.seconds})
    out.mkdir(parents=True, exist_ok=True)
    result.trials.to_csv(out / "grid_search.csv", index=False)
    for name, table in result.tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
    for part, frame, probability, title in (
        ("cv", split.period, result.cv_probability, "grouped CV (out of fold)"),
        ("oot", split.test, result.oot_probability, "out of time"),
    ):
        rows = labelled_rows(frame)
        evaluation.reliability_plot(
            frame["label"].to_numpy(float)[rows],
            probability[rows],
            frame["ipcw_weight"].to_numpy(float)[rows],
            out / f"reliability_{part}.png",
            title=f"{result.name}: {title}",
        )
    if learner.booster:
        rows = explanation_sample(split, config)
        X = split.X_test[rows]
        raw = result.oot_predictor.contributions(X)  # TreeSHAP, plus the linear part's terms where blended
        a, b = result.calibration
        # On the calibrated log-odds: contributions times the Platt slope, the base shifted by its intercept.
        contributions = raw * a
        contributions[:, -1] += b
        importance, _ = explanation_artifacts(contributions, X, split.encoding.catalogue, out, config.seed)
        run.params({"shap_sample_rows": len(rows)})
        run.metrics({f"importance_{k}": float(v) for k, v in importance.items()})
    run.artifacts(out)


FIRST_CHAMPION_WAIT_SECONDS = 30.0


def register_champion_candidate(
    run: RunLog,
    logged: LoggedModel,
    model_name: str,
    tracking_uri: str,
    alias: str,
    lease_url: str | None = None,
) -> tuple[int, bool]:
    """Register the logged model as a new version of `model_name`, set `alias` on it only when the model
    has none yet, and tag the run; the version and whether the alias was set.

    With `lease_url` (the store, as `bip train` passes it) the look and the set happen under the
    registry lease that promotions take, so two first trainings on two machines cannot both set it."""
    from contextlib import nullcontext

    from training import registry
    from training.locks import exclusive

    version = registry.register(logged, model_name, tags={"train_run": run.run_id}, tracking_uri=tracking_uri)
    guard = (
        exclusive(lease_url, "registry", f"first {alias} of {model_name}", FIRST_CHAMPION_WAIT_SECONDS)
        if lease_url is not None
        else nullcontext()
    )
    with guard:
        champion_set = registry.champion_version(model_name, alias=alias, tracking_uri=tracking_uri) is None
        if champion_set:
            registry.set_champion(model_name, version.version, alias=alias, tracking_uri=tracking_uri)
    run.tags({"registered_version": str(version.version), "champion_set": str(champion_set)})
    return int(version.version), champion_set


def record_doubts(run: RunLog, model_name: str, version: int, doubts: list[str], tracking_uri: str) -> None:
    """`evaluation.champion_doubts` of a registered version, as a tag on the version and on the run (where
    MLflow's registry and run pages show them), and as a warning in the log; nothing when none."""
    if not doubts:
        return
    text = "; ".join(doubts)
    run.tags({"champion_doubts": text})
    tracking_client(tracking_uri).set_model_version_tag(model_name, str(version), "doubts", text)
    logger.warning("%s version %s may be too weak to serve: %s", model_name, version, text)


SUMMARY_COLUMNS: dict[str, str] = {
    "cv_roc_auc": "CV AUC",
    "cv_brier": "CV Brier",
    "cv_ece": "CV ECE",
    "oot_roc_auc": "OOT AUC",
    "oot_brier": "OOT Brier",
    "oot_ece": "OOT ECE",
    "cv_truth_roc_auc": "truth AUC",
    "cv_mean_abs_diff_truth": "|p-true|",
    "seconds": "s",
}


def summary_table(metrics: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """One row per model family with the main metrics, short column names (columns no family has
    are left out)."""
    rows = {
        name: {label: values.get(key, np.nan) for key, label in SUMMARY_COLUMNS.items()}
        for name, values in metrics.items()
    }
    return pd.DataFrame(rows).T.dropna(axis=1, how="all")
