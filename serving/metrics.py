"""The service's Prometheus metrics, labelled by route template and model version, never by raw path.

BentoML's own HTTP metrics label requests by their raw path, which can hold a citizen id and grows a
new series for every made-up path; the service turns them off (`metrics={"enabled": False}`) and
counts here instead, from `serving.access.AccessControl`, where the route template is known. The
metrics are made with prometheus_client when the service starts (a BentoML worker sets
PROMETHEUS_MULTIPROC_DIR first, so that several workers add up), and `exposition()` renders them with
BentoML's multiprocess-aware client for GET /metrics.
"""

from __future__ import annotations

import gc
import time
from typing import Any

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PAUSE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class ServiceMetrics:
    """The counters, histograms and gauges of one service process."""

    def __init__(self, namespace: str = "bip") -> None:
        import prometheus_client as prom

        self.requests = prom.Counter(
            "http_requests",
            "Requests by method, route template and status.",
            ["method", "route", "status"],
            namespace=namespace,
        )
        self.latency = prom.Histogram(
            "http_request_seconds", "Request time by route template.", ["route"], namespace=namespace, buckets=BUCKETS
        )
        self.predictions = prom.Counter(
            "predictions",
            "Citizens scored, by model version and caller kind.",
            ["version", "kind"],
            namespace=namespace,
        )
        self.page_events = prom.Counter(
            "page_events", "Page views, searches and assessments by kind.", ["kind"], namespace=namespace
        )
        self.audit_commit_rows = prom.Histogram(
            "audit_commit_rows",
            "Audit rows written per commit of /predict's group commit (requests served together).",
            namespace=namespace,
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.load_failures = prom.Counter(
            "model_load_failures", "Failed looks at the registry or failed model loads.", namespace=namespace
        )
        self.served_version = prom.Gauge(
            "model_version_served",
            "The registered version being served (0: none).",
            namespace=namespace,
            multiprocess_mode="max",
        )
        self.last_check = prom.Gauge(
            "model_check_timestamp_seconds",
            "When the registry last answered a look for the champion (Unix time).",
            namespace=namespace,
            multiprocess_mode="max",
        )

        self.full_collections = prom.Histogram(
            "gc_full_collection_seconds",
            "Python's full garbage collections in the service, by how long each held the worker's requests.",
            namespace=namespace,
            buckets=PAUSE_BUCKETS,
        )
        self._pauses: list[float] = []  # timed by the collector's callback, observed by the next request
        self._full_started: float | None = None

    def watch_collections(self) -> None:
        """Time every full garbage collection of this process into `gc_full_collection_seconds`.

        The collector's callback only notes the time: a metric's lock may be held by the very code whose
        allocation started the collection, so the next request (`observe`) records it."""
        gc.callbacks.append(self._collection)

    def _collection(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._full_started = time.perf_counter()
        elif self._full_started is not None:
            self._pauses.append(time.perf_counter() - self._full_started)
            self._full_started = None

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        while self._pauses:
            self.full_collections.observe(self._pauses.pop())

    def predicted(self, version: str, kind: str, n: int = 1) -> None:
        self.predictions.labels(version, kind).inc(n)

    def audit_committed(self, rows: int) -> None:
        self.audit_commit_rows.observe(rows)

    def page(self, kind: str) -> None:
        self.page_events.labels(kind).inc()

    def model_checked(self, ok: bool, version: str | None) -> None:
        """After a look at the registry: when it answered, what is served, or one more failure."""
        if ok:
            self.last_check.set(time.time())
        else:
            self.load_failures.inc()
        if version is not None and version.isdigit():
            self.served_version.set(int(version))


def exposition() -> tuple[bytes, str]:
    """The metrics of every worker in Prometheus' text format, and its content type."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    client: Any = BentoMLContainer.metrics_client.get()
    return client.generate_latest(), client.CONTENT_TYPE_LATEST
