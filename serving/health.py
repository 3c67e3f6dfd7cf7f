"""Readiness that names what is down: the model, the store, the registry.

BentoML's own /readyz answers a bare 503; `Readiness` answers GET /readyz itself with what was
checked, so that an orchestrator's probe and a person both see why a replica is out. A replica is
ready when it has a model and its store answers (predictions are audited in the store). A registry
that stops answering does not make it unready: the loaded champion keeps serving, and how long ago
the registry last answered is reported here, in GET /model and in the metrics.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import JSONResponse

from features import store
from serving.core import Predictor

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
STALE_POLLS = 3  # the registry is "unreachable" after this many polls without an answer


@dataclass(frozen=True)
class Health:
    ready: bool
    model: str  # "version N" or "none"
    store: str  # "ok" or "down"
    registry: str  # "ok", "unreachable" or "not polled"
    registry_seconds: float | None  # since the registry last answered

    def problems(self) -> list[str]:
        found = [] if self.model != "none" else ["no champion model loaded"]
        found += [] if self.store == "ok" else ["the measurement store does not answer"]
        found += [] if self.registry != "unreachable" else ["the model registry does not answer"]
        return found


def store_answers(url: str) -> bool:
    try:
        with store.engine(url).connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError:
        return False


def health(predictor: Predictor, store_url: str, poll_seconds: float) -> Health:
    """The replica's health now (one cheap query on the store)."""
    loaded = predictor.current()
    ago = None if predictor.checked_at is None else max(0.0, time.time() - predictor.checked_at)
    if poll_seconds <= 0:
        registry = "not polled"
    elif ago is None or ago > STALE_POLLS * poll_seconds + 5:
        registry = "unreachable"
    else:
        registry = "ok"
    store_state = "ok" if store_answers(store_url) else "down"
    model = f"version {loaded.version}" if loaded is not None else "none"
    return Health(loaded is not None and store_state == "ok", model, store_state, registry, ago)


class Readiness:
    """ASGI middleware answering GET /readyz with the replica's Health (200 ready, 503 not)."""

    def __init__(self, app: Any, health: Callable[[], Health]) -> None:
        self.app, self.health = app, health

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/readyz" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        from starlette.concurrency import run_in_threadpool

        state = await run_in_threadpool(self.health)
        body = {**asdict(state), "problems": state.problems()}
        await JSONResponse(body, status_code=200 if state.ready else 503)(scope, receive, send)
