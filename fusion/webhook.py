"""Optional webhook: POST each decision as JSON, retried with backoff, off the consumer thread (``run``)."""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.request
from dataclasses import asdict

from liveness.contract import Decision
from liveness.fusion import metrics
from liveness.redaction import redact_url

log = logging.getLogger(__name__)

RETRIES = 4
"""Attempts per decision before it is counted as failed."""

QUEUE_MAX = 10_000
"""Decisions waiting for the webhook; beyond this they are counted as failed, not buffered."""


class Webhook:
    """Queues decisions for ``run()``, which sends them to ``url``; a no-op when ``url`` is None."""

    def __init__(self, url: str | None, stop: threading.Event, timeout_s: float = 5.0) -> None:
        self.url = url
        self.stop = stop
        self.timeout_s = timeout_s
        self._queue: queue.Queue[Decision] = queue.Queue(QUEUE_MAX)
        self._closed = threading.Event()

    def send(self, decision: Decision) -> None:
        if not self.url:
            return
        try:
            self._queue.put_nowait(decision)
        except queue.Full:
            metrics.WEBHOOK_FAILURES.inc()

    def run(self) -> None:
        """Deliver queued decisions until ``close()``, and then those still queued (once ``stop`` is set,
        with one try each)."""
        while True:
            try:
                decision = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._closed.is_set():
                    return
                continue
            self._deliver(decision)

    def _deliver(self, decision: Decision) -> None:
        body = json.dumps(asdict(decision)).encode()
        delay = 0.5
        for attempt in range(RETRIES):
            try:
                # ignored below: self.url is set, run() delivers nothing without one
                req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})  # type: ignore[arg-type]
                with urllib.request.urlopen(req, timeout=self.timeout_s):
                    return
            except OSError as e:
                if attempt == RETRIES - 1:
                    metrics.WEBHOOK_FAILURES.inc()
                    log.warning("webhook %s: decision for %s not delivered (%s)", redact_url(self.url or ""),
                                decision.track, type(e).__name__)
                elif self.stop.wait(delay):
                    return
                delay *= 2

    def close(self) -> None:
        """Ask ``run()`` to return once the queue is empty."""
        self._closed.set()
