"""Frames read from an RTSP camera are the frames sent: each read frame against its nearest source frame.

A lost slice, a keyframe cut in two or a client that joins mid-GOP shows as a frame far from
every source frame (the smear of issue 27 read at 15 dB); a faithful path reads at 40 dB or more.
Cameras are read the way ingest reads them (``open_capture``), in parallel, for a few seconds.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from liveness.app.replay import Replay
from liveness.config import CameraSettings
from liveness.ingest.capture import open_capture
from liveness.models.datasets import Sequence
from liveness.video import read_video
from tests.conftest import SHARED, SYSTEM_PYTHON, ROOT, free_port, nuaa_sequence

VIDEOS = SHARED / "data" / "video-sources"
MIN_PSNR_DB = 30.0
THUMB = (32, 32)


def thumb(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)


def psnr_to_nearest(frames: list[np.ndarray], source: list[np.ndarray]) -> list[float]:
    """PSNR of each frame against the source frame it looks most like (cropped to the frame's size)."""
    thumbs = np.stack([thumb(s) for s in source])
    out = []
    for frame in frames:
        nearest = source[int(((thumbs - thumb(frame)) ** 2).mean(axis=(1, 2, 3)).argmin())]
        h, w = frame.shape[:2]
        assert nearest.shape[0] - h in (0, 1) and nearest.shape[1] - w in (0, 1), (frame.shape, nearest.shape)
        out.append(float(cv2.PSNR(np.ascontiguousarray(nearest[:h, :w]), frame)))
    return out


def read_for(url: str, seconds: float, after_s: float = 0.0, transport: str = "tcp") -> list[np.ndarray]:
    """Every frame ingest's capture hands over in ``seconds`` (or until the stream ends), opened ``after_s`` late."""
    time.sleep(after_s)
    cap = open_capture(CameraSettings.model_validate({"id": "fidelity", "source": url, "rtsp_transport": transport}))
    frames: list[np.ndarray] = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ok, image = cap.read()
            if not ok:
                break
            frames.append(image)
    finally:
        cap.release()
    return frames


def read_all(reads: dict[str, tuple[str, float, float, str]]) -> dict[str, list[np.ndarray]]:
    """The reads in parallel threads, as ingest reads its cameras: name -> (url, seconds, after_s, transport)."""
    out: dict[str, list[np.ndarray]] = {}
    threads = [threading.Thread(target=lambda k=k, a=a: out.__setitem__(k, read_for(*a))) for k, a in reads.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def check(name: str, frames: list[np.ndarray], source: list[np.ndarray], least: int) -> None:
    assert len(frames) >= least, f"{name}: {len(frames)} frames read, expected {least} or more"
    psnr = psnr_to_nearest(frames, source)
    bad = [(i, round(p, 1)) for i, p in enumerate(psnr) if p < MIN_PSNR_DB]
    assert not bad, f"{name}: {len(bad)} of {len(psnr)} frames under {MIN_PSNR_DB} dB (frame, dB): {bad[:10]}"


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True)


def test_replay_serves_videos_and_sequences_as_they_are(tmp_path: Path) -> None:
    """Portrait and landscape phone videos, a tiny one, a rotated one, an odd-sized one, NUAA stills."""
    portrait = VIDEOS / "tranvanluyt/live/tranvanluyt-live-14.mp4"
    rotated, odd = tmp_path / "rotated.mp4", tmp_path / "odd.mp4"
    # 2 s clips: the 4 s read crosses the end of their loop
    ffmpeg("-i", str(VIDEOS / "pyimagesearch/live/pyimagesearch-live-16.mp4"), "-t", "2", "-c", "copy",
           "-metadata:s:v:0", "rotate=90", str(rotated))
    ffmpeg("-i", str(VIDEOS / "zalo/live/zalo-live-19.mp4"), "-t", "2", "-vf", "crop=301:223",
           "-c:v", "libx264", "-crf", "10", str(odd))
    sequences = [Sequence("portrait", "live", video=portrait), Sequence("rotated", "live", video=rotated),
                 Sequence("odd", "spoof", video=odd),
                 Sequence("tiny", "live", video=VIDEOS / "trainingdata/live/trainingdata-live-06.mp4"),
                 Sequence("nuaa", "spoof", frames=nuaa_sequence("ImposterRaw/0001_00_00_01"))]
    sources = {s.name: [image for _, image in s.read()] for s in sequences}
    assert sources["rotated"][0].shape[0] > sources["rotated"][0].shape[1], "the rotated clip reads upright"
    replay = Replay(sequences, free_port(), 15.0, tmp_path / "frames")
    try:
        urls = {str(c["id"]): str(c["source"]) for c in replay.cameras}
        reads = {name: (url, 4.0, 0.0, "tcp") for name, url in urls.items()}
        reads["late"] = (urls["portrait"], 2.5, 1.3, "tcp")  # joins the shared stream mid-GOP
        frames = read_all(reads)
    finally:
        replay.close()
    for name, got in frames.items():
        check(name, got, sources["portrait" if name == "late" else name], least=20)


class RecordingServer:
    """The RTSP server sending Matroska recordings as an IP camera would (``app/rtsp_server.py``)."""

    def __init__(self, mounts: dict[str, Path]) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(ROOT / "app" / "rtsp_server.py"), "--port", str(self.port),
                                      *(f"{k}={v}" for k, v in mounts.items())],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None and "ready" in self.proc.stdout.readline()

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{mount}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def ip_cameras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """3 s recordings at 1080p and 15 fps like an IP camera's: 4 slices a frame, B-frames, a 2 s GOP."""
    tmp = tmp_path_factory.mktemp("ipcam")
    source = str(VIDEOS / "krzysiek/live/krzysiek-live-23.mp4")
    common = ["-i", source, "-t", "3", "-vf", "fps=15,scale=1920:1080", "-pix_fmt", "yuv420p"]
    out = {"h264": tmp / "cam.h264.mkv", "h265": tmp / "cam.h265.mkv"}
    ffmpeg(*common, "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "30", "-x264-params", "slices=4",
           str(out["h264"]))
    ffmpeg(*common, "-c:v", "libx265", "-preset", "ultrafast",
           "-x265-params", "log-level=error:bframes=3:keyint=30:min-keyint=30:slices=4", str(out["h265"]))
    return out


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_ip_camera_streams_read_as_sent(ip_cameras: dict[str, Path], transport: str) -> None:
    """Over UDP, frames a lost packet damaged are skipped (``StreamCapture``): the rest must be whole."""
    sources = {codec: [image for _, image in read_video(path)] for codec, path in ip_cameras.items()}
    server = RecordingServer({codec: path for codec, path in ip_cameras.items()})
    try:
        frames = read_all({codec: (server.url(codec), 8.0, 0.0, transport) for codec in ip_cameras})
    finally:
        server.close()
    for codec, got in frames.items():
        check(f"{codec} over {transport}", got, sources[codec], least=len(sources[codec]) // 2)
