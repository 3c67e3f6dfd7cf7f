"""The `bip` commands of the training stage: train, predict, evaluate."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from bip.console import progress
from bip.files import output_file, written_whole
from bip.settings import load_settings
from features.commands import DaskOption, DataOption, PartitionOption, load_dataset, partition_source

ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="Model URI; default models:/<model name>@<alias> from the settings (the champion)."),
]


class Weighting(StrEnum):
    """How censored follow-up is weighted (training.data.WEIGHTINGS), as a choice for `--help`."""

    dropout = "dropout"
    pooled = "pooled"


TruthOption = Annotated[
    Path | None,
    typer.Option(
        "--truth",
        help="The simulator's truth folder (with true_probabilities.csv), to compare the predictions with "
        "the true chances; evaluation only.",
    ),
]


def truth_of_folder(truth: Path | None):
    """The true probabilities in a truth folder, None without `--truth`; a clear error when it lacks them."""
    from bip.errors import UserError
    from training.evaluation import read_truth

    if truth is None:
        return None
    path = Path(truth) / "true_probabilities.csv"
    found = read_truth(path)
    if found is None:
        raise UserError(f"--truth {truth}: no true_probabilities.csv with a true_probability column there")
    return found


def train(
    ctx: typer.Context,
    data: DataOption = None,
    horizon_months: Annotated[
        int | None, typer.Option(min=1, max=60, help="Label horizon in months (default from settings).")
    ] = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment (default from settings).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of folds, subsampling and bootstrap.")] = 2013,
    n_jobs: Annotated[
        int, typer.Option(help="Threads for the boosters (1 is fastest on a shared 2-core machine).")
    ] = 1,
    n_boot: Annotated[int, typer.Option(min=1, help="Bootstrap replicates (over citizens) per metric interval.")] = 200,
    dask: DaskOption = None,
    partition_citizens: PartitionOption = 20_000,
    truth: TruthOption = None,
    weighting: Annotated[
        Weighting,
        typer.Option(help="Censoring weights: by dropout over follow-up (dropout) or build_features' pooled ones."),
    ] = Weighting.dropout,
) -> None:
    """Train and validate the models (one MLflow run each), register the calibrated monotone XGBoost.

    Exit codes:
    0 registered;
    2 a usage or data error;
    3 a crash (also: the registry cannot be reached; then no alias is set).

    With --dask: the monotone XGBoost only, on xgboost.dask, validated on held-out citizens (docs/dask.md).
    """
    from training.config import TrainConfig
    from training.tracking import summary_table
    from training.train import train as train_models

    settings = load_settings(horizon_months=horizon_months, experiment=experiment)
    config = TrainConfig(
        horizon_months=settings.horizon_months, seed=seed, n_jobs=n_jobs, n_boot=n_boot, weighting=weighting.value
    )
    if dask is not None:
        from features.distributed import dask_client
        from training.distributed import train_on_dask

        if truth is not None:
            raise typer.BadParameter("--truth is read by the in-memory training only, not with --dask")
        settings.home.mkdir(parents=True, exist_ok=True)
        with dask_client(dask) as client:
            done = train_on_dask(
                client,
                partition_source(data),
                settings.tracking_uri,
                settings.artifact_root,
                settings.experiment,
                settings.model_name,
                config,
                alias=settings.model_alias,
                citizens_per_partition=partition_citizens,
                lease_url=settings.store_url,  # the first champion is set under the registry lease
            )
        typer.echo(
            f"registered {settings.model_name} version {done.model_version} (alias {settings.model_alias} "
            f"{'set' if done.champion_set else 'unchanged'}); run {done.run_id} on Dask in {done.seconds:.0f} s; "
            f"out of time AUC {done.metrics['oot_roc_auc']:.3f}, ECE {done.metrics['oot_ece']:.3f}"
        )
        return
    dataset = load_dataset(data)
    true_probabilities = truth_of_folder(truth)
    settings.home.mkdir(parents=True, exist_ok=True)
    with progress(ctx) as shown:
        outcome = train_models(
            dataset,
            settings.tracking_uri,
            settings.artifact_root,
            settings.experiment,
            settings.model_name,
            config,
            truth=true_probabilities,
            alias=settings.model_alias,
            progress=shown,
            lease_url=settings.store_url,  # the first champion is set under the registry lease
        )
    print_summary(summary_table(outcome.metrics))
    alias = (
        f", alias {settings.model_alias} set" if outcome.champion_set else f" (alias {settings.model_alias} unchanged)"
    )
    typer.echo(
        f"registered {settings.model_name} version {outcome.model_version}{alias}; "
        f"run {outcome.parent_run_id} in {outcome.seconds:.0f} s"
    )
    if outcome.doubts:
        typer.echo(doubts_warning(outcome.model_version, outcome.doubts, outcome.champion_set, settings.model_alias))


def doubts_warning(version: int, doubts: tuple[str, ...], champion_set: bool, alias: str) -> str:
    """The warning `bip train` prints when the registered version may be too weak to serve."""
    serving = (
        f" It is now the {alias} because there was none, so the service scores with it: train on more "
        f"rounds or citizens, or `bip promote` a better version."
        if champion_set
        else ""
    )
    return f"warning: version {version} may be too weak to serve: {'; '.join(doubts)}.{serving}"


def print_summary(table) -> None:
    """The summary table on the terminal (rich)."""
    from rich.console import Console
    from rich.table import Table

    shown = Table(title="bip train: grouped CV (out of fold) and out of time (OOT)")
    shown.add_column("model", no_wrap=True)
    for column in table.columns:
        shown.add_column(column, justify="right", no_wrap=True)
    for name, row in table.iterrows():
        shown.add_row(name, *(f"{value:.0f}" if column == "s" else f"{value:.3f}" for column, value in row.items()))
    Console(width=max(Console().width, 130)).print(shown)


def resolved_model(model: str | None):
    """The JobChanceModel at `model` (default: the settings' alias), from the settings' tracking server."""
    from training.model import load_champion, load_model

    settings = load_settings()
    if model is None:
        return load_champion(settings)[0]
    return load_model(model, settings.tracking_uri)


def predict(
    out: Annotated[
        Path, typer.Option(help="CSV file to write the predictions to (with --dask: a new Parquet folder).")
    ],
    data: DataOption = None,
    model: ModelOption = None,
    top: Annotated[int, typer.Option(min=0, help="Indicators with the largest contributions to list per row.")] = 3,
    dask: DaskOption = None,
    partition_citizens: PartitionOption = 20_000,
) -> None:
    """Predict every measurement's chance, with the indicators that contribute most (log-odds).

    With --dask: nightly scoring, one row per citizen (the latest measurement), on the cluster.
    """
    from features.build import build_features
    from features.feature_catalogue import ID_COLUMNS

    if dask is None:
        output_file(out)  # before the work: a folder or a bad path is refused at once
    job_chance = resolved_model(model)
    if dask is not None:
        from features.distributed import dask_client
        from training.distributed import score_citizens

        with dask_client(dask):
            rows = score_citizens(partition_source(data), job_chance, out, top, partition_citizens)
        typer.echo(f"{rows} citizens scored (latest measurement each) into {out} (Parquet folder)")
        return
    frame = build_features(load_dataset(data), horizon_months=job_chance.horizon_months)
    explained = job_chance.explain_frame(frame, k=top).drop(columns=["log_odds"])
    columns = [
        *ID_COLUMNS,
        "probability",
        *(c for c in explained.columns if c.startswith(("indicator_", "contribution_"))),
    ]
    with written_whole(out) as partial:
        explained[columns].to_csv(partial, index=False)
    typer.echo(f"{len(explained)} predictions written to {out}")


def evaluate(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="JSON file to write the metrics to.")],
    data: DataOption = None,
    model: ModelOption = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the bootstrap.")] = 2013,
    n_boot: Annotated[int, typer.Option(min=1, help="Bootstrap replicates (over citizens) per metric interval.")] = 200,
    truth: TruthOption = None,
    learning_curve: Annotated[
        bool,
        typer.Option(
            "--learning-curve",
            help="Instead of evaluating a model: fit the families on nested subsets of the citizens (1/8, 1/4, "
            "1/2, all) and score them on the same test citizens; table in OUT, plot beside it, run in MLflow.",
        ),
    ] = False,
    curve_models: Annotated[
        str, typer.Option(help="Comma-separated model families of --learning-curve (see `bip train`).")
    ] = "plain,xgboost_monotone",
) -> None:
    """Evaluate a model on a labelled dataset: metrics with intervals, fairness gaps, truth if simulated.

    With --learning-curve: how each family's AUC, Brier and ECE grow with the number of citizens.
    """
    output_file(out)  # before the work: a folder or a bad path is refused at once
    from features.build import build_features
    from training.config import TrainConfig
    from training.data import with_weights
    from training.evaluation import evaluation_metrics, truth_of

    if learning_curve:
        evaluate_learning_curve(ctx, out, data, seed, n_boot, truth, tuple(curve_models.split(",")))
        return
    job_chance = resolved_model(model)
    config = TrainConfig(horizon_months=job_chance.horizon_months, seed=seed, n_boot=n_boot)
    frame = build_features(load_dataset(data), horizon_months=job_chance.horizon_months)
    frame = with_weights(frame, config.horizon_months, config.weighting)
    probability = job_chance.probability(job_chance.matrix(frame))
    true_p = truth_of(frame, truth_of_folder(truth))
    with progress(ctx) as shown:
        metrics, fairness = evaluation_metrics(frame, probability, true_p, config, "test", progress=shown)
    report = {
        "model": model or "champion",
        "training_fingerprint": job_chance.training_fingerprint,
        "metrics": metrics,
        "fairness": fairness.to_dict(orient="records"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(out) as partial:
        partial.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    log_to_project_run(metrics, out)
    shown = ", ".join(f"{k} {metrics[f'test_{k}']:.4f}" for k in ("roc_auc", "brier", "ece"))
    typer.echo(f"{shown}; written to {out}")


def evaluate_learning_curve(
    ctx: typer.Context, out: Path, data: Path | None, seed: int, n_boot: int, truth: Path | None, models: tuple
) -> None:
    """`bip evaluate --learning-curve`: the curve as JSON records in `out`, its plot beside it, an MLflow run."""
    from bip.progress import step
    from features.build import build_features
    from training.config import COMPARISON_NAMES, TrainConfig
    from training.data import with_weights
    from training.evaluation import truth_of
    from training.learning_curve import learning_curve, learning_curve_plot, log_learning_curve

    unknown = [m for m in models if m not in COMPARISON_NAMES]
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(COMPARISON_NAMES)}")
    settings = load_settings()
    config = TrainConfig(horizon_months=settings.horizon_months, seed=seed, n_boot=n_boot)
    with progress(ctx) as shown, step(shown, "learning curve"):
        frame = build_features(load_dataset(data), horizon_months=config.horizon_months)
        frame = with_weights(frame, config.horizon_months, config.weighting)
        table = learning_curve(frame, truth_of(frame, truth_of_folder(truth)), config, models)
    out.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(out) as partial:
        partial.write_text(json.dumps({"learning_curve": table.to_dict(orient="records")}, indent=1), encoding="utf-8")
    learning_curve_plot(table).savefig(out.with_suffix(".png"), dpi=110)
    settings.home.mkdir(parents=True, exist_ok=True)
    run_id = log_learning_curve(
        table, settings.tracking_uri, settings.artifact_root, settings.experiment, {"models": ",".join(models)}
    )
    for row in table.itertuples():
        typer.echo(f"{row.model:18s} {row.citizens:6d} citizens: AUC {row.roc_auc:.3f}, Brier {row.brier:.4f}")
    typer.echo(f"written to {out} and {out.with_suffix('.png')}; MLflow run {run_id}")


def log_to_project_run(metrics: dict[str, float], report: Path) -> None:
    """Under `mlflow run` (MLFLOW_RUN_ID set), log the metrics and the report into its run."""
    import os

    from training.tracking import RunLog, tracking_client

    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    client = tracking_client(load_settings().tracking_uri)
    run = RunLog(client, run_id, client.get_run(run_id).info.experiment_id)
    run.metrics(metrics)
    client.log_artifact(run_id, str(report))


def retrain(
    ctx: typer.Context,
    data: DataOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the decision; register and move nothing.")] = False,
    seed: Annotated[int, typer.Option(min=0, help="Seed of folds and bootstrap.")] = 2013,
    n_jobs: Annotated[int, typer.Option(min=1, help="Threads for the booster.")] = 1,
    n_boot: Annotated[int, typer.Option(min=1, help="Bootstrap replicates (over citizens) per metric interval.")] = 200,
    auc_margin: Annotated[
        float | None, typer.Option(min=0, help="Gate: AUC below the champion's by at most this.")
    ] = None,
    max_auc_drop: Annotated[
        float | None, typer.Option(min=0, help="Gate: AUC below the champion's validated AUC by at most this.")
    ] = None,
    max_ece: Annotated[float | None, typer.Option(min=0, help="Gate: calibration error (ECE) at most this.")] = None,
    fairness_margin: Annotated[
        float | None, typer.Option(min=0, help="Gate: growth of a fairness gap between groups at most this.")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the outcome as JSON here.")] = None,
) -> None:
    """After `bip ingest` of a new round: a challenger against the champion on the outcomes that became
    known since, gates, drift report; the champion alias moves only when every gate passes.

    The unit a scheduler runs (cron, a Kubernetes CronJob; docs/deploy.md).

    Exit codes:
    0 promoted or kept (a dry run, or the champion moved meanwhile);
    1 a gate failed (the champion is kept);
    2 a usage or data error (also: another retrain holds the lock);
    3 a crash (also: the store or the registry cannot be reached).
    """
    from training.config import TrainConfig
    from training.lifecycle import Gates

    if json_out is not None:
        output_file(json_out)  # before anything is trained or promoted
    from training.lifecycle import retrain as retrain_models

    settings = load_settings()
    gates = Gates.of(
        settings, auc_margin=auc_margin, max_auc_drop=max_auc_drop, max_ece=max_ece, fairness_margin=fairness_margin
    )
    config = TrainConfig(horizon_months=settings.horizon_months, seed=seed, n_jobs=n_jobs, n_boot=n_boot)
    dataset = load_dataset(data)
    settings.home.mkdir(parents=True, exist_ok=True)
    with progress(ctx) as shown:
        outcome = retrain_models(dataset, settings, config, gates, dry_run=dry_run, progress=shown)
    if json_out is not None:
        with written_whole(json_out) as partial:
            partial.write_text(json.dumps(outcome.summary(), indent=1, default=str), encoding="utf-8")
    print_retrain(outcome)
    if outcome.failed:
        raise typer.Exit(1)


def print_retrain(outcome) -> None:
    """The window, each gate with its reason, the largest drift and the decision."""
    w = outcome.window
    typer.echo(
        f"window: {w['rows']} labelled measurements of {w['citizens']} citizens, measured after {w['after']} "
        f"through {w['until']}; champion version {outcome.champion_version}"
    )
    for gate in outcome.gates:
        typer.echo(f"  {'pass' if gate.passed else 'FAIL'}  {gate.name}: {gate.reason}")
    shifted = outcome.drift[outcome.drift["level"] != "none"] if len(outcome.drift) else outcome.drift
    if len(shifted):
        typer.echo(
            "drift (PSI): " + ", ".join(f"{r.column} {r.psi:.2f} ({r.level})" for r in shifted.head(5).itertuples())
        )
    else:
        typer.echo("drift (PSI): no indicator shifted beyond 0.1")
    version = f"; challenger registered as version {outcome.challenger_version}" if outcome.challenger_version else ""
    typer.echo(f"decision: {outcome.decision}{version}; run {outcome.run_id} in {outcome.seconds:.0f} s")


def promote(
    version: Annotated[int, typer.Option("--version", help="The registered version to make the champion.")],
    reason: Annotated[str, typer.Option(help="Why (kept with the version and in the MLflow run).")] = "by hand",
) -> None:
    """Move the champion alias to a registered version by hand (roll back or forward), logged in MLflow."""
    from training.lifecycle import promote as promote_version

    settings = load_settings()
    done = promote_version(settings, version, reason)
    typer.echo(f"{done.name}@{settings.model_alias}: version {done.from_version} -> {done.to_version}")


COMMANDS = [train, predict, evaluate, retrain, promote]
