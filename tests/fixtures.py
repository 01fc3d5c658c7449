"""Real test data made from NUAA frames through the real face pipeline."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from functools import lru_cache
from typing import Callable
from pathlib import Path

import cv2
import redis
import yaml

from liveness.config import CropSettings
from liveness.contract import Decision, EyeSample, EyeScore, FaceCrop, FaceScore, Heartbeat, Keys, ServiceState
from liveness.eyes import EyeHistory
from liveness.evidence import Policy
from liveness.face import FacePipeline, crop_jpeg
from liveness.heartbeat import read
from liveness.streams import settled
from tests.conftest import REDIS_URL, liveness_cmd, nuaa_sequence, wait_for

SEQUENCES = {"live": "ClientRaw/0001_00_00_01", "spoof": "ImposterRaw/0001_00_00_01"}


@lru_cache(maxsize=4)
def real_crops(label: str, n: int = 40) -> tuple[bytes, ...]:
    """JPEG face crops of one NUAA sequence, as ingest makes them."""
    pipe = FacePipeline()
    out = []
    for path in nuaa_sequence(SEQUENCES[label])[:n]:
        frame = cv2.imread(str(path))
        for box in pipe.detect(frame)[:1]:
            jpeg = crop_jpeg(frame, box, CropSettings())
            assert jpeg is not None
            out.append(jpeg)
    return tuple(out)


def crop_message(jpeg: bytes, camera: str, track: str, frame: int, label: str | None = None) -> FaceCrop:
    return FaceCrop(camera, track, frame, 1000.0 + frame / 15, 1000.0 + frame / 15, (10, 10, 100, 100), jpeg,
                    list(CropSettings().views), label)


@lru_cache(maxsize=4)
def real_eye_samples(label: str, camera: str = "cam", track: str = "cam:1:1") -> tuple[EyeSample, ...]:
    """EyeSamples of one NUAA sequence at 15 fps, windows built as ingest builds them."""
    pipe = FacePipeline()
    history = EyeHistory()
    out = []
    for i, path in enumerate(nuaa_sequence(SEQUENCES[label])):
        faces = pipe.analyze(cv2.imread(str(path)))
        if not faces:
            continue
        f = faces[0]
        ts = i / 15
        history.add(ts, f.left, f.right)
        window = history.window()
        out.append(EyeSample(camera, track, i, 1000.0 + ts, 1000.0 + ts, f.box, f.left, f.right,
                             history.open_level, window, history.rate_hz if window else None, label))
    return tuple(out)


def heartbeat(r: redis.Redis, keys: Keys, name: str) -> Heartbeat | None:
    return read(r.hgetall(keys.heartbeat(name)))


def wait_state(r: redis.Redis, keys: Keys, *names: str, state: ServiceState = "ready",
               timeout_s: float = 60) -> dict[str, Heartbeat]:
    """Until each named process's own heartbeat says ``state`` (ready: model loaded and its group
    read, or its camera open); returns the heartbeats."""
    def reached() -> dict[str, Heartbeat] | None:
        beats = {name: heartbeat(r, keys, name) for name in names}
        if all(b is not None and b.state == state for b in beats.values()):
            return beats
        return None

    return wait_for(reached, timeout_s)


def metrics_port(r: redis.Redis, keys: Keys, name: str, timeout_s: float = 60) -> int:
    """The port a process serves its metrics on, as its heartbeat says (it takes the first free one
    from the configured port)."""
    def port() -> int | None:
        hb = heartbeat(r, keys, name)
        return hb.metrics_port if hb is not None else None

    return wait_for(port, timeout_s)


def metric(port: int, name: str) -> float:
    """Sum of the samples starting with ``name``; 0 while the endpoint is not up yet."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


# fusion as a process

def fusion_config(tmp_path: Path, prefix: str, port: int = 0, policy_: Policy | None = None) -> Path:
    """A config whose fusion uses ``policy_``, by default the documented default policy, not the shipped one."""
    policy = tmp_path / "policy.json"
    policy.write_text((policy_ or Policy()).model_dump_json())
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "prefix": prefix, "redis": {"url": REDIS_URL}, "metrics": {"port": port, "host": "127.0.0.1"},
        "face_worker": {"min_idle_ms": 1000},
        "fusion": {"window_s": 600, "policy": str(policy), "min_idle_ms": 1000},
    }))
    return path


