"""The service's garbage collector: settled once at start (startup's garbage collected, the rest frozen,
full collections rarer), and every full collection's pause recorded in /metrics."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import uuid

import prometheus_client as prom

from serving.metrics import ServiceMetrics

SETTLE = """
import gc, json, weakref
from serving.process import settle_collector

class Node:
    pass

def garbage_cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)

gc.disable()  # nothing collects the cycle before settle_collector does
cycle = garbage_cycle()
kept = [Node() for _ in range(100)]
gc.enable()
settle_collector(1234)
print(json.dumps({
    "threshold": gc.get_threshold(),
    "frozen": gc.get_freeze_count(),
    "cycle_collected": cycle() is None,
    "kept_frozen": not any(gc.is_tracked(n) and n in gc.get_objects(generation=2) for n in kept[:3]),
}))
"""


def test_settle_collector_collects_startups_garbage_freezes_the_rest_and_raises_the_full_threshold():
    # In a process of its own: freezing and thresholds are global to the interpreter.
    out = subprocess.run([sys.executable, "-c", SETTLE], capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    young, middle, full = result["threshold"]
    assert (young, middle) == tuple(gc.get_threshold()[:2]) and full == 1234
    assert result["cycle_collected"], "an unreachable cycle from startup was frozen instead of collected"
    assert result["frozen"] > 1000 and result["kept_frozen"]


def test_full_collections_are_timed_into_the_metrics_by_the_next_request():
    namespace = f"test_{uuid.uuid4().hex[:8]}"
    metrics = ServiceMetrics(namespace)
    count = f"{namespace}_gc_full_collection_seconds_count"
    total = f"{namespace}_gc_full_collection_seconds_sum"
    metrics.watch_collections()
    try:
        gc.collect(1)  # a young collection is not a full one
        gc.collect()
        gc.collect()
        assert prom.REGISTRY.get_sample_value(count) == 0  # noted, not yet observed: no metric lock in gc
        metrics.observe("GET", "/livez", 200, 0.001)
        assert prom.REGISTRY.get_sample_value(count) == 2
        assert prom.REGISTRY.get_sample_value(total) > 0
        metrics.observe("GET", "/livez", 200, 0.001)
        assert prom.REGISTRY.get_sample_value(count) == 2
    finally:
        gc.callbacks.remove(metrics._collection)
