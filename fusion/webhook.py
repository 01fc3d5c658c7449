"""Optional webhook: POST each decision as JSON, retried with backoff, off the consumer thread."""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.request
from dataclasses import asdict

from fusion import metrics
from liveness.contract import Decision
from liveness.redaction import redact_url

log = logging.getLogger(__name__)

RETRIES = 4
"""Attempts per decision before it is counted as failed."""

QUEUE_MAX = 10_000
"""Decisions waiting for the webhook; beyond this they are counted as failed, not buffered."""


class Webhook:
    """Sends decisions to ``url`` from a background thread; a no-op when ``url`` is None."""

    def __init__(self, url: str | None, stop: threading.Event, timeout_s: float = 5.0) -> None:
        self.url = url
        self.stop = stop
        self.timeout_s = timeout_s
        self._queue: queue.Queue[Decision | None] = queue.Queue(QUEUE_MAX)
        self._thread: threading.Thread | None = None
        if url:
            self._thread = threading.Thread(target=self._loop, name="webhook", daemon=True)
            self._thread.start()

    def send(self, decision: Decision) -> None:
        if not self.url:
            return
        try:
            self._queue.put_nowait(decision)
        except queue.Full:
            metrics.WEBHOOK_FAILURES.inc()

    def _loop(self) -> None:
        while True:
            decision = self._queue.get()
            if decision is None:
                return
            body = json.dumps(asdict(decision)).encode()
            delay = 0.5
            for attempt in range(RETRIES):
                try:
                    req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})  # type: ignore[arg-type]
                    with urllib.request.urlopen(req, timeout=self.timeout_s):
                        break
                except OSError as e:
                    if attempt == RETRIES - 1:
                        metrics.WEBHOOK_FAILURES.inc()
                        log.warning("webhook %s: decision for %s not delivered (%s)", redact_url(self.url or ""),
                                    decision.track, type(e).__name__)
                    elif self.stop.wait(delay):
                        break
                    delay *= 2

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
