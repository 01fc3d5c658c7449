"""One camera's ingest: capture, track faces, publish crops and eye ratios to Redis.

``IngestService.start()`` lists its steps in order; the per-frame path only does the work
that must be done per frame and batches its Redis writes into one round trip.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time

import cv2
import redis

from liveness.config import CameraSettings, Settings, load_settings
from liveness.contract import EyeSample, FaceCrop, Keys
from liveness.errors import SourceError
from liveness.evidence import read_verdicts
from liveness.face import FacePipeline
from liveness.heartbeat import Beacon
from liveness.ingest import metrics
from liveness.ingest.capture import FileReader, Frame, LatestFrameReader, describe, is_live, open_capture
from liveness.ingest.preview import Preview
from liveness.lifecycle import stop_on_signals
from liveness.metrics import serve
from liveness.pacing import FramePacer
from liveness.redisconn import connect, failure, wait_until_up
from liveness.sampling import Shot, TrackSampler, TrackState
from liveness.supervisor import ProcessSpec, Supervisor
from liveness.tracking import FaceTracker, Track

log = logging.getLogger(__name__)

RECONNECT_CAP_S = 30.0
"""Longest wait between two attempts to reopen a camera, seconds."""

LAG_CHECK_S = 0.5
"""How often ingest asks Redis how far the face workers lag, seconds."""

TRIM_EVERY_S = 1.0
"""How often ingest trims face crops older than the retention, seconds."""

OUTBOX_MAX = 64
"""Messages held before a write to Redis is forced."""

OUTBOX_MAX_AGE_S = 0.02
"""Longest a message waits for company when frames arrive faster than Redis round trips.

