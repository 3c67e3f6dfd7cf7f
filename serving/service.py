"""The BentoML service: `bentoml serve serving.service:JobChance` (or `bip serve`).

Thin by design: it loads the champion model into a `serving.core.Predictor`, lets pydantic
(`serving.schemas`) validate the body, and calls the same `core` functions as the caseworker page.

Endpoints: POST /predict, POST /predict_batch, GET /model, and the caseworker page under
/caseworker (serving/page.py, same Predictor); the admin endpoints under /admin (serving/admin.py,
off unless BIP_ADMIN_TOKEN or BIP_ADMIN_TOKEN_FILE is set); BentoML adds /livez, /readyz (not ready
until a model is loaded), /metrics and the OpenAPI document at /docs.json. Client mistakes answer
4xx: 400 with pydantic's `detail` (each error's `loc` names the field), 413 for a body over the
limit, 415 for a body that is not JSON; 503 while no model is loaded.

Environment (read when the service starts, never at import): the settings of `bip.settings`
(MLFLOW_TRACKING_URI, BIP_HOME, ...) and BIP_MODEL_POLL_SECONDS (default 5; 0 = never look for a
new champion). Workers: BENTOML_CONFIG_OPTIONS="services.JobChance.workers=2".
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import bentoml
import pydantic_core
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.responses import Response

from bip.settings import load_settings
from serving.admin import create_admin_app
from serving.audit import AuditLog
from serving.core import ModelUnavailable, Predictor, gc_paused
from serving.page import PAGE_PATH, create_app
from serving.schemas import BatchPrediction, BatchRequest, ModelInfo, Prediction, PredictRequest

MiB = 1024 * 1024
BODY_LIMITS: dict[str, int] = {"/predict": 1 * MiB, "/predict_batch": 64 * MiB}
POLL_SECONDS = 5.0

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class RequestLimits:
    """ASGI middleware for the JSON APIs in `limits`: a POST body must be JSON (415 otherwise) and at
    most the path's limit (413). Other paths (the caseworker page's forms) pass untouched.

    The body is read here, up to the limit, and replayed to the application, so a chunked upload
    without Content-Length cannot get past the limit either. On the `bulk` paths the garbage
    collector is paused for the whole request (see `core.gc_paused`): validating and scoring
    thousands of histories otherwise spends half its time in collections that find nothing.
    """

    def __init__(self, app: Any, limits: Mapping[str, int], bulk: frozenset[str] = frozenset()) -> None:
        self.app, self.limits, self.bulk = app, dict(limits), bulk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "").rstrip("/") or "/"
        if scope["type"] != "http" or scope["method"] != "POST" or path not in self.limits:
            await self.app(scope, receive, send)
            return
        limit = self.limits[path]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        media_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if media_type != "application/json":
            await self._refuse(
                scope, receive, send, 415, f"the body must be JSON (Content-Type: application/json), not {media_type!r}"
            )
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(
                scope, receive, send, 413, f"the body is {int(declared)} bytes; {path} takes at most {limit}"
            )
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await self._refuse(scope, receive, send, 413, f"the body is over {limit} bytes, the limit of {path}")
                return
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        if path in self.bulk:
            with gc_paused:
                await self.app(scope, replay, send)
        else:
            await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
        await JSONResponse({"error": message}, status_code=status)(scope, receive, send)


def unavailable(error: ModelUnavailable) -> Response:
    return JSONResponse({"error": str(error)}, status_code=503)


def current_predictor() -> Predictor:
    """The running service's Predictor, for the caseworker page (looked up per request)."""
    return bentoml.get_current_service().predictor


extra = FastAPI(title="bip job chance: model information", docs_url=None, redoc_url=None, openapi_url=None)


@bentoml.service(name="JobChance", traffic={"timeout": 60}, threads=4)
@bentoml.asgi_app(create_admin_app(), path="/admin", name="admin")
@bentoml.asgi_app(create_app(current_predictor), path=PAGE_PATH, name="caseworker-page")
@bentoml.asgi_app(extra, path="/", name="model-info")
class JobChance:
    """The chance that a citizen on social assistance enters a job or education within 12 months,
    with the reasons (factors) behind it, from the quarterly progression measurements."""

    def __init__(self) -> None:
        settings = load_settings()
        self.audit = AuditLog(settings.audit_log_path)
        self.predictor = Predictor(settings, audit=self.audit)
        self.predictor.start(poll_seconds=float(os.environ.get("BIP_MODEL_POLL_SECONDS", POLL_SECONDS)))

    def __is_ready__(self) -> bool:
        return self.predictor.ready

    @bentoml.on_shutdown
    def close(self) -> None:
        self.predictor.stop()
        self.audit.close()

    @bentoml.api(route="/predict")
    def predict(self, history: PredictRequest, /) -> Prediction:
        """The calibrated probability of a job or education within 12 months for one citizen's
        history, with the factors behind it on the log-odds scale (largest first)."""
        try:
            return self.predictor.predict(history, history.feature_contributions)
        except ModelUnavailable as error:
            return unavailable(error)  # type: ignore[return-value]

    @bentoml.api(route="/predict_batch")
    def predict_batch(self, batch: BatchRequest, /) -> BatchPrediction:
        """`/predict` for many citizens at once, in the order given (one model call)."""
        try:
            records = self.predictor.predict_records(batch.citizens)
        except ModelUnavailable as error:
            return unavailable(error)  # type: ignore[return-value]
        # Thousands of explanations: written straight to JSON (in Rust) rather than built as models first.
        body = pydantic_core.to_json({"model": records[0]["model"], "predictions": records})
        return Response(body, media_type="application/json")  # type: ignore[return-value]

    @extra.get("/model", response_model=ModelInfo, responses={503: {"description": "No model loaded yet."}})
    def model(self) -> Any:
        """The model being served: name, version, alias, training-data fingerprint, headline
        metrics and the feature catalogue (Danish and English labels)."""
        try:
            return self.predictor.model_info()
        except ModelUnavailable as error:
            return unavailable(error)


JobChance.add_asgi_middleware(RequestLimits, limits=BODY_LIMITS, bulk=frozenset({"/predict_batch"}))
