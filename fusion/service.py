"""The fusion service: one decision per track from face and eye scores, and accuracy metrics.

All track state lives in Redis (a hash per track, with a TTL), so any number of fusion
processes on any number of machines can share the work and a restart loses nothing. Each
batch is applied in one WATCH/MULTI transaction: state, seen source ids, decisions,
accuracy counters and the XACK commit together or not at all, so a redelivered score is
never counted twice and a decision is never emitted twice.

A track labelled live by an operator adds its mean face log-odds to its camera's calibration
(a sorted set in Redis); every fusion process re-reads the calibrations every few seconds
and weighs new face scores against them (``liveness.evidence``).
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import redis

from fusion import metrics
from fusion.webhook import Webhook
from liveness.config import Settings, load_settings
from liveness.contract import Decision, EyeScore, FaceScore, Keys, Label, Score
from liveness.defaults import artifact_path
from liveness.errors import LivenessError, PoisonMessageError
from liveness.evidence import Policy, TrackEvidence, live_baseline
from liveness import lifecycle
from liveness.metrics import STAGE_LATENCY
from liveness.streams import Entry, Outcome, StreamConsumer, consumer_name

log = logging.getLogger(__name__)

WATCH_RETRIES = 20
"""Attempts at a batch when another fusion process changes the same track meanwhile."""

GAUGES_EVERY_S = 2.0
"""How often the accuracy and open-track gauges and the cameras' calibrations are re-read from Redis, seconds."""

CALIBRATION_KEEP = 201
"""Live tracks kept per camera for its calibration; beyond it the extremes go, the median stays."""


def load_policy(settings: Settings) -> Policy:
    """Thresholds stored with the models, with the config's overrides applied."""
    cfg = settings.fusion
    path = Path(cfg.policy) if cfg.policy else artifact_path("fusion.json")
    if cfg.policy and not path.is_file():
        raise LivenessError(f"fusion.policy: no such file {path}")
    policy = Policy.load(path) if path.is_file() else Policy()
    updates = {}
    if cfg.spoof_threshold is not None:
        updates["spoof_at"] = cfg.spoof_threshold
    if cfg.live_threshold is not None:
        updates["live_at"] = cfg.live_threshold
    return policy.model_copy(update=updates)


@dataclass
class Item:
    """One decoded input entry."""

    entry_id: str
    track: str
    score: Score | None = None
    label: Label | None = None


