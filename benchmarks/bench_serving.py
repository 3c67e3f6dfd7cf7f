"""Serving benchmark (issue #15's targets): one citizen in-process, /predict under load against a bare
BentoML service and `mlflow models serve`, /predict_batch of 4,000 citizens, the caseworker page.

    apt-get install -y wrk                                       # the load generator (setup, not tests)
    .venv/bin/python benchmarks/bench_serving.py                 # 60 s per load test, 4,000 citizens
    .venv/bin/python benchmarks/bench_serving.py --seconds 20 --append benchmarks/RESULTS-serving.md

It simulates `--citizens` citizens, trains a small champion into a temporary MLflow store with the
training code (or uses `--home` that already has one) and ingests `--page-citizens` of them into the
store. In-process it times each stage of the fast path (history -> array tables -> features ->
matrix -> XGBoost -> explanation) by CPU time, and, in the same process, the frame path it replaced
(history -> Dataset -> build_features -> matrix). Over HTTP, `wrk` (`--clients` connections, 2
threads) loads, one at a time: the real BentoML server (as `bip serve` runs it) on /predict with a
service user's token; the bare service of benchmarks/bare_service.py (only inplace_predict and the
contributions on a prebuilt row, the floor); and `mlflow models serve -m models:/bip-job-chance@champion
--env-manager local`, given precomputed feature rows (no validation, features or explanation).
wrk and the servers share the machine, so throughputs are what is left after wrk's own work; the
ratios are measured in one run. The caseworker page is timed by one sequential client with a
caseworker's session cookie.

(About 560 lines: one script so that every figure in a run comes from the same machine state; the bare
service it compares with is benchmarks/bare_service.py.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from serving.process import stop_process_tree

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL_NAME = "bip-job-chance"


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


WRK_SCRIPT = r"""
local bodies, i = {}, 0
for line in io.lines(os.getenv("WRK_BODIES")) do bodies[#bodies + 1] = line end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("WRK_TOKEN")
if token and token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end
request = function()
  i = i + 1
  return wrk.format(nil, nil, nil, bodies[(i % #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_JSON {\"requests\": %d, \"duration_s\": %f, \"connect\": %d, \"read\": %d, \"write\": %d, " ..
    "\"status\": %d, \"timeout\": %d, \"p50_ms\": %f, \"p90_ms\": %f, \"p99_ms\": %f}\n",
    summary.requests, summary.duration / 1e6, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3))
end
"""


def wrk(url: str, bodies: list[bytes], clients: int, seconds: float, workdir: Path, token: str = "") -> dict:
    """`wrk` with `clients` connections on 2 threads for `seconds`, posting `bodies` in turn (JSON, one a
    line); requests, errors (any non-2xx answer, timeout or socket error), throughput and latency."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    script, lines = workdir / "post.lua", workdir / f"bodies-{abs(hash(url))}.jsonl"
    script.write_text(WRK_SCRIPT, encoding="utf-8")
    lines.write_bytes(b"\n".join(b.replace(b"\n", b" ") for b in bodies) + b"\n")
    command = [
        "wrk",
        f"-t{min(2, clients)}",
        f"-c{clients}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    env = {**os.environ, "WRK_BODIES": str(lines), "WRK_TOKEN": token}
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    data = json.loads(next(line for line in out.splitlines() if line.startswith("WRK_JSON "))[9:])
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "requests": data["requests"],
        "errors": errors,
        "throughput_rps": data["requests"] / data["duration_s"],
        **{k: data[k] for k in ("p50_ms", "p90_ms", "p99_ms")},
        "command": " ".join(command[:-3] + ["post.lua", url.rsplit("/", 1)[-1]]),
    }


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


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds used so far by the live processes of the tree under `root` (Linux /proc)."""
    parent, used = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parent[pid], used[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, up in parent.items() if up in tree} - tree
        tree, grew = tree | more, bool(more)
    return sum(used.get(pid, 0.0) for pid in tree)


def server_load(
    server_pid: int, url: str, bodies: list[bytes], clients: int, seconds: float, workdir: Path, token: str = ""
) -> dict:
    """`wrk` against `url`, with the server's CPU milliseconds per request (its whole process tree)."""
    before = cpu_seconds(server_pid)
    result = wrk(url, bodies, clients, seconds, workdir, token)
    result["server_cpu_ms_per_request"] = (cpu_seconds(server_pid) - before) * 1000 / max(result["requests"], 1)
    return result


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
    # A blended champion (half its log-odds from the linear part), so that serving pays for both parts.
    config = TrainConfig(
        folds=2,
        n_boot=5,
        models=("xgboost_monotone",),
        xgboost_grid=({"max_depth": 4, "learning_rate": 0.1},),
        linear_shares=(0.5,),
    )
    train(subset, uri, home / "mlartifacts", "bip-job-chance", MODEL_NAME, config)


def batch_run(batch_body: bytes, loaded) -> dict:
    """One /predict_batch as the service runs it, in-process: garbage collector paused, plain records,
    JSON in Rust; wall and CPU seconds of validation, scoring and serialisation."""
    import pydantic_core

    from serving.core import gc_paused, score_records
    from serving.schemas import BatchRequest

    with gc_paused:
        batch, parse_s, parse_cpu = once(lambda: BatchRequest.model_validate_json(batch_body))
        records, score_s, score_cpu = once(lambda: score_records(loaded, batch.citizens))
        _, dump_s, dump_cpu = once(lambda: pydantic_core.to_json({"predictions": records}))
    return {
        "validate_s": parse_s,
        "validate_cpu_s": parse_cpu,
        "score_s": score_s,
        "score_cpu_s": score_cpu,
        "serialise_s": dump_s,
        "serialise_cpu_s": dump_cpu,
    }


def subset(dataset, ids):
    """The tables of `dataset` restricted to the citizens `ids` (caseworkers kept whole)."""
    from features.dataset import Dataset

    keep = set(ids)
    return Dataset(
        **{n: t[t["citizen_id"].isin(keep)] if "citizen_id" in t else t for n, t in dataset.tables().items()}
    )


def service_env(home: Path) -> dict[str, str]:
    """The environment of the servers a benchmark starts: bip's home and tracking store under `home`."""
    env = {
        **os.environ,
        "BIP_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "BIP_MODEL_POLL_SECONDS": "5",
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # mlflow's server runs `uvicorn` from the venv
    return env


def serve(command: list[str], env: dict, log: Path, ready: str, timeout: float = 240) -> subprocess.Popen:
    process = start(command, env, log)
    try:
        wait_until(ready, timeout)
    except RuntimeError:
        stop_process_tree(process)
        raise
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="Duration of each wrk load test.")
    parser.add_argument("--clients", type=int, default=16, help="wrk connections.")
    parser.add_argument("--citizens", type=int, default=4000, help="Citizens simulated (and sent to /predict_batch).")
    parser.add_argument("--train-citizens", type=int, default=1500, help="Citizens the champion is trained on.")
    parser.add_argument("--page-citizens", type=int, default=300, help="Citizens ingested for the page.")
    parser.add_argument("--workers", type=int, default=1, help="BentoML worker processes of bip.")
    parser.add_argument("--home", type=Path, default=None, help="BIP_HOME with a champion (default: a temp dir).")
    parser.add_argument("--append", type=Path, default=None, help="Append the results as a markdown section here.")
    parser.add_argument("--skip-mlflow", action="store_true", help="Leave out the `mlflow models serve` comparison.")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import mlflow

    from bip.settings import load_settings
    from features import store
    from features.build import build_features, feature_arrays
    from serving import accounts
    from serving.access import Sessions, session_key
    from serving.core import Predictor, score_records
    from serving.histories import histories_from_dataset, history_dataset, history_tables
    from serving.schemas import Prediction, PredictRequest
    from simulator.simulation import simulate
    from training.model import model_rows

    results: dict = {
        "machine": machine(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/bench_serving.py", *sys.argv[1:]]),
        **{k: v for k, v in vars(args).items() if k not in ("home", "append")},
    }
    home = (args.home or Path(tempfile.mkdtemp(prefix="bench-serving-"))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{home / 'mlflow.db'}"
    store_url = f"sqlite:///{home / 'store.db'}"
    env = service_env(home)
    if args.workers != 1:
        env["BENTOML_CONFIG_OPTIONS"] = f"services.JobChance.workers={args.workers}"

    t = time.perf_counter()
    dataset = simulate(args.citizens, seed=2013, truth_draws=0).dataset
    histories = histories_from_dataset(dataset)
    print(f"simulated {len(histories)} histories in {time.perf_counter() - t:.0f} s", flush=True)
    ensure_champion(home, dataset, args.train_citizens)
    # Not the training citizens, and only citizens with a measurement (a page of one without answers 404s).
    page_ids = sorted(h.citizen.citizen_id for h in histories)[-args.page_citizens :]
    if not store.citizen_ids(store_url, "", 1):
        store.ingest(subset(dataset, page_ids), store_url, source="bench_serving")
    token = service_token(home)  # the API's callers are `service` users (docs/security.md)
    api = {"content-type": "application/json", "Authorization": f"Bearer {token}"}

    # In-process: one citizen, stage by stage, the fast path and (same process) the frame path it replaced.
    settings = load_settings(home=home, mlflow_tracking_uri=uri)
    predictor = Predictor(settings)
    predictor.start(poll_seconds=0)
    loaded = predictor.loaded
    model = loaded.model
    typical = sorted(histories, key=lambda h: len(h.measurements))[len(histories) // 2]
    body = json.dumps(typical.model_dump(mode="json"))
    request = PredictRequest.model_validate_json(body)
    tables = history_tables([request])
    features = feature_arrays(tables, last_only=True)  # as serving builds them: the last round only
    last = features.last_rounds()
    X = model.matrix_of(features, last)
    data = history_dataset([request])
    frame = build_features(data, model.horizon_months)
    n = 500
    stages = {
        "validate_json": lambda: PredictRequest.model_validate_json(body),
        "history_tables": lambda: history_tables([request]),
        "feature_arrays": lambda: feature_arrays(tables, last_only=True),
        "matrix_of": lambda: model.matrix_of(features, last),
        "probability": lambda: model.probability(X),
        "contributions": lambda: model.contributions(X),
        "score_records": lambda: score_records(loaded, [request]),
        "end_to_end": lambda: Prediction.model_validate(
            score_records(loaded, [PredictRequest.model_validate_json(body)])[0]
        ).model_dump_json(),
        "frame path: history_dataset": lambda: history_dataset([request]),
        "frame path: build_features": lambda: build_features(data, model.horizon_months),
        "frame path: matrix(frame)": lambda: model.matrix(frame),
    }
    results["in_process"] = {
        "rounds_in_history": len(typical.measurements),
        "episodes_in_history": len(typical.interventions),
        **{name: timed(fn, n) for name, fn in stages.items()},
    }
    ip = results["in_process"]
    old = sum(
        ip[k]["cpu_p50_ms"]
        for k in ("frame path: history_dataset", "frame path: build_features", "frame path: matrix(frame)")
    )
    new = sum(ip[k]["cpu_p50_ms"] for k in ("history_tables", "feature_arrays", "matrix_of"))
    results["features_ratio_old_over_new"] = old / new
    print(json.dumps(results["in_process"], indent=1), flush=True)

    # The batch path as the service runs it: garbage collector paused, plain records, JSON in Rust.
    batch_histories = histories[: args.citizens]
    batch_body = json.dumps({"citizens": [h.model_dump(mode="json") for h in batch_histories]}).encode()
    names = ("validate_s", "validate_cpu_s", "score_s", "score_cpu_s", "serialise_s", "serialise_cpu_s")
    runs = [batch_run(batch_body, loaded) for _ in range(3)]
    best = min(runs, key=lambda r: r["score_cpu_s"])
    results["batch_in_process"] = {
        "citizens": len(batch_histories),
        "body_mb": len(batch_body) / 1e6,
        "score_cpu_s_runs": [r["score_cpu_s"] for r in runs],
        **{k: best[k] for k in names},
    }
    print(json.dumps(results["batch_in_process"]), flush=True)
    predictor.stop()

    bodies = [json.dumps(h.model_dump(mode="json")).encode() for h in histories[:500]]
    work = home / "wrk"
    work.mkdir(exist_ok=True)
    results["load"] = {}
    port = free_port()
    bentoml = str(BIN / "bentoml")
    server = serve(
        [bentoml, "serve", "serving.service:JobChance", "--port", str(port), "--host", "127.0.0.1"],
        env,
        home / "bentoml.log",
        f"http://127.0.0.1:{port}/readyz",
    )
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=120) as http:
            for b in bodies[:30]:
                assert http.post(f"{base}/predict", content=b, headers=api).status_code == 200
            batch_times = []
            for _ in range(3):
                start_ = time.perf_counter()
                answer = http.post(f"{base}/predict_batch", content=batch_body, headers=api)
                batch_times.append(time.perf_counter() - start_)
                assert answer.status_code == 200, answer.text[:500]
            results["batch_http"] = {
                "citizens": len(batch_histories),
                "seconds": batch_times,
                "best_s": min(batch_times),
                "response_mb": len(answer.content) / 1e6,
            }
            print(json.dumps(results["batch_http"]), flush=True)

            # The caseworker page: one sequential client with a caseworker's session cookie.
            name = f"bench-cw-{os.getpid()}"
            accounts.add_user(store_url, name, accounts.Role.caseworker, sorted(store.jobcentres(store_url)))
            cookie = Sessions(session_key(settings), 3600, secure=False).cookie(name).split(";")[0]
            page_times = []
            for k, cid in enumerate(page_ids[:60]):
                start_ = time.perf_counter()
                answer = http.get(f"{base}/caseworker/citizen/{cid}", headers={"Cookie": cookie})
                if k >= 10:  # the first pages warm the templates and the store's caches
                    page_times.append(time.perf_counter() - start_)
                assert answer.status_code == 200 and "<html" in answer.text.lower(), answer.status_code
            page_ms = np.array(page_times) * 1000
            results["page"] = {
                "pages": len(page_ms),
                "p50_ms": float(np.percentile(page_ms, 50)),
                "p90_ms": float(np.percentile(page_ms, 90)),
            }
            print(json.dumps(results["page"]), flush=True)

        one = wrk(f"{base}/predict", bodies, 1, max(5.0, args.seconds / 4), work, token)
        results["load"]["bip /predict, 1 connection"] = one
        print(one, flush=True)
        bip = server_load(server.pid, f"{base}/predict", bodies, args.clients, args.seconds, work, token)
        results["load"]["bip /predict"] = bip
        print(bip, flush=True)
    finally:
        stop_process_tree(server)

    bare_port = free_port()
    bare_env = {**env, "BENCH_MODEL_URI": f"models:/{MODEL_NAME}@champion", "BENTOML_CONFIG_OPTIONS": ""}
    bare_server = serve(
        [bentoml, "serve", "benchmarks.bare_service:BareModel", "--port", str(bare_port), "--host", "127.0.0.1"],
        bare_env,
        home / "bare.log",
        f"http://127.0.0.1:{bare_port}/readyz",
    )
    try:
        bare = server_load(
            bare_server.pid, f"http://127.0.0.1:{bare_port}/predict", bodies, args.clients, args.seconds, work
        )
        results["load"]["bare BentoML: inplace_predict + contributions on a prebuilt row"] = bare
        print(bare, flush=True)
    finally:
        stop_process_tree(bare_server)
    results["overhead_bare_over_bip"] = bare["throughput_rps"] / bip["throughput_rps"]

    if not args.skip_mlflow:
        mlflow.set_tracking_uri(uri)
        frame_all = build_features(history_dataset(histories[:500]), model.horizon_months)
        ids = frame_all["citizen_id"].to_numpy(dtype=object)
        rows = model_rows(model, frame_all.iloc[np.flatnonzero(np.r_[ids[1:] != ids[:-1], True])], rows=500)
        feature_bodies = [
            json.dumps({"dataframe_split": rows.iloc[[k]].to_dict(orient="split")}, default=str).encode()
            for k in range(len(rows))
        ]
        mlflow_port = free_port()
        mlflow_server = serve(
            [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{MODEL_NAME}@champion", "--env-manager", "local"]
            + ["-p", str(mlflow_port), "-h", "127.0.0.1"],
            env,
            home / "mlflow-serve.log",
            f"http://127.0.0.1:{mlflow_port}/ping",
        )
        try:
            check = httpx.post(
                f"http://127.0.0.1:{mlflow_port}/invocations",
                content=feature_bodies[0],
                headers={"content-type": "application/json"},
            )
            assert check.status_code == 200, check.text[:500]
            invocations = f"http://127.0.0.1:{mlflow_port}/invocations"
            flow = server_load(mlflow_server.pid, invocations, feature_bodies, args.clients, args.seconds, work)
            results["load"]["mlflow models serve /invocations (features precomputed)"] = flow
            print(flow, flush=True)
        finally:
            stop_process_tree(mlflow_server)
        results["throughput_ratio_bip_over_mlflow"] = bip["throughput_rps"] / flow["throughput_rps"]
    results["load_average_at_end"] = os.getloadavg()[0]
    print(json.dumps(results, indent=1, default=str))
    if args.append:
        with args.append.open("a", encoding="utf-8") as out:
            out.write("\n" + markdown(results))
        print(f"appended to {args.append}")


def markdown(r: dict) -> str:
    ip, b, bh, pg = r["in_process"], r["batch_in_process"], r["batch_http"], r["page"]
    lines = [
        f"## {r['started'][:10]}: the fast path (issue #15)",
        "",
        f"`.venv/bin/python {r['command']}`, started {r['started']}.",
        "",
        f"Machine: {r['machine']}; load average {r['load_average_at_end']:.1f} at the end. wrk, the servers and",
        "other jobs share the 2 cores: wall-clock figures are pessimistic; CPU times and ratios are the better guide.",
        "",
        "### One citizen in-process",
        "",
        f"A typical history: {ip['rounds_in_history']} rounds, {ip['episodes_in_history']} intervention episodes."
        f" {ip['end_to_end']['n']} calls per stage.",
        "",
        "| stage | wall p50 ms | wall p99 ms | CPU p50 ms |",
        "|---|---|---|---|",
    ]
    for name, t in ip.items():
        if isinstance(t, dict):
            lines.append(f"| {name} | {t['p50_ms']:.3f} | {t['p99_ms']:.3f} | {t['cpu_p50_ms']:.3f} |")
    lines += [
        "",
        "`score_records` = history_tables + feature_arrays + matrix_of + probability + contributions + explanation;"
        " `end_to_end` adds JSON validation, the Prediction model and its JSON, as /predict does.",
        "The `frame path:` rows are the path requests took before (history -> contract Dataset -> build_features"
        " -> matrix of the frame; build_features now runs the same array core inside), in the same process:"
        f" {r['features_ratio_old_over_new']:.1f}x the CPU of history_tables + feature_arrays + matrix_of.",
        "",
        f"### HTTP, wrk ({r['clients']} connections unless said, 2 threads, {r['seconds']:g} s)",
        "",
        "| target | requests | errors | req/s | p50 ms | p90 ms | p99 ms | server CPU ms/request |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in r["load"].items():
        cpu = row.get("server_cpu_ms_per_request")
        lines.append(
            f"| {name} | {row['requests']} | {row['errors']} | {row['throughput_rps']:.1f} | {row['p50_ms']:.1f} |"
            f" {row['p90_ms']:.1f} | {row['p99_ms']:.1f} | {'' if cpu is None else f'{cpu:.2f}'} |"
        )
    lines += ["", f"- bare service / bip /predict throughput: {r['overhead_bare_over_bip']:.2f}x."]
    if "throughput_ratio_bip_over_mlflow" in r:
        lines.append(f"- bip /predict / mlflow models serve throughput: {r['throughput_ratio_bip_over_mlflow']:.1f}x.")
    lines += [
        f"- wrk command: `{r['load']['bip /predict']['command']}` (body file: one history per line).",
        "",
        f"### /predict_batch of {b['citizens']} citizens",
        "",
        "- In-process, as the service does it (best of 3 by CPU; wall / CPU):"
        f" validate {b['validate_s']:.2f} / {b['validate_cpu_s']:.2f} s,"
        f" score (features + model + explanation) {b['score_s']:.2f} / {b['score_cpu_s']:.2f} s"
        f" (CPU runs: {', '.join(f'{s:.2f}' for s in b['score_cpu_s_runs'])} s),"
        f" serialise {b['serialise_s']:.2f} / {b['serialise_cpu_s']:.2f} s.",
        f"- HTTP, whole request ({b['body_mb']:.1f} MB in, {bh['response_mb']:.1f} MB out):"
        f" best {bh['best_s']:.2f} s of {', '.join(f'{s:.2f}' for s in bh['seconds'])} s.",
        "",
        "### Caseworker page",
        "",
        f"- GET /caseworker/citizen/<id>, one sequential client with a caseworker's session, {pg['pages']} citizens:"
        f" p50 {pg['p50_ms']:.1f} ms, p90 {pg['p90_ms']:.1f} ms (store read, scoring, what-if batch, audit row, HTML).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
