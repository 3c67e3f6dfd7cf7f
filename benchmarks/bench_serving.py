"""Serving benchmark: in-process latency, HTTP load on /predict, `mlflow models serve` under the same
load, and one /predict_batch of many citizens.

    .venv/bin/python benchmarks/bench_serving.py                 # 60 s per load test, 4,000 citizens
    .venv/bin/python benchmarks/bench_serving.py --seconds 15 --write benchmarks/RESULTS-serving.md

It simulates `--citizens` citizens, trains a small champion into a temporary MLflow store with the
training code (or uses `--home` that already has one), starts the real BentoML server (as `bip
serve` does) and `mlflow models serve -m models:/bip-job-chance@champion --env-manager local`, and
loads both with `--clients` concurrent clients from this process. Server and clients share the
machine, so throughput is what is left after the clients' own work.

The MLflow server is given precomputed feature rows (its pyfunc takes a build_features frame): it
does no request validation, feature building or explanation, so the ratio says what those cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from serving.process import stop_process_tree

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL_NAME = "bip-job-chance"


@dataclass
class Load:
    seconds: float
    latencies: list[float]
    errors: int

    def row(self, name: str) -> dict:
        lat = np.array(self.latencies) * 1000 if self.latencies else np.array([np.nan])
        return {
            "target": name,
            "requests": len(self.latencies),
            "errors": self.errors,
            "throughput_rps": len(self.latencies) / self.seconds,
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
        }


def timed(fn, n: int, warmup: int = 10) -> dict:
    """Wall and CPU time (of this process) per call: p50 and p99 in ms. On a shared machine the CPU
    time is the better estimate of what an idle machine would show."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(n):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    wall_ms, cpu_ms = np.array(wall) * 1000, np.array(cpu) * 1000
    return {
        "n": n,
        "p50_ms": float(np.percentile(wall_ms, 50)),
        "p99_ms": float(np.percentile(wall_ms, 99)),
        "cpu_p50_ms": float(np.percentile(cpu_ms, 50)),
    }