class FusionConsumer(StreamConsumer):
    """Consumes the face-score, eye-score and label streams, in one read, into the shared track state."""

    def __init__(self, fusion: "Fusion") -> None:
        s = fusion.settings
        keys = fusion.keys
        self.kinds = {keys.stream(FaceScore): "face", keys.stream(EyeScore): "eye", keys.stream(Label): "label"}
        super().__init__(fusion.redis, keys, list(self.kinds), keys.group("fusion"), fusion.name,
                         batch_size=128, block_ms=20, min_idle_ms=s.face_worker.min_idle_ms,
                         max_deliveries=s.face_worker.max_deliveries, dead_maxlen=s.streams.maxlen,
                         stop=fusion.stop, redis_url=s.redis.url)
        self.fusion = fusion
        for kind in ("face", "eye"):
            metrics.DUPLICATES.labels(kind)

    @property
    def kind(self) -> str:
        """What the stream being handled carries: face scores, eye scores or labels."""
        return self.kinds[self.stream]

    def decode(self, entries: list[Entry]) -> tuple[list[Item], dict[str, str]]:
        items: list[Item] = []
        dead: dict[str, str] = {}
        for entry_id, fields in entries:
            try:
                if self.kind == "label":
                    label = Label.from_fields(fields)
                    items.append(Item(entry_id, label.track, label=label))
                else:
                    cls = FaceScore if self.kind == "face" else EyeScore
                    score = cls.from_fields(fields)
                    items.append(Item(entry_id, score.track, score=score))
            except PoisonMessageError as e:
                dead[entry_id] = f"poison: {e}"
            except Exception as e:  # noqa: BLE001 - one odd message must not hold up its batch
                dead[entry_id] = f"poison: unexpected {type(e).__name__}: {e}"
        return items, dead

    def process(self, entries: list[Entry]) -> None:
        items, dead = self.decode(entries)
        by_track: dict[str, list[Item]] = defaultdict(list)
        for item in items:
            by_track[item.track].append(item)
        for _ in range(WATCH_RETRIES):
            try:
                self._apply(by_track, entries, dead)
                return
            except redis.WatchError:
                continue
        log.warning("%s: batch of %d left for redelivery after %d conflicts", self.name, len(entries), WATCH_RETRIES)

    def _apply(self, by_track: dict[str, list[Item]], entries: list[Entry], dead: dict[str, str]) -> None:
        f = self.fusion
        keys = self.keys
        now = time.time()
        decisions: list[Decision] = []
        duplicates = 0
        with self.redis.pipeline(transaction=True) as pipe:
            tracks = sorted(by_track)
            if tracks:
                pipe.watch(*[keys.track_state(t) for t in tracks])
            states: dict[str, TrackEvidence] = {}
            before: dict[str, tuple[str, str]] = {}
            fresh: dict[str, list[Item]] = {}
            calibrate: dict[str, float | None] = {}  # track -> mean face log-odds to add, None: remove
            # source ids of the face and eye streams can coincide: the kind keeps them apart
            ids = {t: [f"{self.kind}:{i.score.source_id}" for i in by_track[t] if i.score is not None] for t in tracks}
            # every read in one round trip; the WATCH above still guards them (it precedes them)
            reads = self.redis.pipeline(transaction=False)
            for track in tracks:
                reads.hgetall(keys.track_state(track))
                if ids[track]:
                    reads.smismember(keys.seen(track), ids[track])
            replies = iter(reads.execute())
            for track in tracks:
                ev = TrackEvidence.from_hash(next(replies))
                states[track] = ev
                before[track] = (ev.label, ev.verdict)
                items = by_track[track]
                seen = {i for i, hit in zip(ids[track], next(replies)) if hit} if ids[track] else set()
                fresh[track] = []
                for item in items:
                    if item.score is not None:
                        source = f"{self.kind}:{item.score.source_id}"
                        if source in seen:
                            duplicates += 1
                            continue
                        seen.add(source)
                    fresh[track].append(item)
                    if item.label is not None:
                        ev.camera = ev.camera or item.label.camera
                        ev.label = item.label.label
                        live = ev.label == "live" and ev.face_n >= f.policy.min_face
                        calibrate[track] = ev.face_logit_mean if live else None
                    elif item.score is not None:
                        sc = item.score
                        ev.camera = ev.camera or sc.camera
                        ev.label = ev.label or (sc.label or "")
                        ev.add(self.kind, sc.score, sc.capture_ts, f.policy,  # type: ignore[arg-type]
                               f.baselines.get(ev.camera))
                        STAGE_LATENCY.labels("score_to_fusion").observe(max(0.0, now - sc.scored_ts))
                verdict, confidence = ev.decide(f.policy, f.settings.fusion.rule)
                if verdict != "undecided" and verdict != ev.verdict:
                    ev.verdict = verdict
                    ev.decisions += 1
                    if not ev.first_decision_ts:
                        ev.first_decision_ts = now
                    face, eye = ev.evidence(f.policy)
                    decisions.append(Decision(ev.camera, track, verdict, confidence, face, eye, ev.frames,
                                              ev.first_capture_ts, ev.last_capture_ts, now,
                                              f.settings.fusion.rule, ev.label or None))
            pipe.multi()
            ttl = max(1, int(f.settings.fusion.track_ttl_s * 6))
            for track in tracks:
                ev = states[track]
                pipe.hset(keys.track_state(track), mapping=ev.to_hash())
                pipe.expire(keys.track_state(track), ttl)
                new_ids = [f"{self.kind}:{i.score.source_id}" for i in fresh[track] if i.score is not None]
                if new_ids:
                    pipe.sadd(keys.seen(track), *new_ids)
                    pipe.expire(keys.seen(track), ttl)
                pipe.zadd(keys.open_tracks, {track: now})
                _count_accuracy(pipe, keys, ev, before[track])
            for track, mean in calibrate.items():
                camera = states[track].camera
                if mean is None:
                    pipe.zrem(keys.calibration(camera), track)
                else:
                    pipe.zadd(keys.calibration(camera), {track: mean})
                    pipe.sadd(keys.calibrated, camera)
            for d in decisions:
                pipe.xadd(keys.stream(Decision), d.to_fields(), maxlen=f.settings.streams.maxlen, approximate=True)
            self.queue_commit(pipe, Outcome(dead=dead), entries)
            pipe.execute()
        metrics.DUPLICATES.labels(self.kind).inc(duplicates)
        for d in decisions:
            metrics.DECISIONS.labels(d.camera, d.verdict).inc()
            metrics.PIPELINE_LATENCY.labels(d.camera).observe(max(0.0, d.decided_ts - d.last_capture_ts))
            if states[d.track].decisions == 1:
                metrics.TIME_TO_DECISION.labels(d.camera).observe(max(0.0, d.decided_ts - d.first_capture_ts))
            log.info("fusion: %s %s -> %s (%.2f, face %.2f, eye %.2f, %d frames)", d.camera, d.track, d.verdict,
                     d.confidence, d.face_evidence, d.eye_evidence, d.frames)
            f.webhook.send(d)


def _count_accuracy(pipe: redis.client.Pipeline, keys: Keys, ev: TrackEvidence, before: tuple[str, str]) -> None:
    """Move the track between ``camera|label|verdict`` counters when its label or verdict changed."""
    old_label, old_verdict = before
    if (old_label, old_verdict) == (ev.label, ev.verdict):
        return
    if old_label and old_verdict != "undecided":
        pipe.hincrby(keys.accuracy, f"{ev.camera}|{old_label}|{old_verdict}", -1)
    if ev.label and ev.verdict != "undecided":
        pipe.hincrby(keys.accuracy, f"{ev.camera}|{ev.label}|{ev.verdict}", 1)


