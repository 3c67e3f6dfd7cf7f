"""The `bip` commands of the data stage: validate, ingest, export, features (`bip simulate` is the simulator's)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bip.settings import load_settings

DataOption = Annotated[
    Path | None,
    typer.Option("--data", help="A dataset folder in the data contract; the measurement store when left out."),
]
DaskOption = Annotated[
    str | None,
    typer.Option(
        "--dask",
        metavar="ADDRESS|local",
        help="Run on Dask: a scheduler address (tcp://HOST:8786) or `local` for a cluster on this machine; "
        "--data must then hold Parquet tables (docs/dask.md).",
    ),
]
PartitionOption = Annotated[
    int, typer.Option(min=1, help="With --dask: citizens per partition (a citizen's history is never split).")
]


def validate(data: Annotated[Path, typer.Argument(help="Dataset folder to check.")]) -> None:
    """Check a dataset against the data contract without storing it (exit 0 when valid)."""
    from features.contract import read_dataset

    dataset, warnings = read_dataset(data)
    for warning in warnings:
        typer.secho(f"warning: {warning}", err=True, fg=typer.colors.YELLOW)
    counts = ", ".join(f"{name} {len(frame)}" for name, frame in dataset.tables().items())
    typer.echo(f"valid: {counts}")


def ingest(data: Annotated[Path, typer.Argument(help="Dataset folder to validate and load.")]) -> None:
    """Validate a dataset and load it into the measurement store in one transaction."""
    from features.contract import read_dataset
    from features.store import ingest as ingest_dataset

    dataset, warnings = read_dataset(data)
    for warning in warnings:
        typer.secho(f"warning: {warning}", err=True, fg=typer.colors.YELLOW)
    summary = ingest_dataset(dataset, store_url(), source=str(data))
    typer.echo(str(summary))


def export(
    out: Annotated[Path, typer.Argument(help="Folder to write the store's dataset to.")],
    format: Annotated[str, typer.Option("--format", help="Table format: csv or parquet.")] = "csv",
) -> None:
    """Write the measurement store back out in the data contract."""
    from features.contract import write_dataset
    from features.store import load

    write_dataset(load(store_url()), out, fmt=format)
    typer.echo(f"exported to {out}")


def features(
    out: Annotated[Path, typer.Option(help="Parquet file (with --dask: a new Parquet folder) to write the rows to.")],
    data: DataOption = None,
    horizon_months: Annotated[int | None, typer.Option(help="Label horizon in months.")] = None,
    dask: DaskOption = None,
    partition_citizens: PartitionOption = 20_000,
) -> None:
    """Build one feature row per measurement (point-in-time correct), with labels."""
    from features.build import build_features

    settings = load_settings(horizon_months=horizon_months)
    if dask is not None:
        from features.distributed import dask_client, feature_frame, write_parquet

        with dask_client(dask):
            rows = write_parquet(
                feature_frame(partition_source(data), settings.horizon_months, partition_citizens), out
            )
        typer.echo(f"{rows} feature rows written to {out} (Parquet folder, one file per partition)")
        return
    frame = build_features(load_dataset(data), horizon_months=settings.horizon_months)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    typer.echo(f"{len(frame)} feature rows written to {out}")


def load_dataset(data: Path | None):
    """A dataset from a contract folder, or from the measurement store when no folder is given."""
    from features.contract import read_dataset
    from features.store import load

    if data is not None:
        dataset, warnings = read_dataset(data)
        for warning in warnings:
            typer.secho(f"warning: {warning}", err=True, fg=typer.colors.YELLOW)
        return dataset
    return load(store_url())


def partition_source(data: Path | None):
    """Where the distributed path reads its partitions: the measurement store, or a Parquet folder."""
    from features.distributed import StoreSource, parquet_source

    return StoreSource(store_url()) if data is None else parquet_source(data)


def store_url() -> str:
    """The measurement store's URL, with BIP_HOME created so that the default SQLite file can be."""
    settings = load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    return settings.store_url


COMMANDS = [validate, ingest, export, features]
