"""The BentoML service: `bentoml serve serving.service:JobChance` (or `bip serve`).

Thin by design: it loads the champion model into a `serving.core.Predictor`, lets pydantic
(`serving.schemas`) validate the body, and calls the same `core` functions as the caseworker page.

Endpoints: POST /predict, POST /predict_batch, GET /model, GET /metrics, the caseworker page under
/caseworker (serving/page, same Predictor) and the admin endpoints under /admin (serving/admin.py);
BentoML adds /livez, /readyz (not ready until a model is loaded) and the OpenAPI document at
/docs.json. Who may call what is `serving.access.RULES`, enforced by one middleware before anything
else runs. Client mistakes answer 4xx: 400 with pydantic's `detail` (each error's `loc` names the
field; input values are never echoed), 408 for a body that does not arrive in time
(BIP_BODY_SECONDS), 413 for a body over the limit, 415 for a body that is not JSON, 422 for a history
over MAX_MEASUREMENTS rounds; 503 while no model is loaded. Every prediction is audited with who
asked (`serving.audit`).

Environment (read when the service starts, never at import): the settings of `bip.settings`
(MLFLOW_TRACKING_URI, BIP_HOME, ...) and BIP_MODEL_POLL_SECONDS (default 5; 0 = never look for a
new champion). Workers: BENTOML_CONFIG_OPTIONS="services.JobChance.workers=2"; the request timeout
(REQUEST_TIMEOUT_SECONDS): "services.JobChance.traffic.timeout=30".
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import bentoml
import pydantic_core
from bentoml.exceptions import UnprocessableEntity
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import FileResponse, Response

from bip.settings import load_settings
from serving.access import AccessControl, Authenticator, Sessions, principal_of, session_key
from serving.accounts import Directory
from serving.admin import create_admin_app
from serving.audit import AuditTrail, Event, GroupCommit, prediction_event
from serving.core import ModelUnavailable, Predictor, gc_paused
from serving.health import Health, Readiness, health
from serving.metrics import ServiceMetrics, exposition
from serving.page import PAGE_PATH, PageContext, create_app
from serving.process import quiet_client_errors, settle_collector
from serving.schemas import (
    MAX_BATCH_MEASUREMENTS,
    MAX_MEASUREMENTS,
    BatchPrediction,
    BatchRequest,
    CitizenHistory,
    ModelInfo,
    Prediction,
    PredictRequest,
)

KiB, MiB = 1024, 1024 * 1024
BODY_LIMITS: dict[str, int] = {
    "/predict": 1 * MiB,
    "/predict_batch": 64 * MiB,
    "/admin/retrain": 4 * KiB,
    "/admin/promote": 4 * KiB,
}
POLL_SECONDS = 5.0
# BentoML's timeout for any request (a 504 after it). Short on purpose: BentoML 1.4's TimeoutMiddleware
# schedules a timer per request and never cancels it, so each request's context (its OpenTelemetry span
# included, ~22 objects) stays alive this long; at 300 requests/s and the default 60 s the collector's full
# passes walked ~400,000 of them, 100-200 ms each, every 2-3 s (/predict p99 163-170 ms; 104-108 ms at 10 s,
# benchmarks/RESULTS-serving.md). The longest request, a 5,000-citizen batch, takes 1-2 s. A deployment may
# raise it: BENTOML_CONFIG_OPTIONS="services.JobChance.traffic.timeout=30".
REQUEST_TIMEOUT_SECONDS = 10

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class RequestLimits:
    """ASGI middleware for the JSON APIs in `limits`: a POST body must be JSON (415 otherwise), at
    most the path's limit (413), and arrive within `body_seconds()` (408: a client that sends less than
    its Content-Length would otherwise hold the request until BentoML's timeout answers 504, a server
    error for a client's mistake). Other paths (the caseworker page's forms) pass untouched.

    The body is read here, up to the limit, and replayed to the application, so a chunked upload
    without Content-Length cannot get past the limit either. On the `bulk` paths the garbage
    collector is paused for the whole request (see `core.gc_paused`): validating and scoring
    thousands of histories otherwise spends half its time in collections that find nothing.
    """

    def __init__(
        self,
        app: Any,
        limits: Mapping[str, int],
        body_seconds: Callable[[], float],
        bulk: frozenset[str] = frozenset(),
    ) -> None:
        self.app, self.limits, self.body_seconds, self.bulk = app, dict(limits), body_seconds, bulk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "").rstrip("/") or "/"
        if scope["type"] != "http" or scope["method"] != "POST" or path not in self.limits:
            await self.app(scope, receive, send)
            return
        limit = self.limits[path]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            said = f"not {media_type!r}" if media_type else "and the request names no Content-Type"
            message = f"the body must be JSON (Content-Type: application/json), {said}"
            await self._refuse(scope, receive, send, 415, message)
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(
                scope, receive, send, 413, f"the body is {int(declared)} bytes; {path} takes at most {limit}"
            )
            return
        chunks: list[bytes] = []
        seconds = self.body_seconds()
        try:
            async with asyncio.timeout(seconds):
                complete = await self._read(receive, chunks, limit)
        except TimeoutError:
            arrived = sum(map(len, chunks))
            expected = f"of {int(declared)} " if declared.isdigit() else ""
            message = f"the body did not arrive within {seconds:g} s ({arrived} {expected}bytes came)"
            await self._refuse(scope, receive, send, 408, message)
            return
        if complete is None:  # the client went away
            return
        if not complete:
            await self._refuse(scope, receive, send, 413, f"the body is over {limit} bytes, the limit of {path}")
            return
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
    async def _read(receive: Receive, chunks: list[bytes], limit: int) -> bool | None:
        """Read the body into `chunks`: True once whole, False as soon as it is over `limit` bytes,
        None if the client disconnected."""
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return False
            if not message.get("more_body", False):
                return True

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
        await JSONResponse({"error": message}, status_code=status)(scope, receive, send)


def unavailable(error: ModelUnavailable) -> Response:
    return JSONResponse({"error": str(error)}, status_code=503)


def _prediction_events(ctx: bentoml.Context, event: str, records: list[dict]) -> list[Event]:
    principal = principal_of(ctx.request.scope)
    return [prediction_event(principal, event, r) for r in records]


def _audit_failed(ctx: bentoml.Context, error: SQLAlchemyError) -> Response:
    logging.getLogger("bip.audit").error("audit store unavailable: %s", type(error).__name__)
    ctx.response.status_code = 503
    return JSONResponse({"error": "the audit store is unavailable: no prediction without its audit row"}, 503)


def access_log() -> None:
    """bip's access log (route templates, statuses, roles) to stderr: BentoML's logging set-up turns
    loggers it does not know off and sets the root to WARNING, so this one is set up here, at start."""
    import logging
    import sys

    log = logging.getLogger("bip.access")
    log.disabled, log.propagate = False, False
    log.setLevel(logging.INFO)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] [bip.access] %(message)s"))
        log.addHandler(handler)


def current_service() -> JobChance:
    """The running service (looked up per request, so the mounted apps can be built at import time)."""
    return bentoml.get_current_service()


def current_authenticator() -> Authenticator:
    return current_service().authenticator


def history_limits(histories: list[CitizenHistory]) -> None:
    """422 naming the field when a history or a batch holds more rounds than the service scores at once."""
    for i, history in enumerate(histories):
        if len(history.measurements) > MAX_MEASUREMENTS:
            where = f"citizens[{i}].measurements" if len(histories) > 1 else "measurements"
            raise UnprocessableEntity(f"{where}: at most {MAX_MEASUREMENTS} rounds per citizen")
    if sum(len(h.measurements) for h in histories) > MAX_BATCH_MEASUREMENTS:
        raise UnprocessableEntity(f"citizens: at most {MAX_BATCH_MEASUREMENTS} rounds in one batch")


# No redirect of a trailing slash: FastAPI's would build its Location from the client's Host header.
extra = FastAPI(
    title="bip job chance: model information", docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False
)
API_PAGE = Path(__file__).parent / "static" / "api.html"
API_PAGE_SCRIPT = Path(__file__).parent / "static" / "api-docs.js"
# The API page runs BentoML's own Swagger UI files and ours, and nothing from elsewhere.
API_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@extra.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
def api_page() -> Response:
    """The API page: BentoML's Swagger UI page, which loads a tag manager from Google into the browser of
    whoever opens it, replaced by the same page without it (serving/static/api.html)."""
    return FileResponse(API_PAGE, media_type="text/html", headers=API_PAGE_HEADERS)


@cache
def api_description() -> dict[str, Any]:
    """The API description the API page shows: /docs.json with BentoML's default text (badges drawn from
    img.shields.io and other sites, and its own links) replaced by the service's description."""
    spec = JobChance.openapi_spec.asdict()
    info = {
        **spec.get("info", {}),
        "title": "bip job chance",
        "description": " ".join((JobChance.inner.__doc__ or "").split()),
    }
    return {**spec, "info": info}


