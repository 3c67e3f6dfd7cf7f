"""The prediction service end to end: a real MLflow store, a model trained with the training code, the
real BentoML server over HTTP.

One server serves the whole module (fixture `served` in conftest_service.py); tests run in file
order, and the test that moves the alias comes after those that compare with version 1.

(About 510 lines: the tests share one server and depend on file order, so they stay in one file.)
"""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import threading
import time

import numpy as np
import pandas as pd
import pytest
from conftest_service import BIN, MODEL_NAME, Served, raw, wait_for
from conftest_service import served as served  # noqa: F401  (the module fixture)

from features import store
from features.catalogue import GROUP_LABELS, INTERVENTION_CODES, indicator
from serving import audit
from serving.histories import history_from_dataset
from serving.schemas import EXAMPLE_HISTORY, MAX_MEASUREMENTS, BatchPrediction
from training.model import expit

pytestmark = pytest.mark.xdist_group("server")

AUDIT_COLUMNS = {"id", "at", "event", "user_id", "role", "citizen_id", "model_name", "model_version", "probability"}
AUDIT_DETAIL = {"as_of", "measured_on", "top_factors"}  # the prediction's dates and its largest factors, no answers


def request_of(served: Served, citizen_id: str) -> dict:
    return history_from_dataset(served.dataset, citizen_id).model_dump(mode="json")


def sample_citizens(served: Served, n: int) -> list[str]:
    counts = served.dataset.measurements["citizen_id"].value_counts()
    return sorted(counts.index[:n].tolist())  # those with the longest histories


def served_version(served: Served) -> str:
    return served.client.get("/model").json()["version"]


def test_unready_and_503_until_a_champion_exists(served):
    assert served.before_model == {"readyz": 503, "predict": 503, "predict_batch": 503, "model": 503}


def test_the_503_before_a_model_names_no_address_of_the_registry(served):
    for name, text in served.before_model_text.items():
        assert served.tracking_uri not in text and "sqlite" not in text.lower(), (name, text)
        assert str(served.home) not in text, (name, text)


def test_health_endpoints(served):
    assert served.client.get("/livez").status_code == 200
    assert served.client.get("/readyz").status_code == 200
    served.client.post("/predict", json=EXAMPLE_HISTORY).raise_for_status()
    metrics = served.client.get("/metrics")
    assert metrics.status_code == 200 and "# TYPE" in metrics.text  # Prometheus text format
    assert "bip_gc_full_collection_seconds_count" in metrics.text  # the collector's pauses (settle_collector)
    wait_for(lambda: 'route="/predict"' in served.client.get("/metrics").text, 30, "/predict in /metrics")


def test_model_endpoint_names_version_metrics_and_catalogue(served):
    info = served.client.get("/model").json()
    assert (info["name"], info["alias"]) == (MODEL_NAME, "champion")
    assert info["version"] == "1" and info["horizon_months"] == 12
    assert info["training_fingerprint"] and info["metrics"]
    features = pd.DataFrame(info["features"])
    assert {"name", "belongs_to", "kind", "label_da", "label_en", "monotone"} <= set(features.columns)
    self_efficacy = features[features["name"] == "cit_self_efficacy"].iloc[0]
    assert self_efficacy["belongs_to"] == "self_efficacy" and self_efficacy["monotone"] == 1
    assert indicator("self_efficacy").label_da in self_efficacy["label_da"]


