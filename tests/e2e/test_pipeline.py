"""End to end, real everything: NUAA sequences replayed over RTSP, the whole pipeline run by
``liveness run`` with two face and two eye workers, decisions checked against the labels, and
a real Prometheus scraping the run."""

from __future__ import annotations

import json
import shutil
from collections import Counter
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import redis
import yaml

from liveness.contract import Decision, FaceScore, Heartbeat, Keys, Label
from liveness.defaults import artifact_path
from liveness.evidence import TrackEvidence
from liveness.heartbeat import heartbeats
from tests.conftest import NUAA, REDIS_URL, free_port, free_port_block, liveness_cmd, wait_for

CAMERAS = 4
ROLES = {"fusion": 1, "face-worker": 2, "eye-worker": 2, "ingest": CAMERAS, "supervisor": 1}
"""The processes ``liveness run --face-workers 2 --eye-workers 2`` starts for the replayed cameras."""


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=40)[0] or ""
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0] or ""


def settled_verdicts(r: redis.Redis, keys: Keys) -> dict[str, str]:
    """Per camera, the latest verdict of its longest open track, as `evaluate --model fused` counts
    a video; not whichever track the looping replay started last (decided spoof first, by design)."""
    last: dict[str, Decision] = {}
    for _, fields in r.xrange(keys.stream(Decision)):
        d = Decision.from_fields(fields)
        last[d.track] = d
    best: dict[str, tuple[int, str]] = {}
    for track, d in last.items():
        n = TrackEvidence.from_hash(r.hgetall(keys.track_state(track))).face_n
        if d.camera not in best or n > best[d.camera][0]:
            best[d.camera] = (n, d.verdict)
    return {cam: verdict for cam, (_, verdict) in best.items()}


def ready_roles(r: redis.Redis, keys: Keys) -> list[Heartbeat] | None:
    """The run's heartbeats, once every process it starts beats ready with a metrics port."""
    alive, _ = heartbeats(r, keys)
    ready = [hb for hb in alive if hb.state == "ready" and hb.metrics_port]
    return ready if Counter(hb.role for hb in ready) == Counter(ROLES) else None


def calibrate(r: redis.Redis, keys: Keys, cameras: list[str], tracks: int = 3) -> None:
    """Label ``tracks`` tracks of each camera live, once fusion holds 3 face scores for each of them."""
    def ready() -> dict[str, list[str]]:
        seen: dict[str, dict[str, int]] = {cam: {} for cam in cameras}
        for _, fields in r.xrange(keys.stream(FaceScore)):
            score = FaceScore.from_fields(fields)
            if score.camera in seen:
                seen[score.camera][score.track] = seen[score.camera].get(score.track, 0) + 1
        out = {}
        for cam, counts in seen.items():
            full = [t for t, n in counts.items() if n >= 3 and TrackEvidence.from_hash(
                r.hgetall(keys.track_state(t))).face_n >= 3]
            out[cam] = sorted(full)[:tracks]
        return out

    wait_for(lambda: all(len(t) == tracks for t in ready().values()), timeout_s=150, every_s=1)
    for cam, chosen in ready().items():
        for track in chosen:
            r.xadd(keys.stream(Label), Label(cam, track, "live", time.time()).to_fields())
    wait_for(lambda: all(r.zcard(keys.calibration(cam)) == tracks for cam in cameras), timeout_s=30)


def prom_query(port: int, query: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture
def pipeline(tmp_path: Path, prefix: str, r: redis.Redis):  # type: ignore[no-untyped-def]
    base = tmp_path / "base.yaml"
    metrics_port = free_port_block(sum(ROLES.values()))  # run gives its processes ports from here on
    # a replayed camera shows one person without a break, so it holds one track (frames were
    # smeared once, and tracks broke): calibration takes one labelled track instead of three
    policy = tmp_path / "fusion.json"
    policy.write_text(json.dumps({**json.loads(artifact_path("fusion.json").read_text()), "calibration_tracks": 1}))
    base.write_text(yaml.safe_dump({"prefix": prefix, "redis": {"url": REDIS_URL}, "fusion": {"policy": str(policy)},
                                    "metrics": {"port": metrics_port, "host": "127.0.0.1"}}))
    cams = tmp_path / "cameras.yaml"
    rtsp_port = free_port()
    replay = subprocess.Popen(liveness_cmd("replay", "--dataset", "nuaa", "--root", str(NUAA), "--split", "session-02",
                                           "--limit", str(CAMERAS), "--port", str(rtsp_port), "--write-config", str(cams),
                                           "--base-config", str(base)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert replay.stdout is not None
    line = replay.stdout.readline()
    while line and "serving" not in line:
        line = replay.stdout.readline()
    assert "serving" in line, f"replay did not start: {replay.communicate(timeout=10)[0]}"
    log = tmp_path / "run.log"
    with log.open("w") as out:
        run = subprocess.Popen(liveness_cmd("run", "--config", str(cams), "--face-workers", "2", "--eye-workers", "2"),
                               stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        yield yaml.safe_load(cams.read_text()), run
    finally:
        stop(run)
        stop(replay)
        print(log.read_text(errors="replace")[-5000:])


def test_replayed_cameras_get_the_right_decisions(pipeline, r: redis.Redis, prefix: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config, run = pipeline
    keys = Keys(prefix)
    # every process of the run says it is ready, and where its metrics are
    beats = wait_for(lambda: ready_roles(r, keys), timeout_s=120)
    labels = {c["id"]: c["label"] for c in config["cameras"]}
    assert sorted(labels.values()) == ["live", "live", "spoof", "spoof"]
    # commissioning, as an installer does it: a few live tracks of each live camera are labelled
    # live, which calibrates that camera (an uncalibrated camera is strict on purpose: fusion.md)
    calibrate(r, keys, [cam for cam, label in labels.items() if label == "live"], tracks=1)
    wait_for(lambda: settled_verdicts(r, keys) == labels, timeout_s=150, every_s=1)
    # a verdict may still be revised: each camera's verdict holds while 40 more crops are scored
    scored = r.xlen(keys.stream(FaceScore))
    wait_for(lambda: r.xlen(keys.stream(FaceScore)) >= scored + 40 or settled_verdicts(r, keys) != labels,
             timeout_s=60, every_s=0.5)
    assert settled_verdicts(r, keys) == labels
    assert run.poll() is None

    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed (.ci/run installs Debian's prometheus package)")
    from deploy.grafana.queries import panel_queries

    prom_port = free_port()
    targets = [f"127.0.0.1:{hb.metrics_port}" for hb in beats]
    prom_cfg = tmp_path / "prometheus.yml"
    prom_cfg.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "liveness", "static_configs": [{"targets": targets}]}],
    }))
    prom = subprocess.Popen(["prometheus", f"--config.file={prom_cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _up(prom_port) == len(targets), timeout_s=60, every_s=1)

        def empty_panels() -> list[tuple[str, str]]:
            return [(title, q) for title, q in panel_queries() if not prom_query(prom_port, q)]

        # rates and histogram quantiles have data after a few scrapes
        try:
            wait_for(lambda: not empty_panels(), timeout_s=60, every_s=2)
        except pytest.fail.Exception:
            pytest.fail(f"panels without data: {empty_panels()}")
    finally:
        prom.terminate()
        prom.wait(10)


def _up(port: int) -> int:
    try:
        return sum(1 for s in prom_query(port, "up") if s["value"][1] == "1")
    except OSError:
        return 0

