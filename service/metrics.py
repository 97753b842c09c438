"""Prometheus metrics, correct across gunicorn workers.

With PROMETHEUS_MULTIPROC_DIR set before this module is imported (`rul serve` sets it to a
fresh folder and tells gunicorn to mark dead workers), every worker writes its samples to files
there and `GET /metrics` aggregates all of them; without it (one process, tests), the default
registry is used. Routes are labelled by template (`/v1/assets/{asset_id}/readings`), never by
raw path (falcon's matched template), so asset ids cannot blow up the number of series.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics import MetricWrapperBase

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

REQUESTS = Counter("rul_http_requests", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram("rul_http_request_duration_seconds", "Time to answer an HTTP request",
                    ["method", "route"], buckets=_LATENCY_BUCKETS)
INFERENCE = Histogram("rul_inference_seconds", "Time of one onnxruntime run", ["model"],
                      buckets=_LATENCY_BUCKETS)
WINDOWS = Counter("rul_inference_windows", "Windows predicted", ["model"])
READINGS = Counter("rul_readings_stored", "Readings stored")
ALERTS_RAISED = Counter("rul_alerts_raised", "Alerts raised (threshold crossings)")
ALERTS = Counter("rul_alert_deliveries", "Webhook deliveries by outcome", ["outcome"])

_CHILDREN: dict[tuple[int, tuple[str, ...]], MetricWrapperBase] = {}
"""Labelled children by (metric, label values): see `_child`."""


def _child(metric: MetricWrapperBase, *labels: str) -> MetricWrapperBase:
    """`metric.labels(*labels)`, looked up once per label set: prometheus_client's own lookup
    (validation, a lock) cost a single prediction ~4 us per metric."""
    key = (id(metric), labels)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*labels)
    return child


def observe_request(method: str, route: str | None, status: int, seconds: float) -> None:
    """One answered request; `route` is the matched route's template (None: no route)."""
    route = route or "unmatched"
    _child(REQUESTS, method, route, str(status)).inc()
    _child(LATENCY, method, route).observe(seconds)


def observe_inference(model: str, windows: int, seconds: float) -> None:
    _child(INFERENCE, model).observe(seconds)
    _child(WINDOWS, model).inc(windows)


def observe_delivery(outcome: str) -> None:
    ALERTS.labels(outcome).inc()


def exposition() -> bytes:
    """The text format of every worker's metrics together."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def mark_worker_dead(pid: int) -> None:
    """gunicorn's child_exit hook: fold a dead worker's live samples away."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)
