"""One camera's ingest: a camera reader, the face tracker and track sampler, and a publisher.

``IngestService.start()`` lists its steps in order. The camera (``liveness.ingest.camera``)
reconnects and paces; per frame, the tracker follows the faces and the sampler
(``liveness.sampling``, shared with offline analysis) decides what each track sends; the
publisher (``liveness.ingest.publisher``) batches, backs off and trims.
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
from liveness.evidence import read_verdicts
from liveness.face import FacePipeline
from liveness.heartbeat import Beacon
from liveness.ingest import metrics
from liveness.ingest.camera import CameraReader
from liveness.ingest.capture import Frame, describe
from liveness.ingest.preview import Preview
from liveness.ingest.publisher import Publisher
from liveness.lifecycle import stop_on_signals
from liveness.metrics import serve
from liveness.redisconn import connect, wait_until_up
from liveness.sampling import Shot, TrackSampler, TrackState
from liveness.supervisor import ProcessSpec, Supervisor
from liveness.tracking import FaceTracker, Track

log = logging.getLogger(__name__)

LAG_CHECK_S = 0.5
"""How often ingest asks Redis how far the face workers lag and which tracks fusion decided, seconds."""


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
        self.metrics = metrics.CameraMetrics.of(camera.id)
        self.preview: Preview | None = None
        self._next_lag_check = 0.0
        self.lag_check_s = LAG_CHECK_S
        """How often the face workers' lag and the tracks' verdicts are read, seconds."""

    def start(self) -> None:
        """Prepare, then capture until stopped (or a file ends)."""
        if not self.prepare():
            return
        try:
            self.reader.run(self)
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
        self.reader = CameraReader(self.camera, self.stop, self.beacon, fast=self.fast, loop=self.loop,
                                   max_frames=self.max_frames)
        self.pipeline = FacePipeline(self.camera.detect, self.camera.crop)
        self.sampler = TrackSampler(self.camera, self.camera.id, self.camera.label)
        self.publisher = Publisher(self.redis, self.settings, self.camera.id)
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

    def frame(self, frame: Frame, media_ts: float, more: bool) -> None:
        """The camera's next frame: sample it and hand its messages to the publisher."""
        self.publisher.add(self.process(frame, media_ts), more)

    def pause(self) -> None:
        """The camera stopped delivering: send what waits."""
        self.publisher.flush()

    def process(self, frame: Frame, media_ts: float) -> list[FaceCrop | EyeSample]:
        """Track faces in one frame; the messages its tracks send (``TrackSampler``)."""
        cam = self.camera.id
        t0 = time.perf_counter()
        if frame.image.ndim != 3 or frame.image.shape[0] < 32 or frame.image.shape[1] < 32:
            metrics.SOURCE_ERRORS.labels(cam, "corrupt").inc()
            return []
        self._ask_redis(self.tracker.tracks)  # which tracks' crops are shed or slowed
        shed = self.publisher.shedding
        tracks = self.tracker.update(frame.image, self.frames, self.sampler.landmarks)
        if self.preview is not None:
            self.preview.offer(frame.image, tracks)
        t1 = time.perf_counter()
        m = self.metrics
        m.track_seconds.observe(t1 - t0)
        self.frames += 1
        m.frames_processed.inc()
        m.tracks_open.set(len(tracks))
        if not tracks:
            return []
        messages: list[FaceCrop | EyeSample] = []
        shot = Shot(frame.index, frame.capture_ts, media_ts, frame.image)
        for track in tracks:
            if track.state is None:
                m.tracks.inc()
            m.faces.inc()
            samples, dropped = self.sampler.sample(track, shot, shed)
            m.frames_shed.inc(dropped)
            messages.extend(s.message for s in samples)
        m.crop_seconds.observe(time.perf_counter() - t1)
        return messages

    def _ask_redis(self, tracks: list[Track[TrackState]]) -> None:
        """Every ``lag_check_s``: whether the face workers lag (the publisher sheds crops), and which
        open tracks fusion has decided (the sampler slows their crops)."""
        now = time.monotonic()
        if now < self._next_lag_check or self.publisher.backing_off:
            return
        self._next_lag_check = now + self.lag_check_s
        try:
            self.publisher.check_lag()
            verdicts = read_verdicts(self.redis, self.keys, [t.id for t in tracks])
        except redis.RedisError:
            return
        for track in tracks:
            if track.state is not None:
                track.state.decided = verdicts[track.id].decided


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