def once(fn) -> tuple[object, float, float]:
    """The result of `fn()`, its wall and its CPU seconds."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - start, time.process_time() - start_cpu


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(url: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


async def load(url: str, bodies: list[bytes], clients: int, seconds: float, token: str | None = None) -> Load:
    """`clients` concurrent clients, each posting the next body as soon as its answer is in (with the
    bearer `token`, for bip's service user)."""
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds
    headers = {"content-type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}

    async def client(k: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(timeout=60) as http:
            i = k
            while time.perf_counter() < end:
                start = time.perf_counter()
                try:
                    answer = await http.post(url, content=bodies[i % len(bodies)], headers=headers)
                    ok = answer.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1
                i += clients

    began = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    return Load(time.perf_counter() - began, latencies, errors)


def machine() -> str:
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if line.startswith("Model name")
        )
    except (StopIteration, OSError):
        model = platform.processor()
    return f"{model}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"


def service_token(home: Path) -> str:
    """An API token of a `service` user made for this run in the store under `home`."""
    from serving import accounts

    url = f"sqlite:///{home.resolve() / 'store.db'}"
    name = f"bench-{os.getpid()}"
    accounts.add_user(url, name, accounts.Role.service)
    return accounts.issue_token(url, name)


def ensure_champion(home: Path, dataset, train_citizens: int) -> None:
    from training.config import TrainConfig
    from training.registry import champion_version
    from training.train import train

    uri = f"sqlite:///{home / 'mlflow.db'}"
    if champion_version(MODEL_NAME, tracking_uri=uri) is not None:
        return
    ids = sorted(dataset.citizens["citizen_id"])[:train_citizens]
    from features.dataset import Dataset

    subset = Dataset(
        **{n: t[t["citizen_id"].isin(ids)] if "citizen_id" in t else t for n, t in dataset.tables().items()}
    )
    config = TrainConfig(
        folds=2, n_boot=5, models=("xgboost_monotone",), xgboost_grid=({"max_depth": 4, "learning_rate": 0.1},)
    )
    train(subset, uri, home / "mlartifacts", "bip-job-chance", MODEL_NAME, config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="Duration of each HTTP load test.")
    parser.add_argument("--clients", type=int, default=16, help="Concurrent HTTP clients.")
    parser.add_argument("--citizens", type=int, default=4000, help="Citizens simulated (and sent to /predict_batch).")
    parser.add_argument("--train-citizens", type=int, default=1500, help="Citizens the champion is trained on.")
    parser.add_argument("--workers", type=int, default=1, help="BentoML worker processes.")
    parser.add_argument("--home", type=Path, default=None, help="BIP_HOME with a champion (default: a temp dir).")
    parser.add_argument("--write", type=Path, default=None, help="Write the results as markdown here.")
    parser.add_argument("--skip-mlflow", action="store_true", help="Leave out the `mlflow models serve` comparison.")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import mlflow
    import pydantic_core

    from bip.settings import load_settings
    from features.build import build_features
    from serving.core import Predictor, gc_paused, last_rounds, score, score_records
    from serving.histories import histories_from_dataset, history_dataset
    from serving.schemas import BatchRequest, PredictRequest
    from simulator.simulation import simulate
    from training.model import model_rows

    results: dict = {"machine": machine(), "started": datetime.now(UTC).isoformat(timespec="seconds"), **vars(args)}
    home = args.home or Path(tempfile.mkdtemp(prefix="bench-serving-"))
    home.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{home.resolve() / 'mlflow.db'}"
    env = {**os.environ, "BIP_HOME": str(home.resolve()), "MLFLOW_TRACKING_URI": uri, "BIP_MODEL_POLL_SECONDS": "5"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # mlflow's server runs `uvicorn` from the venv
    if args.workers != 1:
        env["BENTOML_CONFIG_OPTIONS"] = f"services.JobChance.workers={args.workers}"

    t = time.perf_counter()
    dataset = simulate(args.citizens, seed=2013, truth_draws=0).dataset
    histories = histories_from_dataset(dataset)
    print(f"simulated {len(histories)} histories in {time.perf_counter() - t:.0f} s", flush=True)
    ensure_champion(home, dataset, args.train_citizens)
    token = service_token(home)  # the API's callers are `service` users (docs/security.md)
    api = {"content-type": "application/json", "Authorization": f"Bearer {token}"}

    port = free_port()
    server = start(
        [str(BIN / "bentoml"), "serve", "serving.service:JobChance", "--port", str(port), "--host", "127.0.0.1"],
        env,
        home / "bentoml.log",
    )
    mlflow_server = None
    try:
        # In-process: one citizen, stage by stage and end to end (validation + features + model + explanation).
        settings = load_settings(home=home.resolve(), mlflow_tracking_uri=uri)
        predictor = Predictor(settings)
        predictor.start(poll_seconds=0)
        loaded = predictor.loaded
        model = loaded.model
        typical = sorted(histories, key=lambda h: len(h.measurements))[len(histories) // 2]
        body = json.dumps(typical.model_dump(mode="json"))
        request = PredictRequest.model_validate_json(body)
        data = history_dataset([request])
        frame = build_features(data, model.horizon_months)
        X = model.matrix(frame)[last_rounds(frame)]
        n = 300
        results["in_process"] = {
            "rounds_in_history": len(typical.measurements),
            "episodes_in_history": len(typical.interventions),
            "validate_json": timed(lambda: PredictRequest.model_validate_json(body), n),
            "history_dataset": timed(lambda: history_dataset([request]), n),
            "build_features": timed(lambda: build_features(data, model.horizon_months), n),
            "model_matrix": timed(lambda: model.matrix(frame), n),
            "probability": timed(lambda: model.probability(X), n),
            "contributions": timed(lambda: model.contributions(X), n),
            "score": timed(lambda: score(loaded, [request]), n),
            "end_to_end": timed(
                lambda: score(loaded, [PredictRequest.model_validate_json(body)])[0].model_dump_json(), n
            ),
        }
        print(json.dumps(results["in_process"], indent=1), flush=True)

        # The batch path as the service runs it: garbage collector paused, plain records, JSON in Rust.
        batch_histories = histories[: args.citizens]
        batch_body = json.dumps({"citizens": [h.model_dump(mode="json") for h in batch_histories]}).encode()
        with gc_paused:
            batch, parse_s, parse_cpu = once(lambda: BatchRequest.model_validate_json(batch_body))
            records, score_s, score_cpu = once(lambda: score_records(loaded, batch.citizens))
            _, dump_s, dump_cpu = once(lambda: pydantic_core.to_json({"predictions": records}))
        results["batch_in_process"] = {
            "citizens": len(batch.citizens),
            "body_mb": len(batch_body) / 1e6,
            "validate_s": parse_s,
            "validate_cpu_s": parse_cpu,
            "score_s": score_s,
            "score_cpu_s": score_cpu,
            "serialise_s": dump_s,
            "serialise_cpu_s": dump_cpu,
        }
        print(json.dumps(results["batch_in_process"]), flush=True)
        predictor.stop()

        wait_until(f"http://127.0.0.1:{port}/readyz", 180)
        bodies = [json.dumps(h.model_dump(mode="json")).encode() for h in histories[:500]]
        with httpx.Client(timeout=120) as http:
            for b in bodies[:20]:
                http.post(f"http://127.0.0.1:{port}/predict", content=b, headers=api)
            batch_times = []
            for _ in range(3):
                start_ = time.perf_counter()
                answer = http.post(f"http://127.0.0.1:{port}/predict_batch", content=batch_body, headers=api)
                batch_times.append(time.perf_counter() - start_)
                assert answer.status_code == 200, answer.text[:500]
            results["batch_http"] = {
                "citizens": len(batch_histories),
                "seconds": batch_times,
                "best_s": min(batch_times),
                "response_mb": len(answer.content) / 1e6,
            }
        print(json.dumps(results["batch_http"]), flush=True)
        bip = asyncio.run(load(f"http://127.0.0.1:{port}/predict", bodies, args.clients, args.seconds, token)).row(
            "bip /predict"
        )
        results["load"] = [bip]
        print(bip, flush=True)

        if not args.skip_mlflow:
            mlflow_port = free_port()
            mlflow_server = start(
                [
                    str(BIN / "mlflow"),
                    "models",
                    "serve",
                    "-m",
                    f"models:/{MODEL_NAME}@champion",
                    "--env-manager",
                    "local",
                    "-p",
                    str(mlflow_port),
                    "-h",
                    "127.0.0.1",
                ],
                env,
                home / "mlflow-serve.log",
            )
            mlflow.set_tracking_uri(uri)
            frame_all = build_features(history_dataset(histories[:500]), model.horizon_months)
            rows = model_rows(model, frame_all.iloc[last_rounds(frame_all)], rows=500)
            feature_bodies = [
                json.dumps({"dataframe_split": rows.iloc[[k]].to_dict(orient="split")}, default=str).encode()
                for k in range(len(rows))
            ]
            stop_process_tree(server)  # the two servers are measured one at a time
            server = None
            wait_until(f"http://127.0.0.1:{mlflow_port}/ping", 240)
            check = httpx.post(
                f"http://127.0.0.1:{mlflow_port}/invocations",
                content=feature_bodies[0],
                headers={"content-type": "application/json"},
            )
            assert check.status_code == 200, check.text[:500]
            flow = asyncio.run(
                load(f"http://127.0.0.1:{mlflow_port}/invocations", feature_bodies, args.clients, args.seconds)
            ).row("mlflow models serve /invocations (features precomputed)")
            results["load"].append(flow)
            results["throughput_ratio_bip_over_mlflow"] = bip["throughput_rps"] / flow["throughput_rps"]
            print(flow, flush=True)
    finally:
        if server is not None:
            stop_process_tree(server)
        if mlflow_server is not None:
            stop_process_tree(mlflow_server)
    results["load_average_at_end"] = os.getloadavg()[0]
    print(json.dumps(results, indent=1, default=str))
    if args.write:
        args.write.write_text(markdown(results), encoding="utf-8")
        print(f"written to {args.write}")


def markdown(r: dict) -> str:
    ip, b, bh = r["in_process"], r["batch_in_process"], r["batch_http"]
    lines = [
        "# Serving benchmark",
        "",
        f"`benchmarks/bench_serving.py --seconds {r['seconds']:g} --clients {r['clients']} --citizens {r['citizens']}"
        f" --workers {r['workers']}`, {r['started']}.",
        "",
        f"Machine: {r['machine']}; load average {r['load_average_at_end']:.1f} at the end. Server and load",
        "clients share the machine; other jobs ran on it too, so treat absolute numbers as pessimistic.",
        "",
        "## One citizen in-process (features + prediction + explanation)",
        "",
        f"A typical history: {ip['rounds_in_history']} rounds, {ip['episodes_in_history']} intervention episodes.",
        "",
        "| stage | wall p50 ms | wall p99 ms | CPU p50 ms |",
        "|---|---|---|---|",
    ]
    for name in (
        "validate_json",
        "history_dataset",
        "build_features",
        "model_matrix",
        "probability",
        "contributions",
        "score",
        "end_to_end",
    ):
        t = ip[name]
        lines.append(f"| {name} | {t['p50_ms']:.2f} | {t['p99_ms']:.2f} | {t['cpu_p50_ms']:.2f} |")
    lines += [
        "",
        "`score` = history_dataset + build_features + matrix + probability + contributions + factors;",
        "`end_to_end` adds JSON validation and serialisation.",
        "",
        f"## HTTP load: {r['clients']} concurrent clients, {r['seconds']:g} s each",
        "",
        "| target | requests | errors | throughput req/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["load"]:
        lines.append(
            f"| {row['target']} | {row['requests']} | {row['errors']} | {row['throughput_rps']:.1f} |"
            f" {row['p50_ms']:.1f} | {row['p99_ms']:.1f} |"
        )
    if "throughput_ratio_bip_over_mlflow" in r:
        lines += ["", f"Throughput ratio bip / mlflow: {r['throughput_ratio_bip_over_mlflow']:.2f}."]
    lines += [
        "",
        f"## /predict_batch with {bh['citizens']} citizens",
        "",
        f"- HTTP, whole request (client JSON to answer, {b['body_mb']:.1f} MB in, {bh['response_mb']:.1f} MB out):"
        f" best {bh['best_s']:.2f} s of {', '.join(f'{s:.2f}' for s in bh['seconds'])} s.",
        "- In-process, as the service does it (wall / CPU):"
        f" validate {b['validate_s']:.2f} / {b['validate_cpu_s']:.2f} s,"
        f" score (features + model + explanation) {b['score_s']:.2f} / {b['score_cpu_s']:.2f} s,"
        f" serialise {b['serialise_s']:.2f} / {b['serialise_cpu_s']:.2f} s.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
