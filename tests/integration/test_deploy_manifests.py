"""The example Kubernetes manifests (deploy/k8s/) against the code: they parse, their probes are
routes of the BentoML service, their ports are the ones the image serves on, their environment
variables are settings that bip reads, and their jobs run real `bip` commands with real options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from bip.cli import build_app
from bip.settings import Settings

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "deploy" / "k8s").glob("*.yaml"))
READ_OUTSIDE_SETTINGS = {"BIP_MODEL_POLL_SECONDS"}  # read by serving.service itself
EXIT_CODES = {0, 1, 2, 3}  # `bip retrain --help`


def documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents() if doc["kind"] == kind}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return workload["spec"]["template"]["spec"]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec(workload)["containers"] if c["name"] == name)


def port_number(spec: dict[str, Any], port: int | str) -> int:
    """A probe's or a Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in spec["ports"] if p["name"] == port)


@pytest.fixture(scope="module")
def service_paths() -> set[str]:
    from serving.service import JobChance

    return set(JobChance.openapi_spec.asdict()["paths"])


def test_every_manifest_parses_and_names_its_objects():
    assert {p.name for p in MANIFESTS} >= {"deployment.yaml", "cronjobs.yaml", "secret.yaml", "configmap.yaml"}
    for doc in documents():
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
    assert {"Deployment", "Service", "CronJob", "Secret", "ConfigMap"} <= {d["kind"] for d in documents()}


def test_the_probes_are_routes_of_the_service_on_the_port_it_serves(service_paths):
    from bentoml._internal.configuration.containers import BentoMLContainer

    bip = container(of_kind("Deployment")["bip-service"], "bip")
    assert port_number(bip, "bentoml") == BentoMLContainer.http.port.get() == 3000
    probes = {kind: bip[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes["livenessProbe"]["path"] == "/livez" and probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert probe["path"] in service_paths
        assert port_number(bip, probe["port"]) == 3000


def test_users_reach_the_service_only_through_the_sso_proxy():
    deployment = of_kind("Deployment")["bip-service"]
    bip, proxy = container(deployment, "bip"), container(deployment, "oauth2-proxy")
    args = dict(arg.removeprefix("--").split("=", 1) for arg in proxy["args"])
    assert args["upstream"] == f"http://127.0.0.1:{port_number(bip, 'bentoml')}"
    assert args["pass-user-headers"] == "true"  # X-Forwarded-User and X-Forwarded-Groups
    listening = int(args["http-address"].rsplit(":", 1)[1])
    assert port_number(proxy, "http") == listening
    service = of_kind("Service")["bip-service"]
    assert [port_number(proxy, p["targetPort"]) for p in service["spec"]["ports"]] == [listening]
    config = of_kind("ConfigMap")["bip-config"]["data"]
    assert config["BIP_AUTH"] == "proxy" and config["BIP_TRUSTED_PROXIES"] == "127.0.0.1/32"
    policy = of_kind("NetworkPolicy")["bip-service"]["spec"]["ingress"]
    assert [p["port"] for rule in policy for p in rule["ports"]] == [listening]


def environment_names() -> set[str]:
    names = set(of_kind("ConfigMap")["bip-config"]["data"]) | set(of_kind("Secret")["bip-secrets"]["stringData"])
    for kind in ("Deployment", "CronJob"):
        for workload in of_kind(kind).values():
            for c in pod_spec(workload)["containers"]:
                names |= {e["name"] for e in c.get("env", [])}
    return names


def test_every_bip_variable_is_a_setting_bip_reads():
    known = {f"BIP_{name.upper()}" for name in Settings.model_fields} | {"MLFLOW_TRACKING_URI"}
    used = {n for n in environment_names() if n.startswith(("BIP_", "MLFLOW_TRACKING"))}
    assert used - known - READ_OUTSIDE_SETTINGS == set()
    assert {"BIP_DATABASE_URL", "MLFLOW_TRACKING_URI"} <= used


def test_the_tracking_uri_names_the_mlflow_service_and_its_port():
    uri = of_kind("ConfigMap")["bip-config"]["data"]["MLFLOW_TRACKING_URI"]
    mlflow = of_kind("Service")["mlflow"]["spec"]["ports"][0]
    assert uri == f"http://mlflow.bip.svc:{mlflow['port']}"
    server = container(of_kind("Deployment")["mlflow"], "mlflow")
    assert "--serve-artifacts" in server["command"][-1] and "--artifacts-destination" in server["command"][-1]


def test_the_cronjobs_run_real_bip_commands_and_fail_fast_only_where_retrying_is_useless():
    commands = typer.main.get_command(build_app()).commands
    jobs = of_kind("CronJob")
    assert {"bip-predict-nightly", "bip-retrain-quarterly"} <= set(jobs)
    run = {}
    for name, job in jobs.items():
        argv = container(job, "bip")["command"]
        assert argv[:3] == ["python", "-m", "bip"], argv
        subcommand, options = commands[argv[3]], [a for a in argv[4:] if a.startswith("--")]
        known = {opt for param in subcommand.params for opt in param.opts}
        assert set(options) <= known, (name, set(options) - known)
        run[name] = argv[3]
        policy = job["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
        assert {c for rule in policy for c in rule["onExitCodes"]["values"]} <= EXIT_CODES - {0, 3}
        assert job["spec"]["concurrencyPolicy"] == "Forbid"
        assert pod_spec(job)["restartPolicy"] == "Never"
    assert run == {"bip-predict-nightly": "predict", "bip-retrain-quarterly": "retrain"}
    assert "Exit codes" in commands["retrain"].help


def test_the_secret_holds_placeholders_only():
    for value in of_kind("Secret")["bip-secrets"]["stringData"].values():
        assert "CHANGE-ME" in value