@extra.api_route("/api-docs.json", methods=["GET", "HEAD"], include_in_schema=False)
def api_page_description() -> Response:
    """The API page's API description (`api_description`)."""
    return JSONResponse(api_description(), headers=API_PAGE_HEADERS)


@extra.api_route("/api-docs.js", methods=["GET", "HEAD"], include_in_schema=False)
def api_page_script() -> Response:
    """Starts the API page's Swagger UI (as BentoML's does, with the online validator off)."""
    return FileResponse(API_PAGE_SCRIPT, media_type="text/javascript", headers=API_PAGE_HEADERS)


@bentoml.service(
    name="JobChance",
    traffic={"timeout": REQUEST_TIMEOUT_SECONDS},
    threads=4,
    resources={"cpu": "1", "memory": "2Gi"},
    # A declared env without a value is required by `bentoml serve`: only BIP_AUTH has a safe default.
    # The store and registry URLs come from the deployment (docs/deploy.md), or default to BIP_HOME.
    envs=[{"name": "BIP_AUTH", "value": "builtin"}],
    # BentoML's HTTP metrics and access log name raw paths (citizen ids): serving.access does both.
    metrics={"enabled": False},
    logging={"access": {"enabled": False}},
)
@bentoml.asgi_app(create_admin_app(), path="/admin", name="admin")
@bentoml.asgi_app(create_app(lambda: current_service().page_context()), path=PAGE_PATH, name="caseworker-page")
@bentoml.asgi_app(extra, path="/", name="model-info")
class JobChance:
    """The chance that a citizen on social assistance enters a job or education within 12 months,
    with the reasons (factors) behind it, from the quarterly progression measurements."""

    def __init__(self) -> None:
        os.umask(0o077)  # everything the service writes (store, secrets, job files) is private
        access_log()
        quiet_client_errors()  # a client's mistake is one WARNING line, not an ERROR with a traceback
        settings = load_settings()
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.audit = AuditTrail(settings.store_url, stdout=settings.audit_stdout)
        self.audit_commits = GroupCommit(self.audit, on_commit=self.metrics.audit_committed)
        self.directory = directory = Directory(settings.store_url) if settings.auth != "off" else None
        sessions = Sessions(session_key(settings), int(settings.session_hours * 3600), settings.cookie_secure)
        self.sessions = sessions
        self.authenticator = Authenticator(settings, directory, sessions)
        self.predictor = Predictor(settings, on_check=self.metrics.model_checked)
        self.poll_seconds = float(os.environ.get("BIP_MODEL_POLL_SECONDS", POLL_SECONDS))
        self.predictor.start(poll_seconds=self.poll_seconds)
        # What the caseworker page needs, made once (the page asks for it on every request).
        self.page = PageContext(self.predictor, settings, self.audit, sessions, self.metrics, directory)
        # What is loaded by now lives as long as the process: out of the collector's sight, and full
        # collections rarer (serving.process.settle_collector); their pauses go to /metrics.
        settle_collector(settings.gc_full_threshold)
        self.metrics.watch_collections()

    def __is_ready__(self) -> bool:
        return self.predictor.ready

    def page_context(self) -> PageContext:
        return self.page

    @bentoml.on_shutdown
    def close(self) -> None:
        self.predictor.stop()

    def _audited(self, ctx: bentoml.Context, event: str, records: list[dict]) -> Response | None:
        """Write the predictions' audit rows; a 503 to answer instead when the store cannot take them
        (no prediction leaves unaudited; the log names the failure's kind, never its SQL parameters)."""
        try:
            self.audit.append(_prediction_events(ctx, event, records))
        except SQLAlchemyError as error:
            return _audit_failed(ctx, error)
        self.metrics.predicted(records[0]["model"]["version"], event, len(records))
        return None

    async def _audited_together(self, ctx: bentoml.Context, event: str, records: list[dict]) -> Response | None:
        """`_audited` on the event loop, the rows committed together with those of the requests
        waiting beside this one (`serving.audit.GroupCommit`)."""
        try:
            await self.audit_commits.append(_prediction_events(ctx, event, records))
        except SQLAlchemyError as error:
            return _audit_failed(ctx, error)
        self.metrics.predicted(records[0]["model"]["version"], event, len(records))
        return None

    @bentoml.api(route="/predict")
    async def predict(self, history: PredictRequest, /, ctx: bentoml.Context) -> Prediction:
        """The calibrated probability of a job or education within 12 months for one citizen's
        history, with the factors behind it on the log-odds scale (largest first)."""
        # On the event loop, not in BentoML's thread pool: the work is a millisecond or two of CPU
        # (features, two XGBoost calls, the audit row), and handing each request to a worker thread
        # and back made the GIL the scheduler: under 16 connections p99 was 2-7x p50, now about 1.7x
        # (benchmarks/RESULTS-serving.md, "async /predict"). /predict_batch, up to a second, stays in
        # the pool.
        history_limits([history])
        try:
            records = self.predictor.predict_records([history], history.feature_contributions)
        except ModelUnavailable as error:
            ctx.response.status_code = 503  # BentoML answers with the context's status, not the response's
            return unavailable(error)  # type: ignore[return-value]
        if (refused := await self._audited_together(ctx, "api_predict", records)) is not None:
            return refused  # type: ignore[return-value]
        return Prediction.model_validate(records[0])

    @bentoml.api(route="/predict_batch")
    def predict_batch(self, batch: BatchRequest, /, ctx: bentoml.Context) -> BatchPrediction:
        """`/predict` for many citizens at once, in the order given (one model call)."""
        history_limits(batch.citizens)
        try:
            records = self.predictor.predict_records(batch.citizens)
        except ModelUnavailable as error:
            ctx.response.status_code = 503
            return unavailable(error)  # type: ignore[return-value]
        if (refused := self._audited(ctx, "api_predict_batch", records)) is not None:
            return refused  # type: ignore[return-value]
        # Thousands of explanations: written straight to JSON (in Rust) rather than built as models first.
        body = pydantic_core.to_json({"model": records[0]["model"], "predictions": records})
        return Response(body, media_type="application/json")  # type: ignore[return-value]

    @extra.api_route(
        "/model",
        methods=["GET", "HEAD"],
        response_model=ModelInfo,
        responses={503: {"description": "No model loaded yet."}},
    )
    def model(self) -> Any:
        """The model being served: name, version, alias, training-data fingerprint, headline
        metrics, the feature catalogue (Danish and English labels) and how fresh the registry's word is."""
        try:
            info = self.predictor.model_info()
        except ModelUnavailable as error:
            return unavailable(error)
        return info.model_copy(
            update={
                "registry_checked_seconds_ago": self.health().registry_seconds,
                "model_card_url": f"{PAGE_PATH}/model#card",
            }
        )

    def health(self) -> Health:
        """What /readyz reports: the model, the store, the registry."""
        return health(self.predictor, self.settings.store_url, self.poll_seconds)

    @extra.api_route("/metrics", methods=["GET", "HEAD"], include_in_schema=False)
    def prometheus(self, request: Request) -> Response:
        """The service's metrics for Prometheus (a role is needed: serving.access)."""
        body, content_type = exposition()
        return Response(body, media_type=content_type)


JobChance.add_asgi_middleware(
    AccessControl, authenticator=current_authenticator, metrics=lambda: current_service().metrics
)
JobChance.add_asgi_middleware(Readiness, health=lambda: current_service().health())
JobChance.add_asgi_middleware(
    RequestLimits,
    limits=BODY_LIMITS,
    body_seconds=lambda: current_service().settings.body_seconds,
    bulk=frozenset({"/predict_batch"}),
)