def test_probabilities_equal_offline_bip_predict(served, tmp_path):
    version = served_version(served)
    out = tmp_path / "predictions.csv"
    result = served.bip(
        "predict", "--model", f"models:/{MODEL_NAME}/{version}", "--data", str(served.data), "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    offline = pd.read_csv(out).set_index("measurement_id")["probability"]
    citizens = sample_citizens(served, 12)
    requests = [request_of(served, c) for c in citizens]
    for body in requests:
        answer = served.client.post("/predict", json=body)
        assert answer.status_code == 200, answer.text
        prediction = answer.json()
        assert prediction["model"] == {"name": MODEL_NAME, "version": version}
        assert prediction["probability"] == pytest.approx(offline[prediction["measurement_id"]], abs=1e-6)
    batch = served.client.post("/predict_batch", json={"citizens": requests})
    assert batch.status_code == 200, batch.text
    BatchPrediction.model_validate(batch.json())  # the answer written without pydantic keeps its schema
    predictions = batch.json()["predictions"]
    assert [p["citizen_id"] for p in predictions] == citizens
    for p in predictions:
        assert p["probability"] == pytest.approx(offline[p["measurement_id"]], abs=1e-6)


def test_requests_build_the_same_features_as_the_batch_path(served):
    from features.build import build_features
    from features.feature_catalogue import LABEL_COLUMNS
    from serving.histories import histories_from_dataset, history_dataset

    histories = histories_from_dataset(served.dataset)
    assert len(histories) == served.dataset.measurements["citizen_id"].nunique()
    batch = build_features(served.dataset).drop(columns=list(LABEL_COLUMNS))
    served_rows = build_features(history_dataset(histories)).drop(columns=list(LABEL_COLUMNS))
    pd.testing.assert_frame_equal(served_rows, batch, check_dtype=False)


def test_contributions_sum_to_the_calibrated_log_odds(served):
    import mlflow

    from features.build import build_features
    from serving.histories import history_dataset
    from training.model import load_model

    citizen = sample_citizens(served, 1)[0]
    body = {**request_of(served, citizen), "feature_contributions": True}
    prediction = served.client.post("/predict", json=body).json()
    explanation = prediction["explanation"]
    assert explanation["scale"] == "log-odds"
    base, log_odds = explanation["base_value"], explanation["log_odds"]
    features = pd.DataFrame(explanation["features"]).set_index("name")
    factors = explanation["factors"]
    assert base + features["contribution"].sum() == pytest.approx(log_odds, abs=1e-5)
    assert base + sum(f["contribution"] for f in factors) == pytest.approx(log_odds, abs=1e-5)
    assert expit(log_odds) == pytest.approx(prediction["probability"], abs=1e-9)
    assert explanation["probability"] == prediction["probability"]
    # The same numbers as the model itself gives for the build_features row, in-process.
    mlflow.set_tracking_uri(served.tracking_uri)
    model = load_model(f"models:/{MODEL_NAME}/{prediction['model']['version']}")
    assert model.linear is not None and model.linear_share == 0.5  # the blend is what is explained here
    history = history_from_dataset(served.dataset, citizen)
    row = build_features(history_dataset([history]), model.horizon_months).tail(1)
    contributions = model.contributions(model.matrix(row))[0]
    assert contributions[-1] == pytest.approx(base, abs=1e-6)
    np.testing.assert_allclose(features.loc[model.feature_names, "contribution"], contributions[:-1], atol=1e-6)
    assert model.log_odds(model.matrix(row))[0] == pytest.approx(log_odds, abs=1e-6)
    # Factors: one per belongs_to, largest |contribution| first, direction and labels right.
    sizes = [abs(f["contribution"]) for f in factors]
    assert sizes == sorted(sizes, reverse=True)
    assert {f["key"] for f in factors} == set(model.catalogue["belongs_to"])
    for f in factors:
        assert f["direction"] == ("raises" if f["contribution"] >= 0 else "lowers")
        summed = features.loc[features["belongs_to"] == f["key"], "contribution"].sum()
        assert f["contribution"] == pytest.approx(summed, abs=1e-9)
    by_key = {f["key"]: f for f in factors}
    assert by_key["job"]["label_da"] == GROUP_LABELS["job"][0]
    last = max(history.measurements, key=lambda m: m.measured_on)
    previous = sorted(history.measurements, key=lambda m: m.measured_on)[-2]
    scores = by_key["self_efficacy"]["scores"]
    assert by_key["self_efficacy"]["label_en"] == indicator("self_efficacy").label_en
    assert scores["citizen"] == last.citizen.self_efficacy
    assert scores["caseworker"] == last.caseworker.self_efficacy
    if last.citizen.self_efficacy is not None and previous.citizen.self_efficacy is not None:
        assert scores["citizen_change"] == last.citizen.self_efficacy - previous.citizen.self_efficacy


def _set(body: dict, path: tuple, value) -> dict:
    body = copy.deepcopy(body)
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


_DELETE = object()
_M0 = ("measurements", 0)
BAD_BODIES = {
    "score above 5": (_set(EXAMPLE_HISTORY, (*_M0, "citizen", "self_efficacy"), 6), "self_efficacy"),
    "score below 1": (_set(EXAMPLE_HISTORY, (*_M0, "caseworker", "job_search"), 0), "job_search"),
    "score not whole": (_set(EXAMPLE_HISTORY, (*_M0, "citizen", "job_search"), 2.5), "job_search"),
    "score as text": (_set(EXAMPLE_HISTORY, (*_M0, "citizen", "job_search"), "3"), "job_search"),
    "unknown indicator": (_set(EXAMPLE_HISTORY, (*_M0, "citizen", "motivation"), 3), "motivation"),
    "citizen answers caseworker_belief": (
        _set(EXAMPLE_HISTORY, (*_M0, "citizen", "caseworker_belief"), 3),
        "caseworker_belief",
    ),
    "unknown intervention": (_set(EXAMPLE_HISTORY, ("interventions", 0, "intervention"), "yoga"), "intervention"),
    "ended before started": (_set(EXAMPLE_HISTORY, ("interventions", 0, "ended_on"), "2014-01-01"), "ended_on"),
    "measured before enrolment": (_set(EXAMPLE_HISTORY, (*_M0, "measured_on"), "2013-12-01"), "measured_on"),
    "measurement after as_of": (_set(EXAMPLE_HISTORY, ("as_of",), "2014-03-01"), "measured_on"),
    "intervention after as_of": (_set(EXAMPLE_HISTORY, ("as_of",), "2014-04-25"), "started_on"),
    "citizen id like a CPR number": (_set(EXAMPLE_HISTORY, ("citizen", "citizen_id"), "010170-1234"), "citizen_id"),
    "empty history": (_set(EXAMPLE_HISTORY, ("measurements",), []), "measurements"),
    "no citizen": (_set(EXAMPLE_HISTORY, ("citizen",), _DELETE), "citizen"),
    "birth year as text": (_set(EXAMPLE_HISTORY, ("citizen", "birth_year"), "nineteen"), "birth_year"),
    "date as number": (_set(EXAMPLE_HISTORY, ("citizen", "enrolled_on"), 1388966400), "enrolled_on"),
    "impossible date": (_set(EXAMPLE_HISTORY, ("citizen", "enrolled_on"), "2014-02-30"), "enrolled_on"),
    "unknown gender": (_set(EXAMPLE_HISTORY, ("citizen", "gender"), "X"), "gender"),
    "benefit share above 1": (_set(EXAMPLE_HISTORY, ("citizen", "benefit_share_5y"), 1.5), "benefit_share_5y"),
    "job orientation above 5": (_set(EXAMPLE_HISTORY, ("caseworkers", 0, "job_orientation"), 7), "job_orientation"),
    "unknown field": (_set(EXAMPLE_HISTORY, ("cpr",), "010170-1234"), "cpr"),
    "a list instead of an object": ([EXAMPLE_HISTORY], "history"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_input_answers_400_naming_the_field(served, case):
    body, field = BAD_BODIES[case]
    answer = served.client.post("/predict", json=body)
    assert answer.status_code == 400, answer.text
    if field != "history":
        locations = [error["loc"] for error in answer.json()["detail"]]
        assert any(field in loc for loc in locations), answer.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"citizens": []}, "citizens"),
        ({"citizens": [EXAMPLE_HISTORY, EXAMPLE_HISTORY]}, "citizen_id"),
        (
            {"citizens": [EXAMPLE_HISTORY, _set(EXAMPLE_HISTORY, (*_M0, "citizen", "self_efficacy"), 9)]},
            "self_efficacy",
        ),
    ],
)
def test_bad_batch_answers_400_naming_the_field(served, body, field):
    answer = served.client.post("/predict_batch", json=body)
    assert answer.status_code == 400, answer.text
    assert any(field in error["loc"] for error in answer.json()["detail"]), answer.text


