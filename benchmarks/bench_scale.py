"""Wall time, CPU and peak memory of one `bip` command at scale (issue #15: `bip train` at 100x BIP).

Runs the command as a child process with a fresh BIP_HOME (its own SQLite tracking store and
registry), samples the resident memory of the whole process tree (the command and every process it
starts, such as Dask's workers) twice a second, and appends a markdown section:

    .venv/bin/bip simulate --out /tmp/scale/bip-400000 --citizens 400000 --format parquet
    nice -n 5 .venv/bin/python benchmarks/bench_scale.py --write benchmarks/RESULTS-scale.md -- \\
        train --data /tmp/scale/bip-400000 --dask local

Memory is reported as the peak of the tree's sum (what the machine must hold) and the peak of its
largest process. CPU is the child's and its reaped descendants' user + system time. The machine may
be shared: the load average before and after is written beside the result.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

BIP = Path(sys.executable).with_name("bip")


def machine() -> str:
    lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "?")
    gib = psutil.virtual_memory().total / 2**30
    return f"{name}, {os.cpu_count()} cores, {gib:.0f} GiB, Python {platform.python_version()}"


def tree_rss(root: psutil.Process) -> tuple[int, int]:
    """Resident bytes of `root` and its descendants: their sum and the largest one."""
    sizes = []
    for process in [root, *root.children(recursive=True)]:
        try:
            sizes.append(process.memory_info().rss)
        except psutil.Error:  # exited between listing and reading
            continue
    return sum(sizes), max(sizes, default=0)


def run_sampled(command: list[str], env: dict[str, str], log: Path, every: float = 0.5) -> dict[str, float]:
    """Run `command` to the end; its exit code, wall and CPU seconds and peak memory (GiB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        root = psutil.Process(child.pid)
        peak_sum = peak_one = 0
        while child.poll() is None:
            try:
                total, largest = tree_rss(root)
            except psutil.NoSuchProcess:
                break
            peak_sum, peak_one = max(peak_sum, total), max(peak_one, largest)
            time.sleep(every)
        code = child.wait()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "exit": code,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_sum_gib": peak_sum / 2**30,
        "peak_one_gib": peak_one / 2**30,
    }


def section(args: list[str], result: dict[str, float], load: tuple[float, float], started: str, tail: str) -> str:
    command = "bip " + shlex.join(args)
    return "\n".join(
        [
            f"## {started[:10]}: `{command}`",
            "",
            f"Started {started}. Machine: {machine()}. Load average (1 min) {load[0]:.1f} before, {load[1]:.1f} after.",
            "",
            "| exit | wall s | wall min | CPU s | CPU / wall | peak GiB, whole tree | peak GiB, largest process |",
            "|---|---|---|---|---|---|---|",
            f"| {result['exit']} | {result['wall_s']:.0f} | {result['wall_s'] / 60:.1f} | {result['cpu_s']:.0f} "
            f"| {result['cpu_s'] / result['wall_s']:.2f} | {result['peak_sum_gib']:.2f} "
            f"| {result['peak_one_gib']:.2f} |",
            "",
            "Last lines of its output (Dask's own log lines left out):",
            "",
            "```",
            tail,
            "```",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", type=Path, help="Append the result as a markdown section to this file.")
    parser.add_argument("--home", type=Path, help="BIP_HOME for the command (default: a new temporary folder).")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="The bip command and its options, after `--`.")
    args = parser.parse_args()
    bip_args = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not bip_args:
        parser.error("give the bip command after `--`, e.g. -- train --data DIR --dask local")
    home = args.home or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BIP_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}
    env.setdefault("OMP_NUM_THREADS", "1")
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()[0]
    log = home / "command.log"
    result = run_sampled([str(BIP), *bip_args], env, log)
    own_lines = [line for line in log.read_text(errors="replace").splitlines() if "distributed." not in line]
    tail = "\n".join(own_lines[-8:])  # bip's own lines, not Dask's scheduler and worker logs
    text = section(bip_args, result, (load_before, os.getloadavg()[0]), started, tail)
    print(text, flush=True)
    if args.write:
        with args.write.open("a") as out:
            out.write("\n" + text)
    sys.exit(0 if result["exit"] == 0 else 1)


if __name__ == "__main__":
    main()
