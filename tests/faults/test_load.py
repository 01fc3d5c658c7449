"""Load: slow consumers, a camera that never comes back, and a soak at load."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
import yaml

from liveness.contract import EyeSample, EyeScore, FaceCrop, FaceScore, Keys
from liveness.heartbeat import heartbeats
from tests.conftest import NUAA, REDIS_URL, RtspServer, free_port, liveness_cmd, wait_for
from tests.fixtures import heartbeat, metric, metrics_port, wait_state

SOAK_S = float(os.environ.get("LIVENESS_SOAK_S", "600"))
"""Length of the long soak (LIVENESS_SLOW=1), seconds (the issue asks for 10 minutes)."""

SHORT_SOAK_S = 45.0
"""Length of the soak of every run, seconds. Once every camera is scored, each process of the
pipeline grew by under 1 % in 45 s (measured: under 0.5 MB of 130-180 MB over 280 s), while
keeping one face crop per frame would add about 10 %."""


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_slow_consumers_keep_streams_bounded_and_ingest_sheds(rtsp: RtspServer, r: redis.Redis, prefix: str,
                                                              tmp_path: Path) -> None:
    keys = Keys(prefix)
    # the face workers' group exists but nobody consumes: they lag without bound
    r.xgroup_create(keys.stream(FaceCrop), keys.group("face-workers"), id="$", mkstream=True)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "prefix": prefix, "redis": {"url": REDIS_URL}, "metrics": {"port": free_port(), "host": "127.0.0.1"},
        "streams": {"maxlen": 300, "max_face_lag": 40},
        "ingest": {"crop_every": 1, "eye_every": 1, "eyes": True},  # every frame to both streams: bounds are reached fast
        "cameras": [{"id": "busy", "source": rtsp.url("live")}],
    }))
    proc = subprocess.Popen(liveness_cmd("ingest", "--config", str(cfg)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        port = metrics_port(r, keys, "ingest:busy")
        wait_for(lambda: metric(port, 'liveness_frames_shed_total{camera="busy"}') > 20, timeout_s=90)
        wait_for(lambda: r.xlen(keys.stream(EyeSample)) >= 300, timeout_s=90)
        rss_start = rss_kb(proc.pid)
        lengths = []
        published = 'liveness_messages_published_total{camera="busy",stream="eyes"}'
        start = metric(port, published)

        def turned_over() -> bool:
            """Sampled until the eye stream has taken half its cap again since the start."""
            lengths.append((r.xlen(keys.stream(FaceCrop)), r.xlen(keys.stream(EyeSample))))
            return metric(port, published) >= start + 150

        wait_for(turned_over, timeout_s=120, every_s=0.5)
        rss_end = rss_kb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    assert all(faces <= 300 + 100 and eyes <= 300 + 100 for faces, eyes in lengths), lengths  # MAXLEN ~ trims by node
    assert max(f for f, _ in lengths) <= 40 + 100, "crops stop once the lag bound is passed"
    assert rss_end < rss_start * 1.1, (rss_start, rss_end)
    assert "shedding crops" in out


def test_camera_that_never_comes_back_leaves_the_others_alone(rtsp: RtspServer, r: redis.Redis, prefix: str,
                                                              tmp_path: Path) -> None:
    keys = Keys(prefix)
    other = RtspServer({"gone": rtsp.mounts["photo"]}, free_port())
    other.start()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "prefix": prefix, "redis": {"url": REDIS_URL}, "metrics": {"port": free_port(), "host": "127.0.0.1"},
        "ingest": {"eyes": True},  # the eye windows show which camera still sends
        "cameras": [{"id": "steady", "source": rtsp.url("live")},
                    {"id": "gone", "source": other.url("gone"), "read_timeout_s": 2.0, "open_timeout_s": 2.0}],
    }))
    proc = subprocess.Popen(liveness_cmd("ingest", "--config", str(cfg)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)

    def cameras_seen(count: int = 300) -> set[str]:
        return {EyeSample.from_fields(f).camera for _, f in r.xrevrange(keys.stream(EyeSample), count=count)}

    try:
        wait_for(lambda: cameras_seen() == {"steady", "gone"}, timeout_s=90)
        other.stop()  # and it never comes back
        wait_state(r, keys, "ingest:gone", state="waiting", timeout_s=30)  # it has seen its camera go
        before = r.xlen(keys.stream(EyeSample))
        # the steady camera carries on: 40 samples since, none of the other (at 10 fps, one sample every
        # 3rd frame: 12 s)
        wait_for(lambda: r.xlen(keys.stream(EyeSample)) >= before + 40, timeout_s=60)
        recent = cameras_seen(40)
        assert recent == {"steady"}, recent
        assert (steady := heartbeat(r, keys, "ingest:steady")) is not None and steady.state == "ready"
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
        other.stop()
    assert "ingest gone" in out and "Traceback" not in out


@pytest.mark.parametrize(("seconds", "growth"), [
    pytest.param(SHORT_SOAK_S, 0.05, id="short"),
    pytest.param(SOAK_S, 0.10, id="long", marks=[pytest.mark.slow, pytest.mark.timeout(SOAK_S + 300)]),
])
def test_soak_memory_stays_flat(r: redis.Redis, prefix: str, tmp_path: Path, seconds: float, growth: float) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"prefix": prefix, "redis": {"url": REDIS_URL}, "metrics": {"port": 0},
                                    "ingest": {"eyes": True}}))  # both worker pools soak
    cams = tmp_path / "cameras.yaml"
    replay = subprocess.Popen(liveness_cmd("replay", "--dataset", "nuaa", "--root", str(NUAA), "--split", "session-01",
                                           "--limit", "4", "--port", str(free_port()), "--write-config", str(cams),
                                           "--base-config", str(base)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert replay.stdout is not None
    while "serving" not in (line := replay.stdout.readline()):
        assert line, "replay did not start"
    run = subprocess.Popen(liveness_cmd("run", "--config", str(cams)), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    keys = Keys(prefix)

    def scored(kind: type[FaceScore] | type[EyeScore]) -> set[str]:
        return {kind.from_fields(f).camera for _, f in r.xrevrange(keys.stream(kind), count=500)}

    def services() -> dict[str, int]:
        """Each service process's pid, from its heartbeat: the 4 cameras' ingest, both workers, fusion."""
        return {hb.name: hb.pid for hb in heartbeats(r, keys)[0] if hb.role != "supervisor" and hb.state == "ready"}

    try:
        wait_for(lambda: len(services()) == 7 and len(scored(FaceScore)) == len(scored(EyeScore)) == 4,
                 timeout_s=180, every_s=1)
        # the soak's own length, not a wait for anything: first a warm-up (allocator pools and track
        # state reach their working size), then the measured part
        time.sleep(min(90.0, seconds / 4))
        pids = services()
        warm = {pid: rss_kb(pid) for pid in pids.values()}
        time.sleep(seconds)
        end = {pid: rss_kb(pid) for pid in pids.values()}
        assert services() == pids, "no process died or was restarted"
        grown = {pid: (warm[pid], end[pid]) for pid in warm if end[pid] > warm[pid] * (1 + growth)}
        assert not grown, f"resident memory grew more than {growth:.0%}: {grown}"
        assert r.xlen(keys.stream(FaceCrop)) <= 10_000 + 100
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(60)
        replay.send_signal(signal.SIGTERM)
        replay.wait(30)