def test_bodies_that_are_not_json_or_too_large_answer_4xx(served):
    client = served.client
    json_type = {"content-type": "application/json"}
    assert client.post("/predict", content=b"{not json", headers=json_type).status_code == 400
    assert client.post("/predict", content=b"", headers=json_type).status_code == 400
    assert client.post("/predict", content=b"a=1", headers={"content-type": "text/plain"}).status_code == 415
    unnamed = client.post("/predict", content=json.dumps(EXAMPLE_HISTORY).encode())  # httpx names no type
    assert unnamed.status_code == 415 and "no Content-Type" in unnamed.json()["error"], unnamed.text
    large = client.post("/predict", content=b" " * (2 * 1024 * 1024), headers={"content-type": "application/json"})
    assert large.status_code == 413 and "/predict" in large.json()["error"]

    def chunks():  # no Content-Length: the limit must hold for a streamed body too
        for _ in range(40):
            yield b" " * 65536

    assert client.post("/predict", content=chunks(), headers={"content-type": "application/json"}).status_code == 413


# A distinctive value at one place of the body: the answer names the field, and neither the answer nor
# the server log holds the value (a value can be a person's data).
MARKED_BODIES = {
    "gender": (("citizen", "gender"), "QX-gender-4417"),
    "unknown field": (("nickname",), "QX-extra-4417"),
    "citizen id like a CPR number": (("citizen", "citizen_id"), "2912991234"),
    "caseworker id as a list": ((*_M0, "caseworker_id"), ["QX-list-4417"]),
}


