"""What one camera sends to Redis: batched into one round trip, counted and dropped while Redis
is down (with capped backoff), face crops trimmed to their retention, and crops shed while the
face workers lag beyond the bound (instead of growing the stream)."""

from __future__ import annotations

import logging
import time

import redis

from liveness.config import Settings
from liveness.contract import EyeSample, FaceCrop, Keys
from liveness.ingest import metrics
from liveness.redisconn import failure

log = logging.getLogger(__name__)

TRIM_EVERY_S = 1.0
"""How often ingest trims face crops older than the retention, seconds."""

OUTBOX_MAX = 64
"""Messages held before a write to Redis is forced."""

OUTBOX_MAX_AGE_S = 0.02
"""Longest a message waits for company when frames arrive faster than Redis round trips.

Messages go out as soon as no frame is waiting, so at camera rates every frame is flushed
at once and batching only happens when ingest is behind (or a file plays with --fast)."""


class Publisher:
    """Holds one camera's messages and writes them to Redis."""

    def __init__(self, client: redis.Redis, settings: Settings, camera_id: str) -> None:
        self.redis = client
        self.settings = settings
        self.keys = Keys(settings.prefix)
        self.camera_id = camera_id
        self.metrics = metrics.CameraMetrics.of(camera_id)
        self.who = f"ingest {camera_id}"
        self.shedding = False
        """The face workers lag beyond ``streams.max_face_lag``: crops are not sent."""
        self._outbox: list[FaceCrop | EyeSample] = []
        self._outbox_since = 0.0
        self._next_trim = 0.0
        self._retry_at = 0.0
        self._backoff = 0.1

    def add(self, messages: list[FaceCrop | EyeSample], more: bool) -> None:
        """Queue a frame's messages; they go out at once unless another frame is waiting (``more``)
        and the batch is neither full nor old."""
        if not self._outbox:
            self._outbox_since = time.monotonic()
        self._outbox.extend(messages)
        if not more or len(self._outbox) >= OUTBOX_MAX or time.monotonic() - self._outbox_since >= OUTBOX_MAX_AGE_S:
            self.flush()

    def flush(self) -> None:
        """XADD every waiting message in one round trip; while Redis is down, count and drop."""
        messages, self._outbox = self._outbox, []
        if not messages:
            return
        t0 = time.perf_counter()
        self._publish(messages)
        self.metrics.publish_seconds.observe(time.perf_counter() - t0)

    @property
    def backing_off(self) -> bool:
        """A write failed a moment ago: no read or write is tried before the backoff ends."""
        return time.monotonic() < self._retry_at

    def check_lag(self) -> None:
        """Shed crops while the face workers lag beyond the bound; RedisError when Redis does not answer."""
        try:
            groups = self.redis.xinfo_groups(self.keys.stream(FaceCrop))
        except redis.ResponseError:
            groups = []  # the stream is not created yet
        group = self.keys.group("face-workers")
        lag = next((g.get("lag") for g in groups if g.get("name", b"").decode() == group), None)
        shedding = lag is not None and lag > self.settings.streams.max_face_lag
        if shedding != self.shedding:
            log.warning("%s: face workers lag %s messages; %s crops", self.who, lag, "shedding" if shedding else "resuming")
        self.shedding = shedding

    def _publish(self, messages: list[FaceCrop | EyeSample]) -> None:
        cam = self.camera_id
        now = time.monotonic()
        if now < self._retry_at:
            metrics.PUBLISH_ERRORS.labels(cam).inc(len(messages))
            return
        maxlen = self.settings.streams.maxlen
        pipe = self.redis.pipeline(transaction=False)
        for msg in messages:
            pipe.xadd(self.keys.stream(msg), msg.to_fields(), maxlen=maxlen, approximate=True)
        if now >= self._next_trim:
            self._next_trim = now + TRIM_EVERY_S
            min_id = int((time.time() - self.settings.streams.crop_retention_s) * 1000)
            pipe.xtrim(self.keys.stream(FaceCrop), minid=min_id, approximate=True)
        try:
            pipe.execute()
        except redis.RedisError as e:
            metrics.PUBLISH_ERRORS.labels(cam).inc(len(messages))
            log.warning("%s: Redis write failed (%s); retrying in %.1f s", self.who, failure(e, self.settings.redis.url),
                        self._backoff)
            self._retry_at = now + self._backoff
            self._backoff = min(self._backoff * 2, 5.0)
            return
        if self._backoff > 0.1:
            log.info("%s: Redis writes resumed", self.who)
        self._backoff = 0.1
        for msg in messages:
            metrics.PUBLISHED.labels(cam, msg.stream).inc()
            if isinstance(msg, FaceCrop):
                self.metrics.crops_published.inc()
            elif msg.window is not None:
                self.metrics.windows_published.inc()
