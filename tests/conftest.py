"""Shared fixtures: real Redis under a private key prefix, a real RTSP server, NUAA frames."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIVENESS_SHARED", ROOT.parent / "shared"))
NUAA = SHARED / "data" / "nuaa-train"
REDIS_URL = os.environ.get("LIVENESS_TEST_REDIS", "redis://127.0.0.1:6379/0")
SYSTEM_PYTHON = os.environ.get("LIVENESS_SYSTEM_PYTHON", "/usr/bin/python3")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def r(prefix: str) -> Iterator[redis.Redis]:
    """A live Redis client; every key under the test's prefix is deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield client
    for key in client.scan_iter(f"{prefix}:*", count=1000):
        client.delete(key)


def nuaa_sequence(name: str) -> list[Path]:
    """Frames of one NUAA sequence, e.g. ``ClientRaw/0001_00_00_01``, in picture order."""
    folder, stem = name.split("/")
    frames = sorted((NUAA / folder / stem[:4]).glob(f"{stem}_*.jpg"), key=lambda p: int(p.stem.split("_")[-1]))
    assert frames, f"no frames for {name} under {NUAA}"
    return frames


def numbered_frames(frames: list[Path], dest: Path) -> str:
    """Symlink frames as 00000.jpg, 00001.jpg, ... (what multifilesrc needs); returns the pattern."""
    dest.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        (dest / f"{i:05d}.jpg").symlink_to(frame)
    return str(dest / "%05d.jpg")


class RtspServer:
    """GStreamer's RTSP server in a child process, serving NUAA sequences as looping cameras."""

    def __init__(self, mounts: dict[str, str], port: int, fps: float = 15.0) -> None:
        self.mounts = mounts
        self.port = port
        self.fps = fps
        self.proc: subprocess.Popen[str] | None = None

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{mount}"

    def start(self) -> None:
        args = [SYSTEM_PYTHON, str(ROOT / "liveness" / "rtsp_server.py"), "--port", str(self.port)]
        args += [f"{name}={pattern}@{self.fps}" for name, pattern in self.mounts.items()]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "ready" in line, f"RTSP server did not start: {line}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def rtsp(tmp_path: Path) -> Iterator[RtspServer]:
    """Two looping cameras: a live face and a printed-photo attack, both from NUAA session 01."""
    mounts = {
        "live": numbered_frames(nuaa_sequence("ClientRaw/0001_00_00_01"), tmp_path / "live"),
        "photo": numbered_frames(nuaa_sequence("ImposterRaw/0001_00_00_01"), tmp_path / "photo"),
    }
    server = RtspServer(mounts, free_port())
    server.start()
    yield server
    server.stop()


def liveness_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "liveness", *args]


def wait_for(predicate, timeout_s: float, every_s: float = 0.2):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something truthy; returns it, or fails the test."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    pytest.fail(f"condition not met within {timeout_s} s")
