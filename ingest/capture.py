"""Frame capture: live sources hand over the newest whole frame.

Network cameras are decoded with FFmpeg through PyAV, which tells a damaged frame apart (see
``StreamCapture``); webcams and files go through OpenCV. Live sources (RTSP, webcams) are read
by a thread that keeps only the latest frame, so slow processing never builds up lag; frames it
overwrites are counted. Files are read in the caller's thread and paced at their own frame rate
(or as fast as possible).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np

from liveness.config import CameraSettings
from liveness.errors import SourceError
from liveness.images import frame_oversized, oversized
from liveness.ingest import metrics
from liveness.redaction import redact_url

log = logging.getLogger(__name__)


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


class StreamCapture:
    """A network camera decoded by FFmpeg (PyAV), handing over whole frames only.

    A smeared face must never be scored, and OpenCV hides the decoder's error flags. Here a frame
    the decoder marks corrupt (lost slices or packets, concealed), a packet it cannot decode, and
    every frame after them until a clean keyframe (they predict from the damage), as well as the
    frames before the first keyframe, are skipped and counted in ``liveness_frames_corrupt_total``.
    ``read``, ``release`` and ``get(cv2.CAP_PROP_FPS)`` as ``cv2.VideoCapture``'s.
    """

    def __init__(self, camera: CameraSettings) -> None:
        url = str(camera.source)
        options: dict[str, str] = {"rtsp_transport": camera.rtsp_transport} if url.startswith("rtsp") else {}
        try:
            self._container = av.open(url, options=options, timeout=(camera.open_timeout_s, camera.read_timeout_s))
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"camera {camera.id}: cannot open {describe(url)} ({type(exc).__name__})") from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"camera {camera.id}: no video stream in {describe(url)}")
        self._stream = self._container.streams.video[0]
        why = frame_oversized(self._stream.codec_context.width, self._stream.codec_context.height, "camera")
        if why is not None:
            self._container.close()
            raise SourceError(f"camera {camera.id}: {describe(url)}: {why}")
        # one decoding thread per camera: with one process per camera, FFmpeg's own threads
        # only add contention (about 10% more CPU per frame measured with 640x480 H.264)
        self._stream.thread_count = 1
        self._clean = False
        self._corrupt = metrics.FRAMES_CORRUPT.labels(camera.id)
        self.corrupt = 0
        self._images = self._whole_frames()

    def _whole_frames(self) -> Iterator[np.ndarray]:
        for packet in self._container.demux(self._stream):
            try:
                frames = packet.decode()
            except av.InvalidDataError:
                self._skip()
                continue
            for frame in frames:
                if frame.is_corrupt:
                    self._skip()
                    continue
                self._clean = self._clean or frame.key_frame
                if self._clean:
                    yield frame.to_ndarray(format="bgr24")
                else:
                    self._skip()

    def _skip(self) -> None:
        self._clean = False
        self.corrupt += 1
        self._corrupt.inc()

    def read(self) -> tuple[bool, np.ndarray | None]:
        """The next whole frame; (False, None) when the stream ended, timed out or failed."""
        try:
            image = next(self._images, None)
        except (av.FFmpegError, OSError) as exc:
            log.info("capture: %s: %s", describe(str(self._container.name)), type(exc).__name__)
            return False, None
        return image is not None, image

    def get(self, prop: int) -> float:
        """The stream's frame rate for ``cv2.CAP_PROP_FPS`` (0 when unknown), 0 for anything else."""
        rate = self._stream.average_rate
        return float(rate) if prop == cv2.CAP_PROP_FPS and rate else 0.0

    def release(self) -> None:
        self._container.close()


Capture = cv2.VideoCapture | StreamCapture


def open_capture(camera: CameraSettings) -> Capture:
    """Open a source with open and read timeouts; SourceError if it cannot be opened."""
    if isinstance(camera.source, str) and is_live(camera.source):
        return StreamCapture(camera)
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(camera.open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(camera.read_timeout_s * 1000),
        # one decoding thread per camera: with one process per camera, FFmpeg's own threads
        # only add contention (about 10% more CPU per frame measured with 640x480 H.264)
        cv2.CAP_PROP_N_THREADS, 1,
    ]
    source = camera.source
    if isinstance(source, str) and not Path(source).exists():
        raise SourceError(f"camera {camera.id}: no such file {source}")
    why = oversized(Path(source), "camera") if isinstance(source, str) else None
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

    def __init__(self, cap: Capture, camera_id: str) -> None:
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

    def __init__(self, cap: Capture, fast: bool) -> None:
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
