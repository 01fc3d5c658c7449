"""Frame capture with OpenCV's FFmpeg backend: live sources hand over the newest frame.

Live sources (RTSP, webcams) are read by a thread that keeps only the latest frame, so slow
processing never builds up lag; frames it overwrites are counted. Files are read in the
caller's thread and paced at their own frame rate (or as fast as possible).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from liveness.config import CameraSettings
from liveness.errors import SourceError
from liveness.images import frame_oversized, oversized
from liveness.redaction import redact_url

log = logging.getLogger(__name__)

# RTSP over TCP: UDP loses packets on busy networks and smears H.264 frames.
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")


@dataclass(frozen=True)
class Frame:
    """A decoded frame, its number and the wall-clock time it was grabbed."""

    index: int
    capture_ts: float
    image: np.ndarray


def describe(source: str | int) -> str:
    """A loggable name for a source: credentials removed, webcams named."""
    return f"webcam {source}" if isinstance(source, int) else redact_url(source)


def is_live(source: str | int) -> bool:
    return isinstance(source, int) or "://" in source


def open_capture(camera: CameraSettings) -> cv2.VideoCapture:
    """Open a source with open and read timeouts; SourceError if it cannot be opened."""
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(camera.open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(camera.read_timeout_s * 1000),
        # one decoding thread per camera: with one process per camera, FFmpeg's own threads
        # only add contention (about 10% more CPU per frame measured with 640x480 H.264)
        cv2.CAP_PROP_N_THREADS, 1,
    ]
    source = camera.source
    if isinstance(source, str) and not is_live(source) and not Path(source).exists():
        raise SourceError(f"camera {camera.id}: no such file {source}")
    why = oversized(Path(source), "camera") if isinstance(source, str) and not is_live(source) else None
    if why is not None:  # FFmpeg decodes an image file as it opens it
        raise SourceError(f"camera {camera.id}: {source}: {why}")
    if isinstance(source, int):
        cap = cv2.VideoCapture(source, cv2.CAP_ANY)
    else:
        cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"camera {camera.id}: cannot open {describe(source)}")
    why = frame_oversized(int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), "camera")
    if why is not None:
        cap.release()
        raise SourceError(f"camera {camera.id}: {describe(source)}: {why}")
    return cap


class LatestFrameReader:
    """Reads a live source in a thread and keeps only the newest frame."""

    def __init__(self, cap: cv2.VideoCapture, camera_id: str) -> None:
        self._cap = cap
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._index = 0
        self._failed = False
        self._closing = threading.Event()
        self.overwritten = 0
        self._thread = threading.Thread(target=self._loop, name=f"capture:{camera_id}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            while not self._closing.is_set():
                ok, image = self._cap.read()
                ts = time.time()
                with self._cond:
                    if not ok or image is None:
                        self._failed = True
                        self._cond.notify_all()
                        return
                    if self._frame is not None:
                        self.overwritten += 1
                    self._frame = Frame(self._index, ts, image)
                    self._index += 1
                    self._cond.notify_all()
        finally:
            # released by the thread that reads: FFmpeg crashes (SIGSEGV) when a capture is
            # released from another thread while read() runs
            self._cap.release()

    def get(self, timeout_s: float) -> Frame | None:
        """The newest unread frame; None when the source failed or nothing came in time."""
        with self._cond:
            if self._frame is None and not self._failed:
                self._cond.wait(timeout_s)
            frame, self._frame = self._frame, None
            return frame

    @property
    def failed(self) -> bool:
        return self._failed

    def ready(self) -> bool:
        """True when a frame is waiting, so writes can be batched with the next one."""
        return self._frame is not None

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop reading and release the source; the thread ends after the read under way (at most
        the source's read timeout)."""
        self._closing.set()
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            log.warning("capture:%s: still in a read after %.0f s; it releases the source when that returns",
                        self._thread.name.removeprefix("capture:"), timeout_s)


class FileReader:
    """Reads a video file in the caller's thread, paced at its own frame rate unless ``fast``."""

    def __init__(self, cap: cv2.VideoCapture, fast: bool) -> None:
        self._cap = cap
        self._fast = fast
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 1.0 <= fps <= 240.0 else 25.0
        self._index = 0
        self._start = time.monotonic()
        self._failed = False
        self.overwritten = 0

    def get(self, timeout_s: float) -> Frame | None:
        if not self._fast:
            due = self._start + self._index / self.fps
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        ok, image = self._cap.read()
        if not ok or image is None:
            self._failed = True
            return None
        frame = Frame(self._index, time.time(), image)
        self._index += 1
        return frame

    @property
    def failed(self) -> bool:
        return self._failed

    def ready(self) -> bool:
        """True when the next frame is due now (always, with ``fast``)."""
        return self._fast or time.monotonic() >= self._start + self._index / self.fps

    def close(self) -> None:
        self._cap.release()