def server_log(served: Served) -> str:
    return served.log.read_text(errors="replace")


@pytest.mark.parametrize("case", list(MARKED_BODIES))
@pytest.mark.parametrize("route", ["/predict", "/predict_batch"])
def test_a_400_names_the_field_and_never_echoes_or_logs_the_value(served, case, route):
    path, value = MARKED_BODIES[case]
    marker = value if isinstance(value, str) else value[0]
    body = _set(EXAMPLE_HISTORY, path, value)
    line = f"client error 400 on {route} [POST]: ValidationError"
    logged, errors = server_log(served).count(line), server_log(served).count(f"Exception on {route} [POST]")
    answer = served.client.post(route, json=body if route == "/predict" else {"citizens": [body]})
    assert answer.status_code == 400, answer.text
    locations = [error["loc"] for error in answer.json()["detail"]]
    assert any(loc[-len(path) :] == list(path) for loc in locations), answer.text
    assert marker not in answer.text
    # A client's mistake is one WARNING line (serving.process.ClientErrorLines), not BentoML's ERROR with
    # a traceback; neither may hold the value.
    wait_for(lambda: server_log(served).count(line) > logged, 10, "the 400's line in the log")
    warning = [text for text in server_log(served).splitlines() if line in text][-1]
    assert "WARNING" in warning and "ERROR" not in warning, warning
    assert server_log(served).count(f"Exception on {route} [POST]") == errors
    assert marker not in server_log(served)


def test_a_body_shorter_than_its_content_length_answers_408_not_bentomls_504(served):
    head = (
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
        f"Authorization: {served.client.headers['Authorization']}\r\n\r\n"
    )
    status, body = raw(served, head.encode() + b'{"citizen"')  # 10 of the 100 bytes promised, then nothing
    assert status.startswith("HTTP/1.1 408"), (status, body)
    assert json.loads(body)["error"] == "the body did not arrive within 4 s (10 of 100 bytes came)"


def test_predict_takes_1_mib_and_answers_413_above(served):
    body = json.dumps(EXAMPLE_HISTORY).encode()
    headers = {"content-type": "application/json"}
    exactly = body + b" " * (2**20 - len(body))  # whitespace after JSON is still JSON
    assert served.client.post("/predict", content=exactly, headers=headers).status_code == 200
    over = served.client.post("/predict", content=exactly + b" ", headers=headers)
    assert over.status_code == 413, over.text
    assert "/predict" in over.json()["error"]


def test_a_history_over_the_limit_answers_422_naming_measurements(served):
    rounds = [
        {**EXAMPLE_HISTORY["measurements"][0], "measured_on": f"20{15 + k // 12}-{k % 12 + 1:02d}-01"}
        for k in range(MAX_MEASUREMENTS + 1)
    ]
    body = {**copy.deepcopy(EXAMPLE_HISTORY), "measurements": rounds, "as_of": "2040-01-01"}
    body["citizen"]["citizen_id"] = "C000124"  # not the example's: a batch holds each citizen once
    answer = served.client.post("/predict", json=body)
    assert answer.status_code == 422, answer.text
    assert "measurements" in answer.text and str(MAX_MEASUREMENTS) in answer.text
    batch = served.client.post("/predict_batch", json={"citizens": [EXAMPLE_HISTORY, body]})
    assert batch.status_code == 422, batch.text
    assert "citizens[1].measurements" in batch.text
    at_limit = {**body, "measurements": rounds[:MAX_MEASUREMENTS]}
    assert served.client.post("/predict", json=at_limit).status_code == 200


