"""One camera read for ingest: opened, reopened with capped backoff, its frames paced to ``max_fps``
and timed (a file by its place in the video, so ``--fast`` and ``--loop`` keep eye timing)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from liveness.config import CameraSettings
from liveness.errors import SourceError
from liveness.heartbeat import Beacon
from liveness.ingest import metrics
from liveness.ingest.capture import FileReader, Frame, LatestFrameReader, is_live, open_capture
from liveness.pacing import FramePacer

log = logging.getLogger(__name__)

RECONNECT_CAP_S = 30.0
"""Longest wait between two attempts to reopen a camera, seconds."""


class FrameSink(Protocol):
    """What the camera hands its frames to."""

    def frame(self, frame: Frame, media_ts: float, more: bool) -> None:
        """A paced frame; ``more``: another one is already waiting."""

    def pause(self) -> None:
        """The source stopped delivering (lost, ended, or we are stopping)."""


class Reader(Protocol):
    """A source of frames (``liveness.ingest.capture``)."""

    overwritten: int

    def get(self, timeout_s: float) -> Frame | None: ...

    @property
    def failed(self) -> bool: ...

    def ready(self) -> bool: ...

    def close(self) -> None: ...


@dataclass
class CameraReader:
    """Reads one camera until stopped (or a file ends, without ``loop``, or after ``max_frames``)."""

    camera: CameraSettings
    stop: threading.Event
    beacon: Beacon
    fast: bool = False
    loop: bool = False
    max_frames: int | None = None
    frames_read: int = 0
    started: float = 0.0
    """perf_counter() when the first open began (benchmarks time from it)."""
    pacer: FramePacer = field(init=False)
    _media_offset: float = 0.0
    _media_end: float = 0.0

    def __post_init__(self) -> None:
        self.pacer = FramePacer(self.camera.max_fps)
        self.metrics = metrics.CameraMetrics.of(self.camera.id)

    @property
    def who(self) -> str:
        return f"ingest {self.camera.id}"

    def run(self, sink: FrameSink) -> None:
        """Open the source, read until it fails, reopen with capped exponential backoff."""
        delay = 0.5
        cam = self.camera.id
        self.started = time.perf_counter()
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
            reader: Reader = LatestFrameReader(cap, cam) if live else FileReader(cap, self.fast)
            metrics.CAMERA_UP.labels(cam).set(1)
            self.beacon.beat("ready")
            got = self.read_frames(reader, live, sink)
            sink.pause()
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

    def read_frames(self, reader: Reader, live: bool, sink: FrameSink) -> int:
        """Hand paced frames to ``sink`` until the source fails or we are stopped; returns frames handed."""
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
            self.metrics.frames_read.inc(1 + reader.overwritten)
            self.metrics.frames_skipped.inc(reader.overwritten)
            reader.overwritten = 0
            # files: time in the video, continued across loops, so --fast and --loop keep eye timing
            file = reader if isinstance(reader, FileReader) else None  # not live
            media_ts = frame.capture_ts if file is None else self._media_offset + frame.index / file.fps
            if not self.pacer.take(media_ts):
                self.metrics.frames_skipped.inc()
                continue
            if file is not None:
                self._media_end = media_ts + 1.0 / file.fps
            self.metrics.decode_seconds.observe(time.perf_counter() - t0)
            sink.frame(frame, media_ts, reader.ready())
            got += 1
            now = time.monotonic()
            fps_window.append(now)
            while fps_window and fps_window[0] < now - 5.0:
                fps_window.pop(0)
            self.metrics.camera_fps.set(len(fps_window) / 5.0)
        return got
