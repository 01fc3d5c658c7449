"""The fusion service: one decision per track from face and eye scores, and accuracy metrics.

All track state lives in Redis (a hash per track, with a TTL), so any number of fusion
processes on any number of machines can share the work and a restart loses nothing. Batches
go through the consumer loop every worker uses (``liveness.streams``): the batch's tracks are
watched, read and advanced, and state, seen source ids, decisions, accuracy counters and the
XACK commit in one transaction, or the batch is handled again; so a redelivered score is never
counted twice and a decision is never emitted twice.

State that does not parse (an older schema, a partial write, a hostile client) sends the
track's messages of the batch to the dead letters with the reason and resets the track; a key
of another type, or a counter that is not a number, is reset where it is found; garbage members
of the sets are ignored. The consumer, the gauges and the webhook run as one
``liveness.lifecycle.Crew``: if one fails, the process ends, and its supervisor restarts it.

A track labelled live by an operator adds its mean face log-odds to its camera's calibration
(a sorted set in Redis); every fusion process re-reads the calibrations every few seconds
and weighs new face scores against them (``liveness.evidence``).
"""

from __future__ import annotations

import argparse
import logging
import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterator, TypeVar, cast

import redis

from liveness import lifecycle
from liveness.config import Settings, load_settings
from liveness.contract import Decision, EyeScore, FaceScore, Keys, Label, Score
from liveness.errors import CorruptStateError, PoisonMessageError
from liveness.evidence import TrackEvidence, decided_by, live_baseline, load_policy
from liveness.fusion import metrics
from liveness.fusion.webhook import Webhook
from liveness.heartbeat import Beacon
from liveness.metrics import STAGE_LATENCY
from liveness.streams import Entry, Failed, Outcome, RawEntry, StreamConsumer, consumer_name

log = logging.getLogger(__name__)

GAUGES_EVERY_S = 2.0
"""How often the accuracy and open-track gauges and the cameras' calibrations are re-read from Redis, seconds."""

CALIBRATION_KEEP = 201
"""Live tracks kept per camera for its calibration; beyond it the extremes go, the median stays."""

T = TypeVar("T")


@dataclass
class Item:
    """One decoded input entry."""

    entry_id: str
    track: str
    score: Score | None = None
    label: Label | None = None


@dataclass
class TrackUpdate:
    """What one batch does to one track."""

    track: str
    state: TrackEvidence
    before: tuple[str, str]
    """(label, verdict) before the batch: the accuracy counter the track leaves."""
    new_ids: list[str] = field(default_factory=list)
    duplicates: int = 0
    labelled: bool = False
    live_mean: float | None = None
    """With ``labelled``: the mean face log-odds a live track adds to its camera's calibration (None: leaves it)."""
    decisions: list[Decision] = field(default_factory=list)
    """Each change of verdict, in the order of the scores that brought it."""
    latencies: list[float] = field(default_factory=list)


