"""The consumer loop every worker and fusion shares, on Redis Streams consumer groups.

``StreamConsumer.run()``: stop flag -> reclaim stale entries (XAUTOCLAIM) -> XREADGROUP ->
``handle(batch)`` -> commit. Subclasses override ``handle()``, which returns the writes to
commit (and ``repair()`` if they keep state of their own in Redis); results and the XACK go out
in one MULTI/EXEC, so a message is either fully done or will be delivered again. A handler whose result depends on keys it reads calls ``watch()``
before reading them: if another process changes them before the commit, the batch is handled
again (optimistic locking, as redis-py's ``Redis.transaction``).

Every failure ends in a dead letter or in the end of the process, never in a consumer that
silently stopped. A message that cannot be processed is dead-lettered by ``handle()`` with its
reason; one delivered too often is dead-lettered here. An exception out of ``handle()`` is a
fault of the consumer, not of a message: it ends ``run()``, and with it the process
(``liveness.lifecycle.Crew`` for a consumer in a thread), so the supervisor restarts it; the batch stays pending and is
handled again, one entry at a time, until ``max_deliveries``. Redis outages are waited out.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, cast

import redis
from prometheus_client import Counter, Gauge, Histogram

from liveness.contract import Keys
from liveness.heartbeat import Beacon
from liveness.redisconn import wait_until_up

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

log = logging.getLogger(__name__)

PROCESSED = Counter("liveness_messages_processed_total", "Stream messages handled and acknowledged", ["group"])
RECLAIMED = Counter("liveness_messages_reclaimed_total", "Messages taken over from a dead or stuck consumer", ["group"])
DEAD = Counter("liveness_messages_dead_lettered_total", "Messages moved to a dead-letter stream", ["group", "reason"])
BATCH = Histogram("liveness_batch_size", "Messages per handled batch", ["group"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
HANDLE_SECONDS = Histogram("liveness_handle_seconds", "Time to handle one batch", ["group"],
                           buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
LAG = Gauge("liveness_consumer_lag", "Entries not yet delivered to the group", ["group"])
PENDING = Gauge("liveness_consumer_pending", "Entries delivered but not acknowledged", ["group"])
CONFLICTS = Counter("liveness_watch_conflicts_total", "Batches handled again because a watched key changed", ["group"])
REDIS_ERRORS = Counter("liveness_redis_errors_total", "Redis failures seen by a consumer", ["group"])
OUT_OF_MEMORY = Counter("liveness_redis_out_of_memory_total",
                        "Commits Redis refused for want of memory (maxmemory); the batch is held and committed later",
                        ["group"])

Entry = tuple[str, dict[bytes, bytes]]
"""(entry id, fields) of one stream entry."""
RawEntry = tuple[bytes, dict[bytes, bytes]]
"""A stream entry as the client reads it. ``connect()`` leaves replies undecoded, which redis-py's
annotations (bytes or text, RESP2 or RESP3) cannot know: read replies are cast to this."""
ReadReply = list[tuple[bytes, list[RawEntry]]]
"""An XREAD or XREADGROUP reply (RESP2): (stream, entries) per stream."""
Write = Callable[[redis.client.Pipeline], None]
Failed = list[tuple[tuple[Any, ...], redis.ResponseError]]
"""(command arguments, error) of each write that Redis refused in a committed transaction."""

INFO_EVERY_S = 1.0
"""How often lag and pending are read from Redis, seconds."""

DEAD_REASON_MAX = 500
"""Longest reason stored with a dead-lettered message, characters."""

DEAD_REASONS = ("poison", "corrupt_state", "error", "max_deliveries")
"""Kinds of dead letter, the ``reason`` label: a reason starts with its kind and a colon."""

WATCH_RETRIES = 20
"""Attempts at a batch while other processes keep changing the keys it watches."""

OOM_RETRY_S = 1.0
"""Longest wait between two commits of a batch that Redis refused for want of memory, seconds."""


@dataclass
class Outcome:
    """What ``handle()`` decided: writes to commit, entries to dead-letter with their reason, and
    effects for after the commit (metrics, notifications), so a batch handled twice counts once."""

    writes: list[Write] = field(default_factory=list)
    dead: dict[str, str] = field(default_factory=dict)
    after: list[Callable[[], None]] = field(default_factory=list)


def consumer_name(role: str) -> str:
    """A consumer name unique across machines: role, host and pid."""
    return f"{role}-{socket.gethostname()}-{os.getpid()}"


class StreamConsumer:
    """One consumer of one group on one stream; subclasses implement ``handle()``."""

    def __init__(self, client: redis.Redis, keys: Keys, stream: str | list[str], group: str, name: str, *,
                 batch_size: int = 16, block_ms: int = 20, min_idle_ms: int = 10_000, max_deliveries: int = 3,
                 dead_maxlen: int = 10_000, dead_retention_s: float | None = None,
                 stop: threading.Event | None = None, redis_url: str = "", beacon: Beacon | None = None) -> None:
        self.redis = client
        self.keys = keys
        self.streams = [stream] if isinstance(stream, str) else list(stream)
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
        self.beacon = beacon
        """The process's heartbeat: ``ready`` once the consumer has read from its group, renewed every round."""
        self._next_claim = 0.0
        self._next_info = 0.0
        self._claim_cursor = {name: "0-0" for name in self.streams}
        self._pipe: redis.client.Pipeline | None = None
        for family in (RECLAIMED, CONFLICTS, REDIS_ERRORS, PROCESSED):  # exported at 0 from the start
            family.labels(group)
        for reason in DEAD_REASONS:
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
        """Consume until ``stop`` is set; Redis outages are waited out, a failing handler is raised."""
        log.info("%s: consuming %s as %s/%s", self.name, ", ".join(self.streams), self.group, self.name)
        ready = False
        while not self.stop.is_set():
            try:
                if not ready:
                    self.ensure_group()
                    ready = True
                self.poll()
                if self.beacon is not None:
                    self.beacon.beat("ready")
            except (redis.ConnectionError, redis.TimeoutError) as e:
                REDIS_ERRORS.labels(self.group).inc()
                log.warning("%s: Redis unavailable (%s)", self.name, type(e).__name__)
                ready = False
                wait_until_up(self.redis, self.name, self.redis_url, self.stop)
            except redis.OutOfMemoryError:
                REDIS_ERRORS.labels(self.group).inc()
                log.warning("%s: Redis out of memory (maxmemory reached); waiting", self.name)
                self.stop.wait(OOM_RETRY_S)
            except redis.ResponseError as e:
                REDIS_ERRORS.labels(self.group).inc()
                if "NOGROUP" in str(e):  # Redis restarted without its data: recreate
                    ready = False
                    continue
                log.error("%s: Redis error: %s", self.name, e)
                self.stop.wait(1.0)
            except Exception as e:
                log.critical("%s: %s: %s; the consumer stops, its batch stays pending", self.name,
                             type(e).__name__, e)
                raise
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
                # delivered before and not acknowledged: one at a time, so an entry whose batch
                # ended its consumer takes no other entry with it
                for entry in self.reclaim(stream):
                    self.process(stream, [entry])
                    handled += 1
        if handled:
            return handled
        reply = cast(ReadReply | None, self.redis.xreadgroup(
            self.group, self.name, {s: ">" for s in self.streams}, count=self.batch_size, block=self.block_ms))
        for read_from, msgs in reply or []:
            entries = [(_text(i), f) for i, f in msgs]
            if entries:
                self.process(_text(read_from), entries)
                handled += len(entries)
        return handled

    def reclaim(self, stream: str) -> list[Entry]:
        """Take over entries of ``stream`` idle longer than ``min_idle_ms``; dead-letter those delivered too often."""
        reply = self.redis.xautoclaim(stream, self.group, self.name, self.min_idle_ms,
                                      start_id=self._claim_cursor[stream], count=self.batch_size)
        cursor, claimed = reply[0], reply[1]
        self._claim_cursor[stream] = _text(cursor)
        entries = [(_text(i), f) for i, f in claimed if f is not None]
        if not entries:
            return []
        RECLAIMED.labels(self.group).inc(len(entries))
        pending: list[dict[str, Any]] = self.redis.xpending_range(stream, self.group, min=entries[0][0], max=entries[-1][0],
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
            self.commit(stream, Outcome(dead=too_often), [(i, f) for i, f in entries if i in too_often])
        log.info("%s: reclaimed %d entries (%d dead-lettered)", self.name, len(entries), len(too_often))
        return keep

    def process(self, stream: str, entries: list[Entry]) -> None:
        """Handle and commit a batch of ``stream``, again while a key it watched changed before the commit,
        and while Redis refuses the commit for want of memory (``hold``)."""
        t0 = time.perf_counter()
        conflicts = 0
        held = False
        while conflicts < WATCH_RETRIES:
            with self.redis.pipeline(transaction=True) as pipe:
                self._pipe = pipe
                try:
                    outcome = self.handle(stream, entries)
                    self.commit(stream, outcome, entries, pipe)
                except redis.WatchError:
                    CONFLICTS.labels(self.group).inc()
                    conflicts += 1
                    continue
                except redis.OutOfMemoryError:
                    if not held:
                        log.warning("%s: Redis out of memory (maxmemory reached): batch of %d held until it "
                                    "takes the commit", self.name, len(entries))
                    held = True
                    if self.hold(stream, entries):
                        continue
                    return
                finally:
                    self._pipe = None
            if held:
                log.info("%s: Redis took the held batch of %d", self.name, len(entries))
            for effect in outcome.after:
                effect()
            BATCH.labels(self.group).observe(len(entries))
            HANDLE_SECONDS.labels(self.group).observe(time.perf_counter() - t0)
            return
        log.warning("%s: batch of %d left for redelivery after %d conflicts", self.name, len(entries), WATCH_RETRIES)

    def hold(self, stream: str, entries: list[Entry]) -> bool:
        """Redis refused a commit for want of memory: nothing of it was written. Keep the batch:
        wait, then claim it again without counting a delivery (XCLAIM JUSTID, which also resets
        its idle time, so no other consumer reclaims it), for another commit; running out of
        memory is neither a delivery nor a dead letter. False once ``stop`` is set: the batch
        stays pending, for redelivery."""
        OUT_OF_MEMORY.labels(self.group).inc()
        if self.stop.wait(min(OOM_RETRY_S, self.min_idle_ms / 4000.0)):
            return False
        self.redis.xclaim(stream, self.group, self.name, 0, [i for i, _ in entries], justid=True)
        return True

    def watch(self, *keys: str) -> None:
        """From ``handle()``, before reading ``keys``: if one changes before the commit, the batch is handled again."""
        if self._pipe is None:
            raise RuntimeError("watch() is for handle(), while a batch is processed")
        self._pipe.watch(*keys)

    def commit(self, stream: str, outcome: Outcome, entries: list[Entry],
               pipe: redis.client.Pipeline | None = None) -> None:
        """Write results, dead letters and the XACK of every entry in one transaction.

        A write Redis refuses inside it (a key of another type) does not undo the others: it goes
        to ``repair()``.
        """
        pipe = pipe or self.redis.pipeline(transaction=True)
        if pipe.watching:
            pipe.multi()
        self.queue_commit(pipe, stream, outcome, entries)
        queued = [args for args, _ in pipe.command_stack]
        replies = pipe.execute(raise_on_error=False)  # raises what Redis refused at queueing (OOM): nothing written
        PROCESSED.labels(self.group).inc(len(entries) - len(outcome.dead))
        for entry_id, reason in outcome.dead.items():  # counted once written, never for a refused commit
            DEAD.labels(self.group, dead_reason(reason)).inc()
            log.warning("%s: dead-lettered %s: %s", self.name, entry_id, reason[:200])
        failed = [(args, reply) for args, reply in zip(queued, replies) if isinstance(reply, redis.ResponseError)]
        if failed:
            self.repair(failed)

    def queue_commit(self, pipe: redis.client.Pipeline, stream: str, outcome: Outcome, entries: list[Entry]) -> None:
        """Queue results, dead letters and the XACK of ``stream``'s entries on ``pipe`` (which the caller executes)."""
        for write in outcome.writes:
            write(pipe)
        fields_by_id = dict(entries)
        for entry_id, reason in outcome.dead.items():
            dead: dict[FieldT, EncodableT] = {b"source_stream": stream.encode(), b"source_id": entry_id.encode(),
                    b"reason": reason[:DEAD_REASON_MAX].encode(), b"group": self.group.encode()}
            dead.update({b"f:" + k: v for k, v in fields_by_id.get(entry_id, {}).items()})
            pipe.xadd(self.keys.dead(stream), dead, maxlen=self.dead_maxlen, approximate=True)
        if outcome.dead and self.dead_retention_s:  # dead crops are biometric data too
            min_id = int((time.time() - self.dead_retention_s) * 1000)
            pipe.xtrim(self.keys.dead(stream), minid=min_id, approximate=False)
        pipe.xack(stream, self.group, *[i for i, _ in entries])

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

    def handle(self, stream: str, entries: list[Entry]) -> Outcome:
        """Process a batch of ``stream``; return what to write and what to dead-letter. Raise only for a fault of the
        consumer itself: the process ends and the batch is delivered again."""
        raise NotImplementedError

    def repair(self, failed: Failed) -> None:
        """Writes of a committed batch that Redis refused; a consumer that keeps state of its own in
        Redis resets what was corrupt. Here: raised, as a Redis error of the loop."""
        raise failed[0][1]

    def teardown(self) -> None:
        """Called once after the loop ends (the last batch is already acknowledged)."""
        if self.beacon is not None:
            self.beacon.stop()
        log.info("%s: stopped", self.name)


def settled(client: redis.Redis, stream: str, group: str | None = None) -> bool:
    """The stream's groups (or the one named) have read and acknowledged everything on it.

    A consumer commits its results with the acknowledgement, in one transaction: once settled,
    everything the stream's entries lead to is written, and nothing more will come of them.
    """
    try:
        groups: list[dict[str, Any]] = client.xinfo_groups(stream)
    except redis.ResponseError:  # no such stream yet
        return False
    ours = [g for g in groups if group is None or _text(g["name"]) == group]
    return bool(ours) and not any(g["pending"] or g["lag"] for g in ours)


def dead_reason(reason: str) -> str:
    """The ``reason`` label of a dead letter: its kind, before the first colon (``DEAD_REASONS``)."""
    kind = reason.split(":", 1)[0].replace(" ", "_")
    return kind if kind in DEAD_REASONS else "poison"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
