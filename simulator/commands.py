"""The `bip simulate` command: a BIP-like dataset in the data contract, with its truth beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from features.commands import FormatOption, TableFormat


def simulate(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Folder to write the dataset to (created).")],
    citizens: Annotated[int, typer.Option(min=1, help="Number of citizens to simulate.")] = 4000,
    seed: Annotated[int, typer.Option(min=0, help="Random seed; the same seed gives the same dataset.")] = 2013,
    format: FormatOption = TableFormat.csv,
    config: Annotated[
        Path | None, typer.Option(help="Scenario YAML overriding the default planted parameters.")
    ] = None,
    extracts: Annotated[
        bool, typer.Option(help="Write consecutive quarterly extracts (OUT/extract_DATE/) as exports would arrive.")
    ] = False,
) -> None:
    """Simulate a BIP-like dataset in the data contract, with the true probabilities beside it."""
    from bip.console import progress
    from simulator.simulation import load_scenario, simulate_to_folder

    scenario = load_scenario(config)
    with progress(ctx) as shown:
        summary = simulate_to_folder(
            out, scenario, citizens=citizens, seed=seed, fmt=format.value, extracts=extracts, progress=shown
        )
    typer.echo(summary)


COMMANDS = [simulate]
