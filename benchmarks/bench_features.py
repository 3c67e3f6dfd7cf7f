"""Benchmark of `build_features`: a register at 1x, 10x and 100x BIP size, and one citizen.

BIP size is the simulator's 4,000 citizens (about 27-30k measurements, 35k interventions); larger
sizes repeat that register under new ids, so every citizen's history stays realistic. Each size
runs in its own process, so that its peak RSS is its own. The single-citizen figure is the latency
of a serving request: one citizen with about 8 measurements and 10 interventions.

    .venv/bin/python benchmarks/bench_features.py --scales 1 10 100 --write benchmarks/RESULTS-features.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.build import build_features
from features.dataset import Dataset
from simulator.simulation import simulate

ID_COLUMNS = {"citizen_id", "measurement_id"}


def bip_register(seed: int) -> Dataset:
    """A BIP-size register from the simulator (no truth draws: only the dataset is needed)."""
    return simulate(citizens=4000, seed=seed, truth_draws=0).dataset


def repeated(dataset: Dataset, times: int) -> Dataset:
    """`dataset` repeated `times` times, citizens and measurements under new ids per copy."""
    if times == 1:
        return dataset
    tables = {}
    for name, frame in dataset.tables().items():
        if name == "caseworkers":
            tables[name] = frame
            continue
        copies = []
        for k in range(times):
            copy = frame.copy()
            for column in ID_COLUMNS & set(frame.columns):
                copy[column] = copy[column] + f"x{k}"
            copies.append(copy)
        tables[name] = pd.concat(copies, ignore_index=True)
    return Dataset(**tables)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure_register(scale: int, seed: int) -> dict[str, float]:
    """Build features for the register at `scale` once; wall and CPU seconds, rows/s, memory."""
    dataset = repeated(bip_register(seed), scale)
    before = current_rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    frame = build_features(dataset)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "scale": scale,
        "citizens": len(dataset.citizens),
        "measurements": len(frame),
        "interventions": len(dataset.interventions),
        "wall_s": wall,
        "cpu_s": cpu,
        "rows_per_s": len(frame) / wall,
        "rss_before_build_mb": before,
        "peak_rss_mb": peak_rss_mb(),
        "frame_mb": frame.memory_usage(deep=True).sum() / 2**20,
    }


def one_citizen(dataset: Dataset, citizen_id: str) -> Dataset:
    """A serving request's Dataset: one citizen's rows and the caseworker table."""
    tables = {}
    for name, frame in dataset.tables().items():
        tables[name] = frame if name == "caseworkers" else frame[frame["citizen_id"] == citizen_id]
    return Dataset(**tables)


def measure_single(seed: int, citizens: int, repeats: int) -> dict[str, float]:
    """Latency of build_features for citizens with 7-9 measurements and 8-12 interventions."""
    dataset = bip_register(seed)
    rounds = dataset.measurements["citizen_id"].value_counts()
    episodes = dataset.interventions["citizen_id"].value_counts()
    both = pd.concat([rounds.rename("rounds"), episodes.rename("episodes")], axis=1).fillna(0)
    chosen = both[both["rounds"].between(7, 9) & both["episodes"].between(8, 12)].index[:citizens]
    requests = [one_citizen(dataset, c) for c in chosen]
    for request in requests:  # warm-up: imports, caches
        build_features(request)
    wall, cpu = [], []
    for _ in range(repeats):
        for request in requests:
            w, c = time.perf_counter(), time.process_time()
            build_features(request)
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
    wall_ms, cpu_ms = np.array(wall) * 1e3, np.array(cpu) * 1e3
    return {
        "citizens": len(requests),
        "calls": len(wall),
        "mean_rounds": float(both.loc[chosen, "rounds"].mean()),
        "mean_episodes": float(both.loc[chosen, "episodes"].mean()),
        "wall_p50_ms": float(np.percentile(wall_ms, 50)),
        "wall_p90_ms": float(np.percentile(wall_ms, 90)),
        "cpu_p50_ms": float(np.percentile(cpu_ms, 50)),
        "wall_min_ms": float(wall_ms.min()),
    }


def in_subprocess(args: list[str]) -> dict:
    """Run this script with `args` in a fresh process and return the JSON it prints."""
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    """CPU model, core count and load average of the machine the figures come from."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    model = names[0] if names else platform.processor()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    versions = f"Python {platform.python_version()}, pandas {pd.__version__}, numpy {np.__version__}"
    return f"{model}, {os.cpu_count()} cores, {versions}; load average (1, 5, 15 min) {load}"


def report(registers: list[dict], single: dict | None) -> str:
    """The figures as a markdown page."""
    lines = [
        "| scale | citizens | measurements | interventions | build wall s | build CPU s | rows/s | "
        "RSS before build MiB | peak RSS MiB | output MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in registers:
        lines.append(
            f"| {r['scale']}x | {r['citizens']:,} | {r['measurements']:,} | {r['interventions']:,} | "
            f"{r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['rows_per_s']:,.0f} | {r['rss_before_build_mb']:,.0f} | "
            f"{r['peak_rss_mb']:,.0f} | {r['frame_mb']:,.0f} |"
        )
    if single:
        lines += [
            "",
            f"Single citizen (serving path): {single['calls']} calls over {single['citizens']} citizens with "
            f"{single['mean_rounds']:.1f} measurements and {single['mean_episodes']:.1f} interventions on average: "
            f"wall p50 {single['wall_p50_ms']:.1f} ms, p90 {single['wall_p90_ms']:.1f} ms, "
            f"min {single['wall_min_ms']:.1f} ms; CPU p50 {single['cpu_p50_ms']:.1f} ms.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="*", default=[1, 10, 100], help="register sizes, x BIP")
    parser.add_argument("--seed", type=int, default=2013)
    parser.add_argument("--single-citizens", type=int, default=100, help="citizens timed one by one")
    parser.add_argument("--single-repeats", type=int, default=3, help="calls per such citizen")
    parser.add_argument("--write", type=Path, help="also write the markdown to this file")
    parser.add_argument("--child", choices=["register", "single"], help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "register":
        print(json.dumps(measure_register(args.scale, args.seed)))
        return
    if args.child == "single":
        print(json.dumps(measure_single(args.seed, args.single_citizens, args.single_repeats)))
        return
    common = ["--seed", str(args.seed)]
    single = in_subprocess(
        ["--child", "single", "--single-citizens", str(args.single_citizens)]
        + ["--single-repeats", str(args.single_repeats), *common]
    )
    registers = []
    for scale in args.scales:
        registers.append(in_subprocess(["--child", "register", "--scale", str(scale), *common]))
        print(report(registers[-1:], None), flush=True)
    text = f"Machine: {machine()}\n\n" + report(registers, single)
    print(text)
    if args.write:
        args.write.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
