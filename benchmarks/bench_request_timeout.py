"""/predict's tail latency against BentoML's request timeout (`traffic.timeout`) and the collector's
full threshold (`BIP_GC_FULL_THRESHOLD`), in one run.

    apt-get install -y wrk
    .venv/bin/python benchmarks/bench_request_timeout.py --timeouts 60,10 --repeats 2 --seconds 60
    .venv/bin/python benchmarks/bench_request_timeout.py --timeouts 10 --gc-full-thresholds 10,1000

BentoML 1.4's timeout middleware schedules one timer per request and never cancels it, so each
request's context (its OpenTelemetry span included) stays alive for the whole timeout. Under steady
load the number of such objects is requests/s x timeout, and each full pass of Python's garbage
collector walks them all while the event loop waits. For each timeout in `--timeouts` (alternating,
`--repeats` times) this starts the real service (`bentoml serve serving.service:JobChance`, the timeout
set through BENTOML_CONFIG_OPTIONS), loads /predict with wrk (`--clients` connections, 2 threads,
`--seconds`) and reports throughput, p50, p90 and p99. It simulates citizens and trains a small champion
the way benchmarks/bench_serving.py does (or reuses `--home` that has one). Loads shorter than the
longer timeout do not reach its steady state: 15 s loads showed no difference (p99 88 and 91 ms).

The same objects make the old generation grow fast enough for a full collection every 2-3 s with
Python's third threshold of 10; `--gc-full-thresholds` compares values of the service's
`BIP_GC_FULL_THRESHOLD` (serving.process.settle_collector), and each run reports the full collections
of the load and their pauses from the service's own `bip_gc_full_collection_seconds` in /metrics.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import httpx
from bench_serving import (  # this folder is on the path when run as a script
    BIN,
    ensure_champion,
    free_port,
    machine,
    serve,
    service_env,
    service_token,
    wrk,
)

from serving.process import stop_process_tree


def full_collections(url: str, token: str) -> tuple[float, float]:
    """The service's full garbage collections so far, and their seconds in all (its /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30).text
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("bip_gc_full_collection_seconds")
    }
    return samples["bip_gc_full_collection_seconds_count"], samples["bip_gc_full_collection_seconds_sum"]


def resident_mb(root: int) -> float:
    """Resident memory of the process tree under `root` (the server and its workers), in MB."""
    import psutil  # a dependency of bentoml

    parent = psutil.Process(root)
    return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)]) / 1e6


def one_load(
    home: Path, timeout: int, full_threshold: int, token: str, bodies: list[bytes], clients: int, seconds: float
) -> dict:
    """Start the service with `timeout` and `full_threshold`, warm it for 5 s, load it for `seconds`;
    wrk's figures and the full collections during the load."""
    env = {
        **service_env(home),
        "BENTOML_CONFIG_OPTIONS": f"services.JobChance.traffic.timeout={timeout}",
        "BIP_GC_FULL_THRESHOLD": str(full_threshold),
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(BIN / "bentoml"), "serve", "serving.service:JobChance", "--port", str(port), "--host", "127.0.0.1"]
    server = serve(command, env, home / f"bentoml-timeout-{timeout}.log", f"{url}/readyz")
    try:
        wrk(f"{url}/predict", bodies, clients, 5, home / "wrk", token)
        count, total = full_collections(url, token)
        result = wrk(f"{url}/predict", bodies, clients, seconds, home / "wrk", token)
        count_after, total_after = full_collections(url, token)
        collections = count_after - count
        result["full_collections"] = int(collections)
        result["full_collection_mean_ms"] = (total_after - total) / collections * 1000 if collections else 0.0
        result["server_rss_mb"] = resident_mb(server.pid)
        return result
    finally:
        stop_process_tree(server)


def markdown(results: dict) -> str:
    lines = [
        "",
        f"## {results['started'][:10]}: /predict against BentoML's request timeout",
        "",
        f"`{results['command']}`, started {results['started']}.",
        "",
        f"Machine: {results['machine']}. wrk and the server share the machine.",
        "",
        "| traffic.timeout s | gc full threshold | try | requests | errors | req/s | p50 ms | p90 ms | p99 ms "
        "| full collections | mean pause ms | server RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['timeout']} | {r['gc_full_threshold']} | {r['try']} | {r['requests']} | {r['errors']} | "
            f"{r['throughput_rps']:.0f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['full_collections']} | {r['full_collection_mean_ms']:.1f} | {r['server_rss_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeouts", default="60,10", help="BentoML request timeouts to compare, in seconds.")
    parser.add_argument(
        "--gc-full-thresholds", default="1000", help="The service's BIP_GC_FULL_THRESHOLD values to compare."
    )
    parser.add_argument("--repeats", type=int, default=2, help="Tries of each combination (alternating).")
    parser.add_argument("--seconds", type=float, default=60, help="Duration of each wrk load.")
    parser.add_argument("--clients", type=int, default=16, help="wrk connections.")
    parser.add_argument("--home", type=Path, default=None, help="BIP_HOME with a champion (default: a temp dir).")
    parser.add_argument("--append", type=Path, default=None, help="Append the results as a markdown section here.")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from serving.histories import histories_from_dataset
    from simulator.simulation import simulate

    home = (args.home or Path(tempfile.mkdtemp(prefix="bench-timeout-"))).resolve()
    (home / "wrk").mkdir(parents=True, exist_ok=True)
    dataset = simulate(2000, seed=2013, truth_draws=0).dataset
    ensure_champion(home, dataset, 1500)
    histories = histories_from_dataset(dataset)[-500:]  # not the training citizens
    bodies = [json.dumps(h.model_dump(mode="json")).encode() for h in histories]
    token = service_token(home)  # one `service` user for every load (its name is this process's)

    results = {
        "machine": machine(),
        "python": platform.python_version(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/bench_request_timeout.py", *sys.argv[1:]]),
        "runs": [],
    }
    timeouts = [int(t) for t in args.timeouts.split(",")]
    thresholds = [int(t) for t in args.gc_full_thresholds.split(",")]
    for k in range(args.repeats):
        for timeout, threshold in itertools.product(timeouts, thresholds):
            run = {
                "timeout": timeout,
                "gc_full_threshold": threshold,
                "try": k + 1,
                **one_load(home, timeout, threshold, token, bodies, args.clients, args.seconds),
            }
            print(json.dumps(run), flush=True)
            results["runs"].append(run)
    text = markdown(results)
    print(text)
    if args.append:
        with args.append.open("a", encoding="utf-8") as out:
            out.write(text)


if __name__ == "__main__":
    main()
