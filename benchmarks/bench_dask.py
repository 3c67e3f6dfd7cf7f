"""Benchmark of the distributed path: features and training in memory vs on a Dask LocalCluster.

For each size it simulates a Parquet dataset (cached), then runs each step in a fresh process and
reports wall time, CPU time (the process and every worker process it started) and peak memory: of the
one process in memory; of the driver and of the largest worker on Dask, since what the distributed
path bounds is the memory of any one process. Ratios are Dask / in memory.

- features: `read_dataset` + `build_features` vs `feature_frame` written as a Parquet folder
  (`bip features --dask local`).
- train: `training.train.train` with the champion family only (nested 5-fold CV, one grid point) vs
  `train_on_dask` (one held-out split, the same grid point), both into a temporary MLflow store.

    .venv/bin/python benchmarks/bench_dask.py                      # 1x (4,000 citizens) and 10x
    .venv/bin/python benchmarks/bench_dask.py --scales 1 --steps features

The machine may be shared: the load average is printed beside each run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIP_CITIZENS = 4000
GRID_POINT = {"max_depth": 3, "learning_rate": 0.1}
STEPS = ("features", "train")
MODES = ("memory", "dask")


def machine() -> str:
    lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "?")
    return f"{name}, {os.cpu_count()} cores, Python {platform.python_version()}"


def dataset(citizens: int, seed: int, cache: Path) -> Path:
    """A simulated Parquet dataset folder, made once per size and seed."""
    from simulator.simulation import load_scenario, simulate_to_folder

    folder = cache / f"bip-{citizens}-{seed}"
    if not (folder / "outcomes.parquet").exists():
        print(f"simulating {citizens} citizens into {folder} ...", flush=True)
        simulate_to_folder(folder, load_scenario(), citizens=citizens, seed=seed, fmt="parquet")
    return folder


def run_step(step: str, mode: str, data: Path, partitions: int, citizens: int, workdir: Path) -> dict[str, float]:
    """One step in this process (called in a child process by `measure`); what it produced."""
    from training.config import TrainConfig

    config = TrainConfig(models=("xgboost_monotone",), xgboost_grid=(GRID_POINT,), n_boot=50, seed=2013)
    per_partition = max(1, -(-citizens // partitions))
    if mode == "memory":
        from features.build import build_features
        from features.contract import read_dataset

        dataset_, _ = read_dataset(data)
        if step == "features":
            frame = build_features(dataset_)
            frame.to_parquet(workdir / "features.parquet", index=False)
            return {"rows": len(frame)}
        from training.train import train

        outcome = train(dataset_, f"sqlite:///{workdir / 'mlflow.db'}", workdir / "art", "bench", "bench", config)
        return {"oot_roc_auc": outcome.metrics["xgboost_monotone"]["oot_roc_auc"]}
    from features.distributed import ParquetSource, dask_client, feature_frame, write_parquet

    source = ParquetSource(data)
    with dask_client("local") as client:
        if step == "features":
            return {"rows": write_parquet(feature_frame(source, 12, per_partition), workdir / "features")}
        from training.distributed import train_on_dask

        done = train_on_dask(
            client,
            source,
            f"sqlite:///{workdir / 'mlflow.db'}",
            workdir / "art",
            "bench",
            "bench",
            config,
            citizens_per_partition=per_partition,
        )
        return {"oot_roc_auc": done.metrics["oot_roc_auc"]}


def child_main(args: argparse.Namespace) -> None:
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        produced = run_step(args.step, args.mode, Path(args.data), args.partitions, args.citizens, Path(tmp))
    wall = time.perf_counter() - start_wall
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # worker processes, reaped by now
    print(
        "RESULT "
        + json.dumps(
            {
                **produced,
                "wall_s": wall,
                "cpu_s": time.process_time() - start_cpu + children.ru_utime + children.ru_stime,
                "peak_gib": own.ru_maxrss / 2**20,
                "worker_peak_gib": children.ru_maxrss / 2**20,
            }
        ),
        flush=True,
    )


def measure(step: str, mode: str, data: Path, partitions: int, citizens: int) -> dict[str, float]:
    """Run one step in a fresh process: its results with the load average before and after."""
    load_before = os.getloadavg()[0]
    command = [sys.executable, __file__, "--child", step, mode, str(data), str(partitions), str(citizens)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{step} {mode} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(lines[-1][len("RESULT ") :]), "load_before": load_before, "load_after": os.getloadavg()[0]}


def table(results: list[dict]) -> str:
    rows = [
        "| step | size | citizens | mode | wall s | CPU s | peak GiB (driver) | peak GiB (largest worker) "
        "| load before/after | result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        result = f"{r['rows']} rows" if "rows" in r else f"OOT AUC {r['oot_roc_auc']:.3f}"
        worker = f"{r['worker_peak_gib']:.2f}" if r["mode"] == "dask" else "-"
        rows.append(
            f"| {r['step']} | {r['scale']}x | {r['citizens']:,} | {r['mode']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} "
            f"| {r['peak_gib']:.2f} | {worker} | {r['load_before']:.1f} / {r['load_after']:.1f} | {result} |"
        )
    return "\n".join(rows)


def ratios(results: list[dict]) -> str:
    rows = [
        "| step | size | wall Dask/memory | CPU Dask/memory | largest process Dask/memory |",
        "|---|---|---|---|---|",
    ]
    by_key = {(r["step"], r["scale"], r["mode"]): r for r in results}
    for (step, scale, mode), dask in by_key.items():
        memory = by_key.get((step, scale, "memory"))
        if mode != "dask" or memory is None:
            continue
        largest = max(dask["peak_gib"], dask["worker_peak_gib"]) / memory["peak_gib"]
        rows.append(
            f"| {step} | {scale}x | {dask['wall_s'] / memory['wall_s']:.2f} | {dask['cpu_s'] / memory['cpu_s']:.2f} "
            f"| {largest:.2f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10], help="multiples of BIP's 4,000 citizens")
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    parser.add_argument("--partitions", type=int, default=8, help="partitions of citizens on Dask")
    parser.add_argument("--seed", type=int, default=2013)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bip-bench-dask")
    parser.add_argument("--child", nargs=5, metavar=("STEP", "MODE", "DATA", "PARTITIONS", "CITIZENS"))
    args = parser.parse_args()
    if args.child:
        step, mode, data, partitions, citizens = args.child
        child_main(
            argparse.Namespace(step=step, mode=mode, data=data, partitions=int(partitions), citizens=int(citizens))
        )
        return
    print(f"machine: {machine()}; load average {os.getloadavg()}", flush=True)
    results = []
    for scale in args.scales:
        citizens = BIP_CITIZENS * scale
        data = dataset(citizens, args.seed, args.cache)
        for step in args.steps:
            for mode in MODES:
                print(f"{step} {mode} {scale}x ...", flush=True)
                results.append(
                    {"step": step, "scale": scale, "citizens": citizens, "mode": mode}
                    | measure(step, mode, data, args.partitions, citizens)
                )
                print(table(results[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(results))
    print()
    print(ratios(results))


if __name__ == "__main__":
    main()
