"""The `bip` commands of the research stage: report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bip.console import progress
from bip.settings import load_settings
from features.commands import DataOption, load_dataset
from training.commands import TruthOption


def report(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Folder to write report.html and each analysis's tables and plots to.")],
    data: DataOption = None,
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment of the analysis runs (default: bip-research).")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the folds, bootstraps and parameter draws.")] = 2013,
    draws: Annotated[int, typer.Option(help="Parameter draws for the intervals of derived figures.")] = 200,
    folds: Annotated[int, typer.Option(help="Citizen-grouped folds of the model comparison.")] = 5,
    n_boot: Annotated[int, typer.Option(min=1, help="Bootstrap replicates (over citizens) per metric interval.")] = 200,
    n_jobs: Annotated[int, typer.Option(help="Threads for the boosters of the model comparison.")] = 2,
    truth: TruthOption = None,
) -> None:
    """Run the research analyses (one MLflow run each) and render them into one HTML report.

    With --truth (a simulation's truth folder), the model comparison and the learning curve also compare
    the predictions with the true probabilities.
    """
    from experiments.analyses import ResearchConfig
    from experiments.report import DEFAULT_EXPERIMENT, build_report
    from training.commands import truth_of_folder
    from training.config import TrainConfig

    settings = load_settings()
    train = TrainConfig(horizon_months=settings.horizon_months, seed=seed, folds=folds, n_boot=n_boot, n_jobs=n_jobs)
    config = ResearchConfig(horizon_months=settings.horizon_months, seed=seed, draws=draws, train=train)
    dataset = load_dataset(data)
    with progress(ctx) as shown:
        path = build_report(
            dataset,
            out,
            settings,
            experiment=experiment or DEFAULT_EXPERIMENT,
            config=config,
            source=str(data) if data is not None else "",
            progress=shown,
            truth=truth_of_folder(truth),
        )
    typer.echo(f"report written to {path}")


COMMANDS = [report]
