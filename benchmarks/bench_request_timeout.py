"""/predict's tail latency against BentoML's request timeout (`traffic.timeout`), in one run.

    apt-get install -y wrk
    .venv/bin/python benchmarks/bench_request_timeout.py --timeouts 60,10 --repeats 2 --seconds 60

BentoML 1.4's timeout middleware schedules one timer per request and never cancels it, so each
request's context (its OpenTelemetry span included) stays alive for the whole timeout. Under steady
load the number of such objects is requests/s x timeout, and each full pass of Python's garbage
collector walks them all while the event loop waits. For each timeout in `--timeouts` (alternating,
`--repeats` times) this starts the real service (`bentoml serve serving.service:JobChance`, the timeout
set through BENTOML_CONFIG_OPTIONS), loads /predict with wrk (`--clients` connections, 2 threads,
`--seconds`) and reports throughput, p50, p90 and p99. It simulates citizens and trains a small champion
the way benchmarks/bench_serving.py does (or reuses `--home` that has one). Loads shorter than the
longer timeout do not reach its steady state: 15 s loads showed no difference (p99 88 and 91 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

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


def one_load(home: Path, timeout: int, token: str, bodies: list[bytes], clients: int, seconds: float) -> dict:
    """Start the service with `timeout`, warm it for 5 s, load it for `seconds`; wrk's figures."""
    env = {**service_env(home), "BENTOML_CONFIG_OPTIONS": f"services.JobChance.traffic.timeout={timeout}"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(BIN / "bentoml"), "serve", "serving.service:JobChance", "--port", str(port), "--host", "127.0.0.1"]
    server = serve(command, env, home / f"bentoml-timeout-{timeout}.log", f"{url}/readyz")
    try:
        wrk(f"{url}/predict", bodies, clients, 5, home / "wrk", token)
        return wrk(f"{url}/predict", bodies, clients, seconds, home / "wrk", token)
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
        "| traffic.timeout s | try | requests | errors | req/s | p50 ms | p90 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['timeout']} | {r['try']} | {r['requests']} | {r['errors']} | {r['throughput_rps']:.0f} | "
            f"{r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['p99_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeouts", default="60,10", help="BentoML request timeouts to compare, in seconds.")
    parser.add_argument("--repeats", type=int, default=2, help="Tries of each timeout (alternating).")
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
    for k in range(args.repeats):
        for timeout in timeouts:
            run = {
                "timeout": timeout,
                "try": k + 1,
                **one_load(home, timeout, token, bodies, args.clients, args.seconds),
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