def start_fusion(cfg: Path, name: str = "f1") -> subprocess.Popen[str]:
    return subprocess.Popen(liveness_cmd("fusion", "--config", str(cfg), "--name", name),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_process(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=30)[0]


def send_face_score(r: redis.Redis, keys: Keys, camera: str, track: str, frame: int, score: float,
                    label: str | None = None, source_id: str | None = None) -> None:
    now = time.time()
    msg = FaceScore(source_id or f"{1000 + frame}-{hash(track) % 1000}", camera, track, frame, now - 0.05, now - 0.04,
                    now - 0.01, score, "face", "t", label)
    r.xadd(keys.stream(FaceScore), msg.to_fields())


def read_decisions(r: redis.Redis, keys: Keys) -> list[Decision]:
    return [Decision.from_fields(f) for _, f in r.xrange(keys.stream(Decision))]


# the pipeline's services, one process each

FAULT_CLIPS = {"live-a": "ClientRaw/0001_00_00_01", "live-b": "ClientRaw/0004_01_00_01",
               "photo": "ImposterRaw/0001_00_00_01"}


def make_clip(frames: list[Path], dest: Path, fps: float = 15.0) -> Path:
    """A Motion-JPEG clip of NUAA frames: a file camera with a known end."""
    first = cv2.imread(str(frames[0]))
    writer = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*"MJPG"), fps, (first.shape[1], first.shape[0]))
    for f in frames:
        writer.write(cv2.imread(str(f)))
    writer.release()
    return dest


def services_config(tmp_path: Path, prefix: str, clips: dict[str, str]) -> Path:
    cams = []
    for cam, seq in clips.items():
        clip = make_clip(nuaa_sequence(seq), tmp_path / f"{cam}.avi")
        cams.append({"id": cam, "source": str(clip), "label": "spoof" if cam.startswith("photo") else "live"})
    # the documented default policy, not the shipped one: an uncalibrated camera under the shipped
    # policy may leave a live track undecided on purpose, and these tests need every track decided
    policy = tmp_path / "policy.json"
    policy.write_text(Policy().model_dump_json())
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "prefix": prefix, "metrics": {"port": 0},
        "face_worker": {"min_idle_ms": 1000, "batch_size": 8}, "eye_worker": {"min_idle_ms": 1000},
        "fusion": {"policy": str(policy), "min_idle_ms": 1000}, "cameras": cams,
        "ingest": {"eyes": True},  # both evidence paths, each with its faults
    }))
    return path


class Services:
    """The pipeline's processes, started one by one so the test can kill any of them.

    Each writes its log to a file beside the config, so a test can read what a running
    process said (``log``) without a pipe that fills up and blocks it.
    """

    def __init__(self, config: Path, redis_env: dict[str, str] | Callable[[str], dict[str, str]]) -> None:
        """``redis_env``: what each process adds to this environment, or a function of its command
        giving it (``PrivateRedisServer.env``: each role its own Redis user)."""
        self.config = config
        self.redis_env = redis_env
        self.env = {**os.environ, **(redis_env("status") if callable(redis_env) else redis_env)}
        """The environment of a command run beside the services (``liveness status``)."""
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.logs: dict[str, str] = {}

    def start(self, name: str, *args: str) -> None:
        cmd = liveness_cmd(*args, "--config", str(self.config))
        if args[0] != "ingest":
            cmd += ["--name", name]
        extra = self.redis_env(args[0]) if callable(self.redis_env) else self.redis_env
        with self._log_path(name).open("w") as out:
            self.procs[name] = subprocess.Popen(cmd, env={**os.environ, **extra}, stdout=out, stderr=subprocess.STDOUT,
                                                text=True)

    def start_scoring(self) -> None:
        """Fusion, a face worker and an eye worker: what every camera needs downstream."""
        self.start("fusion", "fusion")
        self.start("face", "face-worker")
        self.start("eye", "eye-worker")

    def log(self, name: str) -> str:
        """What the process has logged so far."""
        return self._log_path(name).read_text(errors="replace")

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(20)
        self.logs[name] = self.log(name)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.logs[name] = self.log(name)
        self.procs.clear()

    def _log_path(self, name: str) -> Path:
        return self.config.parent / f"{name}.log"


def drained(r: redis.Redis, keys: Keys) -> bool:
    """Every group has read and acknowledged everything."""
    return all(settled(r, keys.stream(kind)) for kind in (FaceCrop, EyeSample, FaceScore, EyeScore))