class FusionConsumer(StreamConsumer):
    """Consumes the face-score, eye-score and label streams, in one read, into the shared track state."""

    def __init__(self, fusion: "Fusion") -> None:
        s = fusion.settings
        cfg = s.fusion
        keys = fusion.keys
        self.kinds = {keys.stream(FaceScore): "face", keys.stream(EyeScore): "eye", keys.stream(Label): "label"}
        super().__init__(fusion.redis, keys, list(self.kinds), keys.group("fusion"), fusion.name,
                         batch_size=cfg.batch_size, block_ms=cfg.block_ms, min_idle_ms=cfg.min_idle_ms,
                         max_deliveries=cfg.max_deliveries, dead_maxlen=s.streams.maxlen,
                         stop=fusion.stop, redis_url=s.redis.url, beacon=fusion.beacon)
        self.fusion = fusion
        for kind in ("face", "eye"):
            metrics.DUPLICATES.labels(kind)

    def decode(self, kind: str, entries: list[Entry]) -> tuple[list[Item], dict[str, str]]:
        items: list[Item] = []
        dead: dict[str, str] = {}
        for entry_id, fields in entries:
            try:
                if kind == "label":
                    label = Label.from_fields(fields)
                    items.append(Item(entry_id, label.track, label=label))
                else:
                    cls = FaceScore if kind == "face" else EyeScore
                    score = cls.from_fields(fields)
                    items.append(Item(entry_id, score.track, score=score))
            except PoisonMessageError as e:
                dead[entry_id] = f"poison: {e}"
            except Exception as e:  # noqa: BLE001 - one odd message must not hold up its batch
                dead[entry_id] = f"poison: unexpected {type(e).__name__}: {e}"
        return items, dead

    @staticmethod
    def source(kind: str, item: Item) -> str:
        """The id a score is counted under: source ids of the face and eye streams can coincide."""
        assert item.score is not None
        return f"{kind}:{item.score.source_id}"

    def handle(self, stream: str, entries: list[Entry]) -> Outcome:
        kind = self.kinds[stream]  # what the stream carries: face scores, eye scores or labels
        items, dead = self.decode(kind, entries)
        by_track: dict[str, list[Item]] = defaultdict(list)
        for item in items:
            by_track[item.track].append(item)
        tracks = sorted(by_track)
        if tracks:
            self.watch(*[self.keys.track_state(t) for t in tracks])
        ids = {t: [self.source(kind, i) for i in by_track[t] if i.score is not None] for t in tracks}
        reads = self.redis.pipeline(transaction=False)  # every read in one round trip, after the WATCH
        for track in tracks:
            reads.hgetall(self.keys.track_state(track))
            if ids[track]:
                reads.smismember(self.keys.seen(track), ids[track])
        replies = iter(reads.execute(raise_on_error=False))
        now = time.time()
        updates: list[TrackUpdate] = []
        reset: list[str] = []
        for track in tracks:
            state = next(replies)
            seen = next(replies) if ids[track] else []
            try:
                updates.append(self.advance(kind, track, state, seen, ids[track], by_track[track], now))
            except Exception as e:  # noqa: BLE001 - one track's state must not hold up the others
                reason = (f"corrupt state: {e}" if isinstance(e, CorruptStateError)
                          else f"error: unexpected {type(e).__name__}: {e}")
                dead.update({item.entry_id: reason for item in by_track[track]})
                reset.append(track)
        return Outcome(writes=[partial(self.queue_writes, updates, reset, now)], dead=dead,
                       after=[partial(self.report, kind, updates, reset)])

    def advance(self, kind: str, track: str, state: dict[bytes, bytes] | redis.ResponseError,
                seen_reply: list[int] | redis.ResponseError, ids: list[str], items: list[Item],
                now: float) -> TrackUpdate:
        """The track's state after ``items``; CorruptStateError if what Redis holds for it is not a state."""
        if isinstance(state, redis.ResponseError):
            raise CorruptStateError(f"{self.keys.track_state(track)}: {state}")
        if isinstance(seen_reply, redis.ResponseError):
            raise CorruptStateError(f"{self.keys.seen(track)}: {seen_reply}")
        f = self.fusion
        ev = TrackEvidence.from_hash(state)
        update = TrackUpdate(track, ev, (ev.label, ev.verdict))
        seen = {i for i, hit in zip(ids, seen_reply) if hit}
        for item in items:
            if item.label is not None:
                ev.camera = ev.camera or item.label.camera
                ev.label = item.label.label
                update.labelled = True
                live = ev.label == "live" and ev.face_n >= f.policy.min_face
                update.live_mean = ev.face_logit_mean if live else None
                continue
            sc = item.score
            assert sc is not None
            source = self.source(kind, item)
            if source in seen:
                update.duplicates += 1
                continue
            seen.add(source)
            update.new_ids.append(source)
            ev.camera = ev.camera or sc.camera
            ev.label = ev.label or (sc.label or "")
            # ignored below: a score's stream, so kind is face or eye, not label
            change = ev.step(kind, sc.score, sc.capture_ts, f.policy,  # type: ignore[arg-type]
                             f.baselines.get(ev.camera), f.settings.fusion.rule, now)
            update.latencies.append(max(0.0, now - sc.scored_ts))
            if change is not None:
                face, eye = ev.evidence(f.policy)
                update.decisions.append(Decision(ev.camera, track, change.verdict, change.confidence, face, eye,
                                                 ev.frames, ev.first_capture_ts, ev.last_capture_ts, now,
                                                 f.settings.fusion.rule, ev.label or None).signed(f.key))
        return update

    def queue_writes(self, updates: list[TrackUpdate], reset: list[str], now: float,
                     pipe: redis.client.Pipeline) -> None:
        keys = self.keys
        settings = self.fusion.settings
        ttl = max(1, int(settings.fusion.track_ttl_s * 6))
        for u in updates:
            pipe.hset(keys.track_state(u.track), mapping=u.state.to_hash())
            pipe.expire(keys.track_state(u.track), ttl)
            if u.new_ids:
                pipe.sadd(keys.seen(u.track), *u.new_ids)
                pipe.expire(keys.seen(u.track), ttl)
            pipe.zadd(keys.open_tracks, {u.track: now})
            _count_accuracy(pipe, keys, u.state, u.before)
            if u.labelled:
                if u.live_mean is None:
                    pipe.zrem(keys.calibration(u.state.camera), u.track)
                else:
                    pipe.zadd(keys.calibration(u.state.camera), {u.track: u.live_mean})
                    pipe.sadd(keys.calibrated, u.state.camera)
            for d in u.decisions:
                pipe.xadd(keys.stream(Decision), d.to_fields(), maxlen=settings.streams.maxlen, approximate=True)
        for track in reset:
            reset_keys(pipe, keys.track_state(track), keys.seen(track))

    def report(self, kind: str, updates: list[TrackUpdate], reset: list[str]) -> None:
        """Metrics, logs and the webhook, once the batch is committed."""
        for track in reset:
            metrics.STATE_RESETS.labels("track").inc()
            log.warning("%s: track %s: state reset", self.name, track)
        for u in updates:
            metrics.DUPLICATES.labels(kind).inc(u.duplicates)
            for latency in u.latencies:
                STAGE_LATENCY.labels("score_to_fusion").observe(latency)
            first = u.state.decisions - len(u.decisions) == 0
            for i, d in enumerate(u.decisions):
                self.decided(d, first and i == 0, u.state.face_moment)

    def decided(self, d: Decision, first: bool, moment: float) -> None:
        """A committed decision's metrics, log line and webhook; ``moment``: its track's ``face_moment``."""
        metrics.DECISIONS.labels(d.camera, d.verdict).inc()
        evidence = decided_by(d.face_evidence, d.eye_evidence, d.verdict, self.fusion.policy, moment)
        metrics.DECIDED_BY.labels(d.camera, evidence).inc()
        metrics.PIPELINE_LATENCY.labels(d.camera).observe(max(0.0, d.decided_ts - d.last_capture_ts))
        if first:
            metrics.TIME_TO_DECISION.labels(d.camera).observe(max(0.0, d.decided_ts - d.first_capture_ts))
        # debug: each decision's line is `liveness decisions` and run's display; once on a terminal
        log.debug("fusion: %s %s -> %s (%.2f, face %.2f, eye %.2f, %d frames)", d.camera, d.track, d.verdict,
                 d.confidence, d.face_evidence, d.eye_evidence, d.frames)
        self.fusion.webhook.send(d)

    def repair(self, failed: Failed) -> None:
        """Reset the shared keys that refused a write: one of another type, an accuracy count that is not a number."""
        for args, error in failed:
            command, key = str(args[0]).upper(), str(args[1])
            if "WRONGTYPE" in str(error):
                self.fusion.reset(key, error)
            elif command == "HINCRBY" and key == self.keys.accuracy:
                self.redis.hset(key, str(args[2]), 0)
                metrics.STATE_RESETS.labels("accuracy").inc()
                log.warning("%s: accuracy count %s was not a number (%s): reset to 0", self.name, args[2], error)
            else:
                raise error


