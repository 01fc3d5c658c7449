"""Serving Prometheus metrics: each process takes the first free port from the configured one."""

from __future__ import annotations

import logging

from prometheus_client import Histogram, start_http_server

from liveness.config import MetricsSettings
from liveness.errors import LivenessError

log = logging.getLogger(__name__)

STAGE_LATENCY = Histogram(
    "liveness_stage_latency_seconds", "Time between the timestamps two pipeline stages put on a message", ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
"""Shared by every service: stages are capture_to_ingest, ingest_to_<model>_score, score_to_fusion."""

PORT_SPAN = 200
"""How many ports after the configured one a process may try."""


def serve(settings: MetricsSettings, who: str, port: int | None = None) -> int | None:
    """Start /metrics on ``port`` (or the first free one from ``settings.port``); return the port.

    Returns None when metrics are disabled (port 0).
    """
    first = settings.port if port is None else port
    if first == 0:
        return None
    last = first if port is not None else first + PORT_SPAN
    for candidate in range(first, last + 1):
        try:
            start_http_server(candidate, addr=settings.host)
        except OSError:
            continue
        log.info("%s: metrics on http://%s:%d/metrics", who, settings.host, candidate)
        return candidate
    span = f"port {first} is" if first == last else f"ports {first}..{last} are"
    raise LivenessError(f"{who}: metrics {span} in use (set metrics.port, or 0 to disable)")
