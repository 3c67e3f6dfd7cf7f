"""The `bip` commands of the data stage: validate, ingest, export, features (`bip simulate` is the simulator's)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from bip.console import progress
from bip.files import output_file, written_whole
from bip.settings import load_settings


class TableFormat(StrEnum):
    """The contract's table formats (features.contract_reading.FORMATS; kept here so that the command
    line starts without pandas) as a choice: `--help` lists them and a wrong one is refused before any work."""

    csv = "csv"
    parquet = "parquet"


FormatOption = Annotated[TableFormat, typer.Option("--format", help="Table format.")]

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


ReportOption = Annotated[
    Path | None,
    typer.Option(
        "--report",
        metavar="FILE.html|FILE.json",
        help="Also write every problem, grouped by rule with counts and examples, to this file.",
    ),
]
StrictOption = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Refuse harmless variants (a UTF-8 BOM, spaces around a value, 3.0 for 3) instead of "
        "reading them with a warning.",
    ),
]


def validate(
    data: Annotated[Path, typer.Argument(help="Dataset folder to check.")],
    report: ReportOption = None,
    strict: StrictOption = False,
) -> None:
    """Check a dataset against the data contract without storing it (exit 0 when valid)."""
    dataset = checked_dataset(data, report, strict)
    counts = ", ".join(f"{name} {len(frame)}" for name, frame in dataset.tables().items())
    typer.echo(f"valid: {counts}")


def ingest(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="Dataset folder to validate and load.")],
    report: ReportOption = None,
    strict: StrictOption = False,
    allow_older: Annotated[
        bool,
        typer.Option(
            "--allow-older",
            help="Take outcomes whose follow-up ends before the stored one (a correction); refused otherwise, "
            "as the sign of an export older than the store.",
        ),
    ] = False,
) -> None:
    """Validate a dataset and load it into the measurement store in one transaction."""
    from features.store import ingest as ingest_dataset

    dataset = checked_dataset(data, report, strict)
    with progress(ctx) as shown:
        summary = ingest_dataset(dataset, store_url(), source=str(data), progress=shown, allow_older=allow_older)
    typer.echo(str(summary))


def checked_dataset(data: Path, report: Path | None, strict: bool):
    """The dataset of a folder, its warnings printed; with `report`, every problem written there first.
    ContractError (the first problems) when it breaks the contract."""
    if report is None:
        from features.contract import read_dataset

        dataset, warnings = read_dataset(data, strict=strict)
    else:
        from features.validation_report import checked_report_path, validation_report, write_report

        checked_report_path(report)  # before the work: a wrong name is refused at once
        found, dataset = validation_report(data, strict=strict)
        typer.echo(f"report written to {write_report(found, report)}", err=True)
        if dataset is None:
            raise found.error()
        warnings = found.warnings
    for warning in warnings:
        typer.secho(f"warning: {warning}", err=True, fg=typer.colors.YELLOW)
    return dataset


def export(
    out: Annotated[Path, typer.Argument(help="Folder to write the store's dataset to.")],
    format: FormatOption = TableFormat.csv,
) -> None:
    """Write the measurement store back out in the data contract."""
    from features.contract import write_dataset
    from features.store import load

    write_dataset(load(store_url()), out, fmt=format.value)
    typer.echo(f"exported to {out}")


def features(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Parquet file (with --dask: a new Parquet folder) to write the rows to.")],
    data: DataOption = None,
    horizon_months: Annotated[int | None, typer.Option(min=1, max=60, help="Label horizon in months.")] = None,
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
    dataset = load_dataset(data)
    with progress(ctx) as shown:
        frame = build_features(dataset, horizon_months=settings.horizon_months, progress=shown)
    with written_whole(output_file(out)) as partial:
        frame.to_parquet(partial, index=False)
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