def test_intervention_codes_are_all_accepted(served):
    body = copy.deepcopy(EXAMPLE_HISTORY)
    body["interventions"] = [
        {"intervention": code, "started_on": f"2014-02-{k % 28 + 1:02d}", "ended_on": "2014-03-31"}
        for k, code in enumerate(INTERVENTION_CODES)
    ]
    answer = served.client.post("/predict", json=body)
    assert answer.status_code == 200, answer.text
    keys = {f["key"] for f in answer.json()["explanation"]["factors"]}
    assert {"job", "upskilling", "social", "health"} <= keys


def test_minimal_history_is_scored(served):
    body = {
        "citizen": EXAMPLE_HISTORY["citizen"],
        "measurements": [{"measured_on": "2014-02-01", "caseworker_id": "W1"}],
    }
    answer = served.client.post("/predict", json=body)
    assert answer.status_code == 200, answer.text
    prediction = answer.json()
    assert prediction["as_of"] == prediction["measured_on"] == "2014-02-01"
    assert prediction["measurement_id"] == "round-1"


def test_each_prediction_is_one_audit_row_with_the_caller_and_no_personal_data(served):
    last = max((row["id"] for row in audit.events(served.store_url)), default=0)
    requests = [request_of(served, c) for c in sample_citizens(served, 3)]
    one = served.client.post("/predict", json=requests[0])
    one.raise_for_status()
    many = served.client.post("/predict_batch", json={"citizens": requests})
    many.raise_for_status()
    rows = [row for row in audit.events(served.store_url) if row["id"] > last]
    assert [row["event"] for row in rows] == ["api_predict"] + ["api_predict_batch"] * 3
    assert [row["citizen_id"] for row in rows] == [r["citizen"]["citizen_id"] for r in requests[:1] + requests]
    answers = [one.json(), *many.json()["predictions"]]
    version = one.json()["model"]["version"]
    for row, answer in zip(rows, answers, strict=True):
        assert (row["user_id"], row["role"]) == ("service", "service")
        assert (row["model_name"], row["model_version"]) == (MODEL_NAME, version)
        assert row["probability"] == pytest.approx(answer["probability"], abs=1e-6)
        assert set(row) == AUDIT_COLUMNS | {"detail"} and set(row["detail"]) == AUDIT_DETAIL
        assert [f["factor"] for f in row["detail"]["top_factors"]] == [
            f["key"] for f in answer["explanation"]["factors"][:3]
        ]
        assert all(set(f) == {"factor", "contribution"} for f in row["detail"]["top_factors"])
    citizens = {r["citizen"]["citizen_id"]: r["citizen"] for r in requests}
    for row in rows:
        text = json.dumps(row, default=str)
        assert "birth_year" not in text and "answers" not in text and 'self_efficacy":' not in text
        values = [v for v in row.values() if not isinstance(v, dict)] + list(row["detail"].values())
        assert citizens[row["citizen_id"]]["birth_year"] not in values


@pytest.fixture(scope="module")
def stored(served: Served) -> str:
    """The server's store holding the simulated dataset, for the caseworker page."""
    store.ingest(served.dataset, served.store_url, source="test_service")
    return served.store_url


def test_metrics_need_a_role_and_name_route_templates_never_citizen_ids(served, stored):
    citizen = sample_citizens(served, 1)[0]
    made_up = "QX-no-such-citizen-4417"
    with served.as_("caseworker") as caseworker, served.as_("admin") as admin, served.anonymous() as anonymous:
        assert caseworker.get(f"/caseworker/citizen/{citizen}").status_code == 200
        assert caseworker.get(f"/caseworker/citizen/{made_up}").status_code == 404
        assert anonymous.get(f"/QX-no-such-route-4417/{citizen}").status_code == 404
        assert anonymous.get("/metrics").status_code == 401
        assert caseworker.get("/metrics").status_code == 403
        template = 'route="/caseworker/citizen/{citizen_id:path}"'
        text = wait_for(
            lambda: (answer := admin.get("/metrics")).status_code == 200 and template in answer.text and answer.text,
            30,
            "the page view in /metrics",
        )
    assert f'{template},status="200"' in text and f'{template},status="404"' in text
    assert 'route="(no route)"' in text
    for sent in (citizen, made_up, "QX-no-such-route"):
        assert sent not in text


