"""Benchmark of `bip train`: time at BIP size (optionally 10x) and the models against the simulator's truth.

For each size it simulates a dataset with true probabilities (or uses `--data`, a folder with
`<data>-truth/` beside it), trains every model family into a temporary MLflow store exactly as
`bip train` does, and reports wall and CPU time, and per family: AUC against the truth's AUC on
the same labels, Brier against the truth's Brier, ECE, mean |pred - true| and mean predicted vs
mean true (over all rows, censored ones included), for grouped CV and out of time. It also times
one request-sized prediction (one row through matrix, probability and contributions).

    .venv/bin/python benchmarks/bench_training.py                        # BIP size, 4,000 citizens
    .venv/bin/python benchmarks/bench_training.py --scales 1 10 --write benchmarks/RESULTS-training.md
    .venv/bin/python benchmarks/bench_training.py --weightings dropout pooled   # compare IPCW weightings

The machine is often shared: the load average is printed beside each time, and CPU time (this
process and its threads) is the figure that does not depend on the neighbours.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import read_dataset
from simulator.simulation import load_scenario, simulate_to_folder, truth_folder
from training.config import LINEAR_SHARES, MODEL_NAMES, TrainConfig
from training.evaluation import read_truth
from training.train import train

TARGETS = {"auc_gap": 0.01, "brier_ratio": 1.03, "ece": 0.02}


@dataclass
class Measured:
    label: str
    rows: int
    citizens: int
    wall_s: float
    cpu_s: float
    load_before: float
    load_after: float
    metrics: dict[str, dict[str, float]]
    latency_ms: tuple[float, float]


def machine() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
        name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "?")
    except FileNotFoundError:
        name = platform.processor() or "?"
    return f"{name}, {os.cpu_count()} cores, Python {platform.python_version()}"


def dataset_with_truth(citizens: int, seed: int, cache: Path) -> Path:
    """A simulated dataset folder with its truth beside it, made once per size and seed."""
    folder = cache / f"bip-{citizens}-{seed}"
    if not (truth_folder(folder) / "true_probabilities.csv").exists():
        print(f"simulating {citizens} citizens with true probabilities into {folder} ...", flush=True)
        simulate_to_folder(folder, load_scenario(), citizens=citizens, seed=seed, fmt="parquet")
    return folder


def request_latency(model, frame: pd.DataFrame, calls: int = 500) -> tuple[float, float]:
    """p50 and p99 (ms) of one row through matrix + probability + contributions."""
    rows = np.random.default_rng(0).integers(0, len(frame), calls)
    times = []
    for k in rows:
        one = frame.iloc[[k]]
        start = time.perf_counter()
        X = model.matrix(one)
        model.probability(X)
        model.contributions(X)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def measure(data: Path, config: TrainConfig, label: str) -> Measured:
    from features.build import build_features

    dataset, _ = read_dataset(data)
    truth = read_truth(truth_folder(data) / "true_probabilities.csv")
    with tempfile.TemporaryDirectory() as home:
        uri = f"sqlite:///{home}/mlflow.db"
        load_before = os.getloadavg()[0]
        wall, cpu = time.perf_counter(), time.process_time()
        outcome = train(dataset, uri, Path(home) / "mlartifacts", "bench", "bench-model", config, truth=truth)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        load_after = os.getloadavg()[0]
    frame = build_features(dataset, horizon_months=config.horizon_months)
    return Measured(
        label,
        len(dataset.measurements),
        len(dataset.citizens),
        wall,
        cpu,
        load_before,
        load_after,
        outcome.metrics,
        request_latency(outcome.model, frame),
    )


def family_rows(result: Measured) -> pd.DataFrame:
    """Per family and split: the figures to hold against the targets."""
    rows = []
    for family, m in result.metrics.items():
        for split in ("cv", "oot"):
            auc, truth_auc = m[f"{split}_roc_auc"], m.get(f"{split}_truth_roc_auc", np.nan)
            brier, truth_brier = m[f"{split}_brier"], m.get(f"{split}_truth_brier", np.nan)
            rows.append(
                {
                    "family": family,
                    "split": split,
                    "AUC": auc,
                    "AUC 95%": f"{m[f'{split}_roc_auc_low']:.3f}-{m[f'{split}_roc_auc_high']:.3f}",
                    "truth AUC": truth_auc,
                    "AUC gap": truth_auc - auc,
                    "Brier": brier,
                    "truth Brier": truth_brier,
                    "Brier/truth": brier / truth_brier,
                    "ECE": m[f"{split}_ece"],
                    "mean abs(p-true)": m.get(f"{split}_mean_abs_diff_truth", np.nan),
                    "mean p": m.get(f"{split}_mean_predicted", np.nan),
                    "mean true": m.get(f"{split}_mean_true", np.nan),
                    "seconds": m.get("seconds", np.nan),
                }
            )
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """A pipe table of `table`, floats to 4 decimals (no tabulate dependency)."""

    def cell(value: object) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def verdicts(table: pd.DataFrame, family: str = "xgboost_monotone") -> list[str]:
    out = []
    for split in ("cv", "oot"):
        row = table[(table["family"] == family) & (table["split"] == split)].iloc[0]
        checks = [
            (
                f"AUC within {TARGETS['auc_gap']} of truth",
                row["AUC gap"] <= TARGETS["auc_gap"],
                f"gap {row['AUC gap']:.3f}",
            ),
            (
                f"Brier within {100 * (TARGETS['brier_ratio'] - 1):.0f}% of truth's",
                row["Brier/truth"] <= TARGETS["brier_ratio"],
                f"{100 * (row['Brier/truth'] - 1):+.1f}%",
            ),
            (f"ECE <= {TARGETS['ece']}", row["ECE"] <= TARGETS["ece"], f"{row['ECE']:.4f}"),
        ]
        for name, ok, value in checks:
            out.append(f"- {family}, {split}: {name}: **{'met' if ok else 'not met'}** ({value})")
    return out


def report(results: list[Measured], command: str) -> str:
    lines = [
        "# Training benchmark",
        "",
        f"Written by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        f"Machine: {machine()}.",
        "",
        "| run | citizens | measurements | wall s | CPU s | load avg before/after | 1-row explain p50/p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.label} | {r.citizens} | {r.rows} | {r.wall_s:.0f} | {r.cpu_s:.0f} | "
            f"{r.load_before:.1f} / {r.load_after:.1f} | {r.latency_ms[0]:.2f} / {r.latency_ms[1]:.2f} |"
        )
    for r in results:
        table = family_rows(r)
        lines += [
            "",
            f"## {r.label}",
            "",
            markdown(table),
            "",
            "Targets:",
            *verdicts(table),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="A simulated dataset folder (its truth beside it); else simulate.")
    parser.add_argument("--citizens", type=int, default=4000, help="Citizens at scale 1 (BIP size).")
    parser.add_argument("--scales", type=int, nargs="+", default=[1], help="Sizes as multiples of --citizens.")
    parser.add_argument("--seed", type=int, default=2013)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--weightings", nargs="+", default=["dropout"], help="IPCW weightings to compare.")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bip-bench")
    parser.add_argument("--write", type=Path, help="Markdown file to write the results to.")
    parser.add_argument(
        "--linear-shares",
        type=float,
        nargs="+",
        default=list(LINEAR_SHARES),
        help="Shares of the champion's linear part to choose from (0: the trees alone).",
    )
    args = parser.parse_args()
    results = []
    for scale in args.scales:
        data = (
            args.data if args.data and scale == 1 else dataset_with_truth(args.citizens * scale, args.seed, args.cache)
        )
        for weighting in args.weightings:
            config = replace(
                TrainConfig(),
                seed=args.seed,
                n_jobs=args.n_jobs,
                n_boot=args.n_boot,
                weighting=weighting,
                models=MODEL_NAMES,
                linear_shares=tuple(args.linear_shares),
            )
            blend = "" if tuple(args.linear_shares) == LINEAR_SHARES else f", linear shares {args.linear_shares}"
            label = f"{scale}x, {weighting} IPCW, n_jobs={args.n_jobs}{blend}"
            print(f"training {label} on {data} ...", flush=True)
            results.append(measure(data, config, label))
            print(f"  {results[-1].wall_s:.0f} s wall, {results[-1].cpu_s:.0f} s CPU", flush=True)
            # Printed as each size ends, so a longer size stopped part-way leaves the shorter one's figures.
            seconds = ", ".join(f"{n} {m['seconds']:.0f} s" for n, m in results[-1].metrics.items())
            peak_so_far = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"  per family: {seconds}; peak RSS so far {peak_so_far:.0f} MiB", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = report(results, "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]))
    text += f"\nPeak RSS of the benchmark process: {peak:.0f} MiB.\n"
    print(text)
    if args.write:
        args.write.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
