"""Face and eye worker pools as real processes on real Redis, scoring real crops and windows."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import redis
import yaml

from liveness.contract import EyeSample, EyeScore, FaceCrop, FaceScore, Keys
from liveness.defaults import artifact_path
from liveness.eyes import INPUT_SIZE
from liveness.streams import settled
from liveness.workers.runners import FACE_INPUT_SHAPE, OnnxModel
from tests.conftest import REDIS_URL, free_port, liveness_cmd, wait_for
from tests.fixtures import crop_message, metric, real_crops, real_eye_samples, wait_state


def config(tmp_path: Path, prefix: str, **worker: object) -> Path:
    path = tmp_path / "config.yaml"
    section = {"min_idle_ms": 1000, "batch_size": 8, **worker}
    path.write_text(yaml.safe_dump({
        "prefix": prefix, "redis": {"url": REDIS_URL}, "metrics": {"port": 0, "host": "127.0.0.1"},
        "face_worker": section, "eye_worker": section,
    }))
    return path


def start(kind: str, cfg: Path, name: str, metrics: bool = False) -> subprocess.Popen[str]:
    """A worker process; with ``metrics``, serving them on the first free port it finds (its heartbeat says which)."""
    env_port = {"LIVENESS_METRICS__PORT": str(free_port() if metrics else 0)}
    return subprocess.Popen(liveness_cmd(kind, "--config", str(cfg), "--name", name),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **env_port})


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return out


def add_crops(r: redis.Redis, keys: Keys, n: int) -> list[str]:
    """``n`` crops of a live face and of a printed photo in turn, each labelled (scores carry the label)."""
    crops = [(c, "live") for c in real_crops("live")] + [(c, "spoof") for c in real_crops("spoof")]
    ids = []
    pipe = r.pipeline()
    for i in range(n):
        jpeg, label = crops[i % len(crops)]
        pipe.xadd(keys.stream(FaceCrop), crop_message(jpeg, "cam", f"cam:1:{i % 7}", i, label).to_fields())
    for entry_id in pipe.execute():
        ids.append(entry_id.decode())
    return ids


def scores(r: redis.Redis, keys: Keys, kind: type[FaceScore] | type[EyeScore]) -> list[FaceScore | EyeScore]:
    return [kind.from_fields(f) for _, f in r.xrange(keys.stream(kind))]


def test_two_face_workers_share_the_stream(r: redis.Redis, prefix: str, tmp_path: Path) -> None:
    keys = Keys(prefix)
    cfg = config(tmp_path, prefix)
    workers = [start("face-worker", cfg, f"w{i}", metrics=True) for i in range(2)]
    processed = 'liveness_messages_processed_total{group="' + keys.group("face-workers") + '"}'
    try:
        beats = wait_state(r, keys, "w0", "w1")  # both read from the group before the work arrives
        ports = [beats[name].metrics_port for name in ("w0", "w1")]
        ids = add_crops(r, keys, 400)
        wait_for(lambda: settled(r, keys.stream(FaceCrop)), timeout_s=120)
        # counted after the commit: read until both endpoints have counted every crop
        wait_for(lambda: sum(metric(p, processed) for p in ports) == 400, timeout_s=10, every_s=0.05)
        done = [metric(p, processed) for p in ports]
    finally:
        outs = [stop(w) for w in workers]
    got = scores(r, keys, FaceScore)
    assert sorted(s.source_id for s in got) == sorted(ids), "every crop scored exactly once"
    assert all(d > 0 for d in done) and sum(done) == 400, f"both workers took a share: {done}"
    assert len({(s.model, s.model_version) for s in got}) == 1
    threshold = OnnxModel(artifact_path("face.onnx"), input_shape=FACE_INPUT_SHAPE).threshold
    live, spoof = ([s.score for s in got if s.label == label] for label in ("live", "spoof"))
    assert len(live) == len(spoof) == 200
    assert max(live) < threshold <= min(spoof), f"live faces above {threshold} or prints below it: {live} {spoof}"
    assert r.xpending(keys.stream(FaceCrop), keys.group("face-workers"))["pending"] == 0
    assert not any("Traceback" in o for o in outs)


def test_killed_face_worker_loses_nothing(r: redis.Redis, prefix: str, tmp_path: Path) -> None:
    keys = Keys(prefix)
    cfg = config(tmp_path, prefix, batch_size=64)
    group = keys.group("face-workers")
    ids: list[str] = []

    def pending(name: str) -> int:
        return next((c["pending"] for c in r.xinfo_consumers(keys.stream(FaceCrop), group)
                     if c["name"].decode() == name), 0)

    for attempt in range(5):
        # a new consumer name each try, so a try is judged by its own victim's pending list
        name, scored = f"victim{attempt}", r.xlen(keys.stream(FaceScore))
        victim = start("face-worker", cfg, name)
        ids += add_crops(r, keys, 600)
        # kill it once it has written a batch and holds the next one
        wait_for(lambda: r.xlen(keys.stream(FaceScore)) > scored and pending(name) > 0, timeout_s=60, every_s=0.005)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        if pending(name) > 0:
            break
    else:
        pytest.fail("could not kill the worker mid-batch in 5 tries")
    rescuer = start("face-worker", cfg, "rescuer")
    try:
        wait_for(lambda: r.xlen(keys.stream(FaceScore)) >= len(ids) and settled(r, keys.stream(FaceCrop)),
                 timeout_s=120)
    finally:
        stop(rescuer)
    got = [s.source_id for s in scores(r, keys, FaceScore)]
    assert sorted(got) == sorted(ids), "the killed worker's batch was reclaimed, nothing twice"
    assert r.xpending(keys.stream(FaceCrop), group)["pending"] == 0


def test_garbage_goes_to_dead_letters(r: redis.Redis, prefix: str, tmp_path: Path) -> None:
    keys = Keys(prefix)
    cfg = config(tmp_path, prefix)
    good = crop_message(real_crops("live")[0], "cam", "cam:1:1", 1)
    bad_jpeg = crop_message(b"\x00garbage bytes, not a JPEG", "cam", "cam:1:2", 2)
    old_release = {**good.to_fields(), "v": b"1"}  # the previous contract: one aligned 112x112 crop, no views
    old_release.pop("views")
    other_views = dataclasses.replace(good, track="cam:1:3", views=[1.0, 2.0])
    r.xadd(keys.stream(FaceCrop), {"whatever": b"\xff\xfe\x00"})
    r.xadd(keys.stream(FaceCrop), old_release)
    r.xadd(keys.stream(FaceCrop), other_views.to_fields())
    r.xadd(keys.stream(FaceCrop), bad_jpeg.to_fields())
    r.xadd(keys.stream(FaceCrop), good.to_fields())
    worker = start("face-worker", cfg, "w")
    try:
        wait_for(lambda: r.xlen(keys.stream(FaceScore)) >= 1 and r.xlen(keys.dead(keys.stream(FaceCrop))) >= 4,
                 timeout_s=60)
        assert worker.poll() is None
    finally:
        out = stop(worker)
    dead = [f for _, f in r.xrange(keys.dead(keys.stream(FaceCrop)))]
    reasons = sorted(f[b"reason"].decode() for f in dead)
    assert any("schema version" in x for x in reasons) and any("not a decodable image" in x for x in reasons)
    assert any("schema version 1, this release reads 3" in x for x in reasons)
    assert any("views [1.0, 2.0] do not match the face model's [2.7, 4.0]" in x for x in reasons)
    assert [s.track for s in scores(r, keys, FaceScore)] == ["cam:1:1"]
    assert "Traceback" not in out


def test_eye_worker_scores_windows_and_dead_letters_nan(r: redis.Redis, prefix: str, tmp_path: Path) -> None:
    keys = Keys(prefix)
    cfg = config(tmp_path, prefix)
    samples = real_eye_samples("live") + real_eye_samples("spoof", track="cam:1:2")
    with_window = [s for s in samples if s.window is not None]
    assert 0 < len(with_window) < len(samples)
    for s in samples:
        r.xadd(keys.stream(EyeSample), s.to_fields())
    nan = samples[-1].to_fields()
    nan["window"] = b"[[NaN,0.3]" + b",[0.3,0.3]" * 9 + b"]"
    r.xadd(keys.stream(EyeSample), nan)
    worker = start("eye-worker", cfg, "e")
    try:
        wait_for(lambda: settled(r, keys.stream(EyeSample)), timeout_s=60)
    finally:
        stop(worker)
    got = scores(r, keys, EyeScore)
    assert len(got) == len(with_window)
    assert [(s.track, s.frame) for s in got] == [(s.track, s.frame) for s in with_window]
    assert all(s.model == "eye" for s in got)
    # the model's own sequence rule: a quantile of a track's window scores against its sequence threshold
    meta = OnnxModel(artifact_path("eye.onnx"), input_shape=(INPUT_SIZE,)).metadata
    quantile, threshold = float(meta["liveness.sequence_quantile"]), float(meta["liveness.sequence_threshold"])
    live, spoof = (np.quantile([s.score for s in got if s.label == label], quantile) for label in ("live", "spoof"))
    assert live < threshold <= spoof, f"the blinking face's {live} or the print's {spoof} on the wrong side of {threshold}"