def test_the_access_log_names_route_templates_never_citizen_ids(served, stored):
    """serving.access writes one access line per request, with the route template, status and role."""
    citizen = sample_citizens(served, 2)[1]
    with served.as_("caseworker") as caseworker:
        assert caseworker.get(f"/caseworker/citizen/{citizen}").status_code == 200
    line = "GET /caseworker/citizen/{citizen_id:path} 200"
    wait_for(lambda: line in server_log(served), 10, f"the access line {line!r} in the server log")
    assert citizen not in server_log(served)


def test_admin_answers_401_before_reading_a_body(served):
    """Headers that announce 100 MB and no body: the 401 comes at once, so the body was not awaited."""
    host, port = served.url.removeprefix("http://").split(":")
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            b"POST /admin/retrain HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = connection.recv(4096)
            assert chunk, head
            head += chunk
    assert head.startswith(b"HTTP/1.1 401"), head
    assert time.monotonic() - start < 5


def test_openapi_document_has_each_endpoint_with_an_example(served):
    spec = served.client.get("/docs.json").json()
    schemas = spec["components"]["schemas"]

    def schema_of(operation: dict, where: str) -> dict:
        if where == "request":
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
        else:
            schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        return schemas[schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema

    for path in ("/predict", "/predict_batch"):
        operation = spec["paths"][path]["post"]
        assert "example" in schema_of(operation, "request"), path
        assert "example" in schema_of(operation, "response"), path
    assert schema_of(spec["paths"]["/predict"]["post"], "request")["example"]["citizen"]["citizen_id"] == "C000123"
    assert "example" in schema_of(spec["paths"]["/model"]["get"], "response")


def test_schemathesis_finds_no_server_error(served, tmp_path):
    command = [
        str(BIN / "st"),
        "run",
        f"{served.url}/docs.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "10",
        "--max-time",
        "30",
        "--phases",
        "examples,fuzzing",
        "--seed",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--no-color",
        "--include-path-regex",
        "^/(predict|predict_batch|model|livez|readyz)$",
        "--header",
        f"Authorization: Bearer {served.accounts['service'].token}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=240)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_moved_alias_is_served_without_restart_or_dropped_requests(served, tmp_path):
    import mlflow

    from training.model import load_model, log_pyfunc
    from training.registry import register, set_champion

    body = request_of(served, sample_citizens(served, 1)[0])
    first = served.client.post("/predict", json=body).json()
    assert first["model"]["version"] == "1"
    # Version 2: the same booster with another calibration, logged and registered as training does.
    mlflow.set_tracking_uri(served.tracking_uri)
    mlflow.set_experiment("bip-job-chance")  # made by training, its artifacts under the temp home
    model = load_model(f"models:/{MODEL_NAME}/1")
    model.calibration = (model.calibration[0], model.calibration[1] + 0.5)
    with mlflow.start_run(run_name="second version"):
        info = log_pyfunc(model, "model", tmp_path / "pyfunc")
    version = register(info, MODEL_NAME, tracking_uri=served.tracking_uri)
    statuses: list[int] = []
    stop = threading.Event()

    def keep_asking() -> None:
        with served.as_("service") as client:
            while not stop.is_set():
                statuses.append(client.post("/predict", json=body).status_code)

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        set_champion(MODEL_NAME, version.version, tracking_uri=served.tracking_uri)
        wait_for(
            lambda: served_version(served) == str(version.version),
            90,
            f"version {version.version} to be served; server log ends: {served.log.read_text()[-2000:]}",
        )
    finally:
        stop.set()
        asker.join()
    assert statuses and set(statuses) == {200}
    second = served.client.post("/predict", json=body).json()
    assert second["model"]["version"] == str(version.version)
    assert second["explanation"]["log_odds"] == pytest.approx(first["explanation"]["log_odds"] + 0.5, abs=1e-6)


def test_server_is_still_alive_and_logged_no_server_error(served):
    log = served.log.read_text(errors="replace")
    assert served.process.poll() is None, log[-3000:]
    assert "status=500" not in log, log[-3000:]