def reset_keys(client: redis.Redis | redis.client.Pipeline, *keys: str) -> None:
    """Delete ``keys``. EXPIRE 0 deletes a key (a timeout not in the future does) and is in the
    services' ACL (README, "Redis security"), which has no DEL."""
    for key in keys:
        client.expire(key, 0)


def _count_accuracy(pipe: redis.client.Pipeline, keys: Keys, ev: TrackEvidence, before: tuple[str, str]) -> None:
    """Move the track between ``camera|label|verdict`` counters when its label or verdict changed."""
    old_label, old_verdict = before
    if (old_label, old_verdict) == (ev.label, ev.verdict):
        return
    if old_label and old_verdict != "undecided":
        pipe.hincrby(keys.accuracy, f"{ev.camera}|{old_label}|{old_verdict}", -1)
    if ev.label and ev.verdict != "undecided":
        pipe.hincrby(keys.accuracy, f"{ev.camera}|{ev.label}|{ev.verdict}", 1)


def accuracy_counts(raw: dict[bytes, bytes]) -> Iterator[tuple[str, str, str, int]]:
    """(camera, label, verdict, tracks) of each ``camera|label|verdict`` counter; other fields are garbage, skipped."""
    for key, value in raw.items():
        try:
            camera, label, verdict = key.decode().split("|")
            count = int(value)
        except ValueError:
            continue
        if label in ("live", "spoof") and verdict in ("live", "spoof"):
            yield camera, label, verdict, count


