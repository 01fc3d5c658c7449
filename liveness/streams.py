"""The consumer loop every worker and fusion shares, on Redis Streams consumer groups.

``StreamConsumer.run()``: stop flag -> reclaim stale entries (XAUTOCLAIM) -> XREADGROUP ->
``handle(batch)`` -> acknowledge. Subclasses override only ``handle()``, which returns the
writes to commit; results and the XACK go out in one MULTI/EXEC, so a message is either
fully done or will be delivered again. Messages delivered too often, or undecodable, go to
the dead-letter stream with their reason.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import redis
from prometheus_client import Counter, Gauge, Histogram

from liveness.contract import Keys
from liveness.redisconn import wait_until_up

log = logging.getLogger(__name__)

PROCESSED = Counter("liveness_messages_processed_total", "Stream messages handled and acknowledged", ["group"])
RECLAIMED = Counter("liveness_messages_reclaimed_total", "Messages taken over from a dead or stuck consumer", ["group"])
DEAD = Counter("liveness_messages_dead_lettered_total", "Messages moved to a dead-letter stream", ["group", "reason"])
BATCH = Histogram("liveness_batch_size", "Messages per handled batch", ["group"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
HANDLE_SECONDS = Histogram("liveness_handle_seconds", "Time to handle one batch", ["group"],
                           buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
LAG = Gauge("liveness_consumer_lag", "Entries not yet delivered to the group", ["group"])
PENDING = Gauge("liveness_consumer_pending", "Entries delivered but not acknowledged", ["group"])
HANDLE_ERRORS = Counter("liveness_handle_errors_total", "Batches that failed and were left for redelivery", ["group"])
REDIS_ERRORS = Counter("liveness_redis_errors_total", "Redis failures seen by a consumer", ["group"])

Entry = tuple[str, dict[bytes, bytes]]
"""(entry id, fields) of one stream entry."""
Write = Callable[[redis.client.Pipeline], None]

INFO_EVERY_S = 1.0
"""How often lag and pending are read from Redis, seconds."""

DEAD_REASON_MAX = 500
"""Longest reason stored with a dead-lettered message, characters."""


@dataclass
class Outcome:
    """What ``handle()`` decided: writes to commit, and entries to dead-letter with their reason."""

    writes: list[Write] = field(default_factory=list)
    dead: dict[str, str] = field(default_factory=dict)


def consumer_name(role: str) -> str:
    """A consumer name unique across machines: role, host and pid."""
    return f"{role}-{socket.gethostname()}-{os.getpid()}"


class StreamConsumer:
    """One consumer of one group on one stream; subclasses implement ``handle()``."""

    def __init__(self, client: redis.Redis, keys: Keys, stream: str | list[str], group: str, name: str, *,
                 batch_size: int = 16, block_ms: int = 20, min_idle_ms: int = 10_000, max_deliveries: int = 3,
                 dead_maxlen: int = 10_000, dead_retention_s: float | None = None,
                 stop: threading.Event | None = None, redis_url: str = "") -> None:
        self.redis = client
        self.keys = keys
        self.streams = [stream] if isinstance(stream, str) else list(stream)
        self.stream = self.streams[0]
        """The stream whose entries are being handled (a consumer may read several in one call)."""
        self.group = group
        self.name = name
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.min_idle_ms = min_idle_ms
        self.max_deliveries = max_deliveries
        self.dead_maxlen = dead_maxlen
        self.dead_retention_s = dead_retention_s
        self.stop = stop or threading.Event()
        self.redis_url = redis_url
        self._next_claim = 0.0
        self._next_info = 0.0
        self._claim_cursor = {name: "0-0" for name in self.streams}
        for family in (RECLAIMED, HANDLE_ERRORS, REDIS_ERRORS, PROCESSED):  # exported at 0 from the start
            family.labels(group)
        for reason in ("poison", "max_deliveries"):
            DEAD.labels(group, reason)

    def ensure_group(self) -> None:
        """Create the group (and stream) if missing; it starts from the stream's beginning."""
        for stream in self.streams:
            try:
                self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    def run(self) -> None:
        """Consume until ``stop`` is set; Redis outages are waited out, never fatal."""
        log.info("%s: consuming %s as %s/%s", self.name, ", ".join(self.streams), self.group, self.name)
        ready = False
        while not self.stop.is_set():
            try:
                if not ready:
                    self.ensure_group()
                    ready = True
                self.poll()
            except (redis.ConnectionError, redis.TimeoutError) as e:
                REDIS_ERRORS.labels(self.group).inc()
                log.warning("%s: Redis unavailable (%s)", self.name, type(e).__name__)
                ready = False
                wait_until_up(self.redis, self.name, self.redis_url, self.stop)
            except redis.ResponseError as e:
                REDIS_ERRORS.labels(self.group).inc()
                if "NOGROUP" in str(e):  # Redis restarted without its data: recreate
                    ready = False
                    continue
                log.error("%s: Redis error: %s", self.name, e)
                self.stop.wait(1.0)
        self.teardown()

    def poll(self) -> int:
        """One round: reclaim if due, read a batch from every stream, handle, commit. Returns entries handled."""
        now = time.monotonic()
        if now >= self._next_info:
            self._next_info = now + INFO_EVERY_S
            self._report_lag()
        handled = 0
        if now >= self._next_claim:
            self._next_claim = now + self.min_idle_ms / 4000.0
            for stream in self.streams:
                self.stream = stream
                entries = self.reclaim()
                if entries:
                    self.process(entries)
                    handled += len(entries)
        if handled:
            return handled
        reply = self.redis.xreadgroup(self.group, self.name, {s: ">" for s in self.streams}, count=self.batch_size,
                                      block=self.block_ms)
        for stream, msgs in reply or []:
            self.stream = _text(stream)
            entries = [(_text(i), f) for i, f in msgs]
            if entries:
                self.process(entries)
                handled += len(entries)
        return handled

    def reclaim(self) -> list[Entry]:
        """Take over entries idle longer than ``min_idle_ms``; dead-letter those delivered too often."""
        reply = self.redis.xautoclaim(self.stream, self.group, self.name, self.min_idle_ms,
                                      start_id=self._claim_cursor[self.stream], count=self.batch_size)
        cursor, claimed = reply[0], reply[1]
        self._claim_cursor[self.stream] = _text(cursor)
        entries = [(_text(i), f) for i, f in claimed if f is not None]
        if not entries:
            return []
        RECLAIMED.labels(self.group).inc(len(entries))
        pending = self.redis.xpending_range(self.stream, self.group, min=entries[0][0], max=entries[-1][0],
                                            count=len(entries) * 4, consumername=self.name)
        deliveries = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        keep: list[Entry] = []
        too_often: dict[str, str] = {}
        for entry_id, fields in entries:
            if deliveries.get(entry_id, 1) > self.max_deliveries:
                too_often[entry_id] = f"max_deliveries: delivered {deliveries[entry_id]} times without success"
            else:
                keep.append((entry_id, fields))
        if too_often:
            self.commit(Outcome(dead=too_often), [(i, f) for i, f in entries if i in too_often])
        log.info("%s: reclaimed %d entries (%d dead-lettered)", self.name, len(entries), len(too_often))
        return keep

    def process(self, entries: list[Entry]) -> None:
        """Handle and commit a batch; if ``handle`` fails, the batch stays pending for redelivery."""
        t0 = time.perf_counter()
        try:
            outcome = self.handle(entries)
        except redis.RedisError:
            raise
        except Exception as e:  # noqa: BLE001 - a bad batch must not stop the worker
            HANDLE_ERRORS.labels(self.group).inc()
            log.error("%s: batch of %d failed (%s: %s); left for redelivery", self.name, len(entries),
                      type(e).__name__, e)
            return
        self.commit(outcome, entries)
        BATCH.labels(self.group).observe(len(entries))
        HANDLE_SECONDS.labels(self.group).observe(time.perf_counter() - t0)

    def commit(self, outcome: Outcome, entries: list[Entry]) -> None:
        """Write results, dead letters and the XACK of every entry in one transaction."""
        pipe = self.redis.pipeline(transaction=True)
        self.queue_commit(pipe, outcome, entries)
        pipe.execute()
        PROCESSED.labels(self.group).inc(len(entries) - len(outcome.dead))

    def queue_commit(self, pipe: redis.client.Pipeline, outcome: Outcome, entries: list[Entry]) -> None:
        """Queue results, dead letters and the XACK on ``pipe`` (which the caller executes)."""
        for write in outcome.writes:
            write(pipe)
        fields_by_id = dict(entries)
        for entry_id, reason in outcome.dead.items():
            dead = {b"source_stream": self.stream.encode(), b"source_id": entry_id.encode(),
                    b"reason": reason[:DEAD_REASON_MAX].encode(), b"group": self.group.encode()}
            dead.update({b"f:" + k: v for k, v in fields_by_id.get(entry_id, {}).items()})
            pipe.xadd(self.keys.dead(self.stream), dead, maxlen=self.dead_maxlen, approximate=True)
            DEAD.labels(self.group, "max_deliveries" if reason.startswith("max_deliveries") else "poison").inc()
            log.warning("%s: dead-lettered %s: %s", self.name, entry_id, reason[:200])
        if outcome.dead and self.dead_retention_s:  # dead crops are biometric data too
            min_id = int((time.time() - self.dead_retention_s) * 1000)
            pipe.xtrim(self.keys.dead(self.stream), minid=min_id, approximate=False)
        pipe.xack(self.stream, self.group, *[i for i, _ in entries])

    def _report_lag(self) -> None:
        lag = pending = 0
        for stream in self.streams:
            try:
                groups = self.redis.xinfo_groups(stream)
            except redis.ResponseError:
                continue
            for g in groups:
                if _text(g.get("name", b"")) == self.group:
                    lag += g.get("lag") or 0
                    pending += g.get("pending") or 0
        LAG.labels(self.group).set(lag)
        PENDING.labels(self.group).set(pending)

    def handle(self, entries: list[Entry]) -> Outcome:
        """Process a batch; return what to write. Raise to leave the batch for redelivery."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Called once after the loop ends (the last batch is already acknowledged)."""
        log.info("%s: stopped", self.name)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
