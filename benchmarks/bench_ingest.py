"""Validate + ingest at scale: write a BIP register repeated N times as CSV, then time `read_dataset`
(parse + every contract rule) and `ingest` into a fresh SQLite store, in a fresh process per scale.

Run: `.venv/bin/python benchmarks/bench_ingest.py --scales 1 10 100 [--write benchmarks/RESULTS-ingest.md]`
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_features import bip_register, machine, peak_rss_mb, repeated  # noqa: E402

from features.contract import read_dataset, write_dataset  # noqa: E402
from features.store import ingest  # noqa: E402


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def measure(scale: int, seed: int) -> dict[str, float]:
    """Seconds (wall and CPU) and peak memory of validate and of ingest, for one scale."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        write_dataset(repeated(bip_register(seed), scale), folder, fmt="csv")
        before = peak_rss_mb()
        w0, c0 = clock()
        dataset, _ = read_dataset(folder)
        w1, c1 = clock()
        ingest(dataset, f"sqlite:///{tmp}/store.db", source=str(folder))
        w2, c2 = clock()
        rows = sum(len(frame) for frame in dataset.tables().values())
        return {
            "scale": scale,
            "measurements": len(dataset.measurements),
            "rows": rows,
            "validate_wall_s": w1 - w0,
            "validate_cpu_s": c1 - c0,
            "ingest_wall_s": w2 - w1,
            "ingest_cpu_s": c2 - c1,
            "rows_per_s": rows / (w2 - w0),
            "peak_rss_mb": peak_rss_mb(),
            "rss_before_mb": before,
        }


def report(results: list[dict]) -> str:
    lines = [
        f"Machine: {machine()}",
        "",
        "| scale | measurements | rows (all tables) | validate wall s | validate CPU s | ingest wall s | "
        "ingest CPU s | rows/s (wall) | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['scale']}x | {r['measurements']:,} | {r['rows']:,} | {r['validate_wall_s']:.1f} | "
            f"{r['validate_cpu_s']:.1f} | {r['ingest_wall_s']:.1f} | {r['ingest_cpu_s']:.1f} | "
            f"{r['rows_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--seed", type=int, default=2013)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.seed)))
        return
    results = []
    for scale in args.scales:
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(scale), "--seed", str(args.seed)],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    text = report(results)
    print(text)
    if args.write:
        args.write.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