def error_rates(counts: dict[tuple[str, str], int]) -> tuple[float, float, int, int]:
    """APCER, BPCER and the number of attacks and live tracks, from (label, verdict) counts."""
    attacks = counts.get(("spoof", "live"), 0) + counts.get(("spoof", "spoof"), 0)
    lives = counts.get(("live", "live"), 0) + counts.get(("live", "spoof"), 0)
    apcer = counts.get(("spoof", "live"), 0) / attacks if attacks else 0.0
    bpcer = counts.get(("live", "spoof"), 0) / lives if lives else 0.0
    return apcer, bpcer, attacks, lives


class Fusion:
    """A consumer of face scores, eye scores and labels, plus a gauge and expiry loop."""

    def __init__(self, settings: Settings, client: redis.Redis, name: str, stop: threading.Event) -> None:
        self.settings = settings
        self.redis = client
        self.name = name
        self.stop = stop
        self.keys = Keys(settings.prefix)
        self.policy = load_policy(settings)
        self.webhook = Webhook(settings.fusion.webhook_url, stop)
        self.baselines: dict[str, float | None] = {}
        """Camera -> calibration (``liveness.evidence.live_baseline``), refreshed from Redis."""

    def start(self) -> None:
        """Start the consumer thread, then keep the gauges until stopped."""
        self.refresh_calibration()
        consumer = FusionConsumer(self)
        thread = threading.Thread(target=consumer.run, name="fusion:consumer", daemon=True)
        thread.start()
        log.info("%s: policy %s, rule %s", self.name, self.policy.model_dump(), self.settings.fusion.rule)
        while not self.stop.wait(GAUGES_EVERY_S):
            try:
                self.refresh_calibration()
                self.update_gauges()
            except redis.RedisError as e:
                log.warning("%s: gauges not updated (%s)", self.name, type(e).__name__)
        thread.join(timeout=10)
        self.webhook.close()

    def refresh_calibration(self) -> None:
        """Re-read every camera's live-labelled tracks (kept bounded) and recompute its calibration."""
        cameras = sorted(c.decode() for c in self.redis.smembers(self.keys.calibrated))
        reads = self.redis.pipeline(transaction=False)
        for camera in cameras:
            reads.zrange(self.keys.calibration(camera), 0, -1, withscores=True)
        baselines: dict[str, float | None] = {}
        for camera, members in zip(cameras, reads.execute()):
            excess = len(members) - CALIBRATION_KEEP
            if excess > 0:
                low, high = excess // 2, excess - excess // 2
                self.redis.zremrangebyrank(self.keys.calibration(camera), len(members) - high, -1)
                if low:
                    self.redis.zremrangebyrank(self.keys.calibration(camera), 0, low - 1)
                members = members[low:len(members) - high]
            baselines[camera] = live_baseline([score for _, score in members], self.policy)
            metrics.CALIBRATION_TRACKS.labels(camera).set(len(members))
            baseline = baselines[camera]
            metrics.LIVE_BASELINE.labels(camera).set(float("nan") if baseline is None else baseline)
        self.baselines = baselines

    def update_gauges(self) -> None:
        """Expire idle tracks from the open set; recompute accuracy over the run and the window."""
        now = time.time()
        self.redis.zremrangebyscore(self.keys.open_tracks, 0, now - self.settings.fusion.track_ttl_s)
        metrics.TRACKS_OPEN.set(self.redis.zcard(self.keys.open_tracks))
        run: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
        for field, value in self.redis.hgetall(self.keys.accuracy).items():
            camera, label, verdict = field.decode().split("|")
            for cam in (camera, "all"):
                run[cam][(label, verdict)] = run[cam].get((label, verdict), 0) + int(value)
        window: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
        start_id = f"{int((now - self.settings.fusion.window_s) * 1000)}-0"
        latest: dict[str, Decision] = {}
        for _, fields in self.redis.xrange(self.keys.stream(Decision), min=start_id, count=100_000):
            try:
                d = Decision.from_fields(fields)
            except PoisonMessageError:
                continue
            latest[d.track] = d
        for d in latest.values():
            if d.label:
                for cam in (d.camera, "all"):
                    window[cam][(d.label, d.verdict)] = window[cam].get((d.label, d.verdict), 0) + 1
        for name, table in (("run", run), ("sliding", window)):
            for cam, counts in table.items():
                apcer, bpcer, attacks, lives = error_rates(counts)
                metrics.APCER.labels(cam, name).set(apcer)
                metrics.BPCER.labels(cam, name).set(bpcer)
                metrics.ACER.labels(cam, name).set((apcer + bpcer) / 2)
                metrics.LABELLED.labels(cam, name, "spoof").set(attacks)
                metrics.LABELLED.labels(cam, name, "live").set(lives)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    name = getattr(args, "name", None) or consumer_name("fusion")
    started = lifecycle.start(settings, name, getattr(args, "metrics_port", None))
    if started:
        Fusion(settings, started[0], name, started[1]).start()
    return 0