def verdict_rates(counts: dict[tuple[str, str], int]) -> tuple[float, float, int, int]:
    """APCER, BPCER and the number of attacks and live tracks, from (label, verdict) counts of decided tracks."""
    attacks = counts.get(("spoof", "live"), 0) + counts.get(("spoof", "spoof"), 0)
    lives = counts.get(("live", "live"), 0) + counts.get(("live", "spoof"), 0)
    apcer = counts.get(("spoof", "live"), 0) / attacks if attacks else 0.0
    bpcer = counts.get(("live", "spoof"), 0) / lives if lives else 0.0
    return apcer, bpcer, attacks, lives


class Fusion:
    """A consumer of face scores, eye scores and labels, plus a gauge and calibration loop."""

    def __init__(self, settings: Settings, client: redis.Redis, name: str, stop: threading.Event,
                 beacon: Beacon | None = None) -> None:
        self.settings = settings
        self.redis = client
        self.name = name
        self.stop = stop
        self.beacon = beacon
        """The process's heartbeat, renewed by its consumer's loop."""
        self.keys = Keys(settings.prefix)
        self.policy = load_policy(settings.fusion)
        self.webhook = Webhook(settings.fusion.webhook_url, stop)
        self.key = settings.fusion.key()
        """Signs each decision; the sliding-window gauges count only decisions that pass its check."""
        self.forged = 0
        self.baselines: dict[str, float | None] = {}
        """Camera -> calibration (``liveness.evidence.live_baseline``), refreshed from Redis."""

    def start(self) -> None:
        """Consume, keep the gauges and deliver the webhook until stopped, or until one of them fails."""
        self.refresh_calibration()
        crew = lifecycle.Crew(self.stop)
        crew.start("fusion:consumer", FusionConsumer(self).run)
        crew.start("fusion:gauges", self.keep_gauges)
        if self.webhook.url:
            crew.start("fusion:webhook", self.webhook.run, close=self.webhook.close)
        log.info("%s: policy %s, rule %s", self.name, self.policy.model_dump(), self.settings.fusion.rule)
        crew.wait()

    def keep_gauges(self) -> None:
        """Every ``GAUGES_EVERY_S`` until stopped: calibrations, then gauges; Redis outages are waited out."""
        while not self.stop.wait(GAUGES_EVERY_S):
            try:
                self.refresh_calibration()
                self.update_gauges()
            except redis.RedisError as e:
                log.warning("%s: gauges not updated (%s)", self.name, type(e).__name__)

    def reset(self, key: str, why: Exception | str) -> None:
        """Delete a shared key found corrupt (it is rebuilt as tracks go on)."""
        reset_keys(self.redis, key)
        structure = key.removeprefix(self.settings.prefix + ":").split(":", 1)[0]
        metrics.STATE_RESETS.labels(structure).inc()
        log.warning("%s: %s reset: %s", self.name, key, why)

    def read(self, key: str, read: Callable[[str], T], empty: T) -> T:
        """``read(key)``; a key of another type is reset and read as ``empty``."""
        try:
            return read(key)
        except redis.ResponseError as e:
            if "WRONGTYPE" not in str(e):
                raise
            self.reset(key, e)
            return empty

    def refresh_calibration(self) -> None:
        """Re-read every camera's live-labelled tracks (kept bounded) and recompute its calibration."""
        cameras = []
        for member in self.read(self.keys.calibrated, lambda key: cast(set[bytes], self.redis.smembers(key)), set[bytes]()):
            try:
                cameras.append(member.decode())
            except UnicodeDecodeError:
                continue  # not a camera any producer wrote: garbage
        cameras.sort()
        reads = self.redis.pipeline(transaction=False)
        for camera in cameras:
            reads.zrange(self.keys.calibration(camera), 0, -1, withscores=True)
        baselines: dict[str, float | None] = {}
        for camera, members in zip(cameras, reads.execute(raise_on_error=False)):
            key = self.keys.calibration(camera)
            if isinstance(members, redis.ResponseError):
                self.reset(key, members)
                continue
            excess = len(members) - CALIBRATION_KEEP
            if excess > 0:
                low, high = excess // 2, excess - excess // 2
                self.redis.zremrangebyrank(key, len(members) - high, -1)
                if low:
                    self.redis.zremrangebyrank(key, 0, low - 1)
                members = members[low:len(members) - high]
            means = [score for _, score in members if math.isfinite(score)]  # +-inf: garbage, not a face
            baselines[camera] = live_baseline(means, self.policy)
            metrics.CALIBRATION_TRACKS.labels(camera).set(len(means))
            baseline = baselines[camera]
            metrics.LIVE_BASELINE.labels(camera).set(float("nan") if baseline is None else baseline)
        self.baselines = baselines

    def update_gauges(self) -> None:
        """Expire idle tracks from the open set; recompute accuracy over the run and the window."""
        now = time.time()
        ttl = self.settings.fusion.track_ttl_s

        def open_tracks(key: str) -> int:
            # idle tracks go; so do scores no fusion process writes (before 0, or beyond a clock skew)
            self.redis.zremrangebyscore(key, "-inf", now - ttl)
            self.redis.zremrangebyscore(key, f"({now + ttl}", "+inf")
            return int(self.redis.zcard(key))

        metrics.TRACKS_OPEN.set(self.read(self.keys.open_tracks, open_tracks, 0))
        run: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
        for camera, label, verdict, count in accuracy_counts(self.read(
                self.keys.accuracy, lambda key: cast(dict[bytes, bytes], self.redis.hgetall(key)), {})):
            for cam in (camera, "all"):
                run[cam][(label, verdict)] = run[cam].get((label, verdict), 0) + count
        window: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
        start_id = f"{int((now - self.settings.fusion.window_s) * 1000)}-0"
        latest: dict[str, Decision] = {}
        forged = 0
        decisions = cast(list[RawEntry], self.redis.xrange(self.keys.stream(Decision), min=start_id, count=100_000))
        for _, fields in decisions:
            try:
                d = Decision.from_fields(fields)
            except PoisonMessageError:
                continue
            if self.key is not None and not d.authentic(self.key):
                forged += 1
                continue
            latest[d.track] = d
        if forged != self.forged:
            log.log(logging.WARNING if forged else logging.INFO, "%s: %d decisions of the last %.0f s fail fusion's "
                    "signature (written by another Redis user)", self.name, forged, self.settings.fusion.window_s)
        self.forged = forged
        metrics.FORGED_DECISIONS.set(forged)
        for d in latest.values():
            if d.label:
                for cam in (d.camera, "all"):
                    window[cam][(d.label, d.verdict)] = window[cam].get((d.label, d.verdict), 0) + 1
        for name, table in (("run", run), ("sliding", window)):
            for cam, counts in table.items():
                apcer, bpcer, attacks, lives = verdict_rates(counts)
                metrics.APCER.labels(cam, name).set(apcer)
                metrics.BPCER.labels(cam, name).set(bpcer)
                metrics.ACER.labels(cam, name).set((apcer + bpcer) / 2)
                metrics.LABELLED.labels(cam, name, "spoof").set(attacks)
                metrics.LABELLED.labels(cam, name, "live").set(lives)


def serve_fusion(settings: Settings, *, name: str | None = None, metrics_port: int | None = None) -> None:
    """One fusion process: decide until SIGTERM/SIGINT."""
    name = name or consumer_name("fusion")
    service = lifecycle.start(settings, name, "fusion", metrics_port)
    if service:
        Fusion(settings, service.client, name, service.stop, service.beacon).start()


def run(args: argparse.Namespace) -> int:
    serve_fusion(load_settings(args.config), name=args.name)
    return 0
