"""Frames of a video file for the offline paths (dataset readers, clip jobs), as ingest would see them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from liveness.images import frame_oversized, oversized

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0
"""Frame rate assumed when a file states none that is plausible (1-240)."""


def plausible_fps(fps: float) -> float:
    """A file's stated frame rate, or ``DEFAULT_FPS`` when it states none that is plausible."""
    return fps if 1.0 <= fps <= 240.0 else DEFAULT_FPS


def video_fps(path: Path) -> float:
    """The frame rate a video file states (``DEFAULT_FPS`` when none is plausible or it cannot be opened)."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        return plausible_fps(cap.get(cv2.CAP_PROP_FPS)) if cap.isOpened() else DEFAULT_FPS
    finally:
        cap.release()


def read_video(path: Path, max_frames: int | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(seconds since start, BGR frame)`` upright: phones record rotation as metadata.

    A file that cannot be opened, or whose frames are over the pixel cap (``liveness.images``),
    yields nothing and is logged, so one bad clip of a dataset does not stop the others.
    """
    why = oversized(path, "video")  # FFmpeg decodes an image file as it opens it
    if why is not None:
        log.warning("video: %s: %s, skipped", path, why)
        return
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            log.warning("video: cannot open %s, skipped", path)
            return
        why = frame_oversized(int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), "video")
        if why is not None:
            log.warning("video: %s: %s, skipped", path, why)
            return
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        fps = plausible_fps(cap.get(cv2.CAP_PROP_FPS))
        i = 0
        while max_frames is None or i < max_frames:
            ok, img = cap.read()
            if not ok:
                break
            yield i / fps, img
            i += 1
    finally:
        cap.release()
