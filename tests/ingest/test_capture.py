"""A damaged frame is never handed over: lost slices and what predicts from them are skipped and counted."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
from prometheus_client import REGISTRY

from liveness.config import CameraSettings
from liveness.ingest.capture import StreamCapture
from tests.app.test_replay import MIN_PSNR_DB, VIDEOS, ffmpeg, psnr_to_nearest
from tests.conftest import RtspServer, free_port

DAMAGED = (0, 20)
"""Frames that lose a slice: the first keyframe (nothing to conceal it from: visibly broken) and
a P-frame; keyframes come every 15 frames, so frames 0-14 and 20-29 are damaged."""


def drop_last_slice(unit: bytes) -> bytes:
    """An access unit without its last slice NAL (what a lost UDP packet does to a frame)."""
    starts = [m.start() for m in re.finditer(b"\\x00\\x00\\x01", unit)]
    slices = [s for s in starts if unit[s + 3] & 0x1F in (1, 5)]
    assert len(slices) >= 2, "the frame has several slices"
    cut = slices[-1] - 1 if unit[slices[-1] - 1] == 0 else slices[-1]
    return unit[:cut]


def test_frames_with_lost_slices_are_skipped_until_the_next_keyframe(tmp_path: Path) -> None:
    frames = tmp_path / "au"
    frames.mkdir()
    ffmpeg("-i", str(VIDEOS / "tranvanluyt/live/tranvanluyt-live-14.mp4"), "-t", "3", "-vf", "fps=15",
           "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", "-g", "15", "-bf", "0",
           "-x264-params", "slices=4:repeat-headers=1", "-f", "image2", "-start_number", "0",
           str(frames / "%05d.h264"))
    units = sorted(frames.glob("*.h264"))
    whole = tmp_path / "whole.h264"
    whole.write_bytes(b"".join(u.read_bytes() for u in units))
    cap = cv2.VideoCapture(str(whole), cv2.CAP_FFMPEG)
    source = []
    while (got := cap.read())[0]:
        source.append(got[1])
    cap.release()
    for i in DAMAGED:
        units[i].write_bytes(drop_last_slice(units[i].read_bytes()))

    server = RtspServer({"cam": str(frames / "%05d.h264")}, free_port(), fps=15.0)
    server.start()
    camera = CameraSettings(id=f"damaged-{free_port()}", source=server.url("cam"))
    read: list[np.ndarray] = []
    try:
        capture = StreamCapture(camera)
        deadline = time.monotonic() + 4.0  # 45 frames a loop at 15 fps: the damage comes round at least once
        while time.monotonic() < deadline and (got := capture.read())[0]:
            read.append(got[1])
        capture.release()
    finally:
        server.stop()
    assert capture.corrupt >= 25, f"{capture.corrupt} frames skipped, expected frames 0-14 and 20-29 at least"
    assert REGISTRY.get_sample_value("liveness_frames_corrupt_total", {"camera": camera.id}) == capture.corrupt
    assert len(read) >= 20
    psnr = psnr_to_nearest(read, source)
    assert min(psnr) >= MIN_PSNR_DB, f"a damaged frame was handed over: {sorted(psnr)[:5]} dB"