Messages go out as soon as no frame is waiting, so at camera rates every frame is flushed
at once and batching only happens when ingest is behind (or a file plays with --fast)."""


class IngestService:
    """Reads one camera and publishes what the face pipeline finds."""

    def __init__(self, settings: Settings, camera: CameraSettings, fast: bool = False, loop: bool = False,
                 max_frames: int | None = None, stop: threading.Event | None = None,
                 metrics_port: int | None = None) -> None:
        self.settings = settings
        self.camera = camera
        self.fast = fast
        self.loop = loop
        self.max_frames = max_frames
        self.stop = stop or threading.Event()
        self.keys = Keys(settings.prefix)
        self.who = f"ingest {camera.id}"
        self.metrics_port = metrics_port
        self.frames = 0
        self.preview: Preview | None = None
        self.frames_read = 0
        self.pacer = FramePacer(camera.max_fps)
        self._outbox: list[FaceCrop | EyeSample] = []
        self._outbox_since = 0.0
        self.capture_started = 0.0
        self._media_offset = 0.0
        self._media_end = 0.0
        self._shedding = False
        self._next_lag_check = 0.0
        self.lag_check_s = LAG_CHECK_S
        """How often the face workers' lag and the tracks' verdicts are read, seconds."""
        self._next_trim = 0.0
        self._redis_retry_at = 0.0
        self._redis_backoff = 0.1

    def start(self) -> None:
        """Prepare, then capture until stopped (or a file ends)."""
        if not self.prepare():
            return
        try:
            self.capture_loop()
        finally:
            metrics.CAMERA_UP.labels(self.camera.id).set(0)
            self.beacon.stop()
            log.info("%s: stopped after %d frames", self.who, self.frames)

    def prepare(self) -> bool:
        """Connect, claim a session for unique track ids, load models, serve metrics; False when
        stopped while Redis was still down."""
        self.redis = connect(self.settings.redis)
        if not wait_until_up(self.redis, self.who, self.settings.redis.url, self.stop):
            return False
        self.session = self._claim_session()
        self.beacon = Beacon(self.redis, self.keys, f"ingest:{self.camera.id}", "ingest", self.metrics_port)
        self.beacon.beat()
        self.pipeline = FacePipeline(self.camera.detect, self.camera.crop)
        self.sampler = TrackSampler(self.camera, self.camera.id, self.camera.label)
        counter = iter(range(1, 1 << 62))
        self.tracker = FaceTracker[TrackState](self.pipeline, lambda: f"{self.camera.id}:{self.session}:{next(counter)}")
        cam = self.camera.id
        for family in (metrics.FRAMES_READ, metrics.FRAMES_PROCESSED, metrics.FRAMES_SKIPPED, metrics.FRAMES_SHED,
                       metrics.FACES, metrics.TRACKS, metrics.RECONNECTS, metrics.PUBLISH_ERRORS, metrics.CAMERA_FPS,
                       metrics.CROPS_PUBLISHED, metrics.WINDOWS_PUBLISHED):
            family.labels(cam)  # exported at 0 from the start, so dashboards show a flat line, not "no data"
        metrics.CAMERA_UP.labels(cam).set(0)
        preview = self.settings.preview
        if preview.enabled:
            port = preview.port + [c.id for c in self.settings.cameras].index(cam)
            self.preview = Preview(cam, preview.host, port, self.redis, self.keys, preview.fps)
        log.info("%s: source %s, session %d", self.who, describe(self.camera.source), self.session)
        return True

    def _claim_session(self) -> int:
        """A number no earlier start of this camera had, so its track ids are new.

        A counter that is not one (a key of another type, not an integer: corrupt state) is
        replaced by one at the epoch second, above any count of starts it can have held.
        """
        key = self.keys.camera_session(self.camera.id)
        try:
            return int(self.redis.incr(key))
        except redis.ResponseError as e:
            log.warning("%s: %s is not a counter (%s); reset", self.who, key, e)
            pipe = self.redis.pipeline(transaction=True)
            pipe.expire(key, 0)
            pipe.incrby(key, int(time.time()))
            return int(pipe.execute()[-1])

    def capture_loop(self) -> None:
        """Open the source, read until it fails, reopen with capped exponential backoff."""
        delay = 0.5
        cam = self.camera.id
        self.capture_started = time.perf_counter()
        while not self.stop.is_set():
            self.beacon.beat(for_s=self.camera.open_timeout_s)  # opening blocks the loop up to this long
            try:
                cap = open_capture(self.camera)
            except SourceError as e:
                metrics.SOURCE_ERRORS.labels(cam, "open").inc()
                log.warning("%s: %s; retrying in %.1f s", self.who, e, delay)
                self.beacon.beat("waiting", "camera not open", for_s=delay)
                self.stop.wait(delay)
                delay = min(delay * 2, RECONNECT_CAP_S)
                continue
            live = is_live(self.camera.source)
            reader = LatestFrameReader(cap, cam) if live else FileReader(cap, self.fast)
            metrics.CAMERA_UP.labels(cam).set(1)
            self.beacon.beat("ready")
            got = self.read_frames(reader, live)
            self.flush()
            reader.close()
            self._media_offset = self._media_end
            metrics.CAMERA_UP.labels(cam).set(0)
            if self.stop.is_set() or self._done():
                return
            if not live and not self.loop:
                log.info("%s: end of file", self.who)
                return
            if got:
                delay = 0.5
            metrics.RECONNECTS.labels(cam).inc()
            if live:
                log.warning("%s: stream lost; reconnecting in %.1f s", self.who, delay)
                self.beacon.beat("waiting", "stream lost", for_s=delay)
                self.stop.wait(delay)
                delay = min(delay * 2, RECONNECT_CAP_S)

    def _done(self) -> bool:
        return self.max_frames is not None and self.frames_read >= self.max_frames

    def read_frames(self, reader: LatestFrameReader | FileReader, live: bool) -> int:
        """Process frames until the source fails or we are stopped; returns frames processed."""
        cam = self.camera.id
        got = 0
        last_frame = time.monotonic()
        fps_window: list[float] = []
        while not self.stop.is_set() and not self._done():
            self.beacon.beat()
            t0 = time.perf_counter()
            frame = reader.get(timeout_s=0.5)
            if frame is None:
                if reader.failed:
                    metrics.SOURCE_ERRORS.labels(cam, "end" if not live else "read").inc()
                    return got
                if time.monotonic() - last_frame > self.camera.read_timeout_s:
                    metrics.SOURCE_ERRORS.labels(cam, "timeout").inc()
                    log.warning("%s: no frame for %.1f s", self.who, self.camera.read_timeout_s)
                    return got
                continue
            last_frame = time.monotonic()
            self.frames_read += 1
            metrics.FRAMES_READ.labels(cam).inc(1 + reader.overwritten)
            metrics.FRAMES_SKIPPED.labels(cam).inc(reader.overwritten)
            reader.overwritten = 0
            # files: time in the video, continued across loops, so --fast and --loop keep eye timing
            file = reader if isinstance(reader, FileReader) else None  # not live
            media_ts = frame.capture_ts if file is None else self._media_offset + frame.index / file.fps
            if not self.pacer.take(media_ts):
                metrics.FRAMES_SKIPPED.labels(cam).inc()
                continue
            if file is not None:
                self._media_end = media_ts + 1.0 / file.fps
            metrics.STAGE_SECONDS.labels(cam, "decode").observe(time.perf_counter() - t0)
            self.process(frame, media_ts)
            got += 1
            if not reader.ready() or len(self._outbox) >= OUTBOX_MAX or \
                    time.monotonic() - self._outbox_since >= OUTBOX_MAX_AGE_S:
                self.flush()
            now = time.monotonic()
            fps_window.append(now)
            while fps_window and fps_window[0] < now - 5.0:
                fps_window.pop(0)
            metrics.CAMERA_FPS.labels(cam).set(len(fps_window) / 5.0)
        return got

    def process(self, frame: Frame, media_ts: float) -> None:
        """Track faces in one frame and publish a crop (sampled) and eye ratios per track."""
        cam = self.camera.id
        t0 = time.perf_counter()
        if frame.image.ndim != 3 or frame.image.shape[0] < 32 or frame.image.shape[1] < 32:
            metrics.SOURCE_ERRORS.labels(cam, "corrupt").inc()
            return
        tracks = self.tracker.update(frame.image, self.frames)
        if self.preview is not None:
            self.preview.offer(frame.image, tracks)
        t1 = time.perf_counter()
        metrics.STAGE_SECONDS.labels(cam, "track").observe(t1 - t0)
        self.frames += 1
        metrics.FRAMES_PROCESSED.labels(cam).inc()
        metrics.TRACKS_OPEN.labels(cam).set(len(tracks))
        if not tracks:
            return
        self._check_lag(tracks)
        messages: list[FaceCrop | EyeSample] = []
        shot = Shot(frame.index, frame.capture_ts, media_ts, frame.image)
        for track in tracks:
            if track.state is None:
                metrics.TRACKS.labels(cam).inc()
            metrics.FACES.labels(cam).inc()
            samples, shed = self.sampler.sample(track, shot, self._shedding)
            metrics.FRAMES_SHED.labels(cam).inc(shed)
            messages.extend(s.message for s in samples)
        metrics.STAGE_SECONDS.labels(cam, "crop").observe(time.perf_counter() - t1)
        if not self._outbox:
            self._outbox_since = time.monotonic()
        self._outbox.extend(messages)

    def _check_lag(self, tracks: list[Track[TrackState]]) -> None:
        """Shed crops while the face workers lag beyond the bound, instead of growing the stream;
        and learn which open tracks fusion has decided, so the sampler slows their crops."""
        now = time.monotonic()
        if now < self._next_lag_check or now < self._redis_retry_at:
            return
        self._next_lag_check = now + self.lag_check_s
        try:
            groups = self.redis.xinfo_groups(self.keys.stream(FaceCrop))
        except redis.ResponseError:
            groups = []  # the stream is not created yet
        except redis.RedisError:
            return
        try:
            verdicts = read_verdicts(self.redis, self.keys, [t.id for t in tracks])
        except redis.RedisError:
            return
        for track in tracks:
            if track.state is not None:
                track.state.decided = verdicts[track.id].decided
        group = self.keys.group("face-workers")
        lag = next((g.get("lag") for g in groups if g.get("name", b"").decode() == group), None)
        shedding = lag is not None and lag > self.settings.streams.max_face_lag
        if shedding != self._shedding:
            log.warning("%s: face workers lag %s messages; %s crops", self.who, lag, "shedding" if shedding else "resuming")
        self._shedding = shedding

    def flush(self) -> None:
        """XADD every waiting message in one round trip; while Redis is down, count and drop."""
        messages, self._outbox = self._outbox, []
        if not messages:
            return
        t0 = time.perf_counter()
        self._publish(messages)
        metrics.STAGE_SECONDS.labels(self.camera.id, "publish").observe(time.perf_counter() - t0)

    def _publish(self, messages: list[FaceCrop | EyeSample]) -> None:
        cam = self.camera.id
        now = time.monotonic()
        if now < self._redis_retry_at:
            metrics.PUBLISH_ERRORS.labels(cam).inc(len(messages))
            return
        maxlen = self.settings.streams.maxlen
        pipe = self.redis.pipeline(transaction=False)
        for msg in messages:
            pipe.xadd(self.keys.stream(msg), msg.to_fields(), maxlen=maxlen, approximate=True)
        trim = now >= self._next_trim
        if trim:
            self._next_trim = now + TRIM_EVERY_S
            min_id = int((time.time() - self.settings.streams.crop_retention_s) * 1000)
            pipe.xtrim(self.keys.stream(FaceCrop), minid=min_id, approximate=True)
        try:
            pipe.execute()
        except redis.RedisError as e:
            metrics.PUBLISH_ERRORS.labels(cam).inc(len(messages))
            log.warning("%s: Redis write failed (%s); retrying in %.1f s", self.who, failure(e, self.settings.redis.url),
                        self._redis_backoff)
            self._redis_retry_at = now + self._redis_backoff
            self._redis_backoff = min(self._redis_backoff * 2, 5.0)
            return
        if self._redis_backoff > 0.1:
            log.info("%s: Redis writes resumed", self.who)
        self._redis_backoff = 0.1
        for msg in messages:
            metrics.PUBLISHED.labels(cam, msg.stream).inc()
            if isinstance(msg, FaceCrop):
                metrics.CROPS_PUBLISHED.labels(cam).inc()
            elif msg.window is not None:
                metrics.WINDOWS_PUBLISHED.labels(cam).inc()


def serve_camera(settings: Settings, camera: str, *, fast: bool = False, loop: bool = False,
                 max_frames: int | None = None, metrics_port: int | None = None) -> None:
    """One camera's process: capture until a signal stops it (or a file ends, without ``loop``)."""
    cam = settings.camera(camera)
    os.nice(settings.ingest.nice)
    # one process per camera is the parallelism; OpenCV's thread pool on top of it only spins
    # on the cores the other cameras and the workers need (measured: 1.7 ms CPU per frame)
    cv2.setNumThreads(1)
    stop = stop_on_signals()
    port = serve(settings.metrics, f"ingest {camera}", metrics_port)
    IngestService(settings, cam, fast, loop, max_frames, stop, port).start()


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    ids = args.camera or [c.id for c in settings.cameras]
    if not ids:
        log.error("ingest: %s defines no cameras", args.config)
        return 2
    for cam_id in ids:
        settings.camera(cam_id)  # unknown ids fail before anything starts
    options = {"fast": args.fast, "loop": args.loop, "max_frames": args.max_frames}
    if len(ids) == 1:
        serve_camera(settings, ids[0], **options)
        return 0
    return Supervisor([ProcessSpec(f"ingest:{cam_id}", serve_camera, (settings, cam_id), options,
                                   heartbeat=f"ingest:{cam_id}") for cam_id in ids],
                      connect(settings.redis), Keys(settings.prefix)).run()
