"""Faults, with real processes and a real Redis of the test's own (AOF on): killed services,
a crashed Redis under the deployments' ACL, and Redis with the deployments' users and TLS."""

from __future__ import annotations

from collections import Counter, defaultdict
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
import yaml

from liveness.contract import Decision, EyeSample, EyeScore, FaceCrop, FaceScore, Keys
from liveness.evidence import TrackEvidence
from liveness.streams import settled
from tests.conftest import PrivateRedisServer, liveness_cmd, wait_for
from tests.fixtures import (FAULT_CLIPS, Services, crop_message, drained, real_crops, services_config,
                            wait_state)


def check_exactly_once(r: redis.Redis, keys: Keys) -> dict[str, list[Decision]]:
    """Nothing lost, nothing counted twice; returns the decisions per track."""
    crops = {i.decode(): FaceCrop.from_fields(f) for i, f in r.xrange(keys.stream(FaceCrop))}
    face_scores = [FaceScore.from_fields(f) for _, f in r.xrange(keys.stream(FaceScore))]
    assert Counter(s.source_id for s in face_scores) == Counter(set(crops)), "every crop scored exactly once"
    windows = {i.decode() for i, f in r.xrange(keys.stream(EyeSample)) if b"window" in f}
    eye_scores = [EyeScore.from_fields(f) for _, f in r.xrange(keys.stream(EyeScore))]
    assert Counter(s.source_id for s in eye_scores) == Counter(windows), "every window scored exactly once"
    per_track: dict[str, Counter[str]] = defaultdict(Counter)
    for s in face_scores:
        per_track[s.track]["face"] += 1
    for s in eye_scores:
        per_track[s.track]["eye"] += 1
    for track, n in per_track.items():
        ev = TrackEvidence.from_hash(r.hgetall(keys.track_state(track)))
        assert (ev.face_n, ev.eye_n) == (n["face"], n["eye"]), f"{track}: fusion counted each score once"
    decisions: dict[str, list[Decision]] = defaultdict(list)
    for _, f in r.xrange(keys.stream(Decision)):
        d = Decision.from_fields(f)
        decisions[d.track].append(d)
    for track, ds in decisions.items():
        verdicts = [d.verdict for d in ds]
        assert all(a != b for a, b in zip(verdicts, verdicts[1:])), f"{track}: a decision emitted twice: {verdicts}"
    for track, n in per_track.items():
        if n["face"] >= 5:
            assert decisions.get(track), f"{track} had {n['face']} crops and no decision"
    return decisions


def test_killing_each_service_mid_run_loses_and_repeats_nothing(private_redis: PrivateRedisServer, prefix: str,
                                                                 tmp_path: Path) -> None:
    r = private_redis.client()
    keys = Keys(prefix)
    svc = Services(services_config(tmp_path, prefix, FAULT_CLIPS), private_redis.env())
    try:
        svc.start("fusion-a", "fusion")
        for name in ("face-a", "face-b"):
            svc.start(name, "face-worker")
        for name in ("eye-a", "eye-b"):
            svc.start(name, "eye-worker")
        wait_state(r, keys, "fusion-a", "face-a", "face-b", "eye-a", "eye-b")  # models loaded, groups read
        svc.start("ingest", "ingest")
        ingest = svc.procs["ingest"]
        wait_for(lambda: r.exists(keys.stream(FaceScore)) and r.xlen(keys.stream(FaceScore)) > 10, timeout_s=60)
        # each kill once the survivors have moved on since the last one
        for victim, survivor_output in (("face-a", FaceScore), ("eye-a", EyeScore)):
            before = r.xlen(keys.stream(survivor_output))
            svc.kill(victim)
            wait_for(lambda: r.xlen(keys.stream(survivor_output)) > before + 2 or ingest.poll() is not None,
                     timeout_s=60)
        svc.kill("fusion-a")
        # fusion-b starts with scores waiting that nobody has read, and fusion-a's unacknowledged ones
        wait_for(lambda: not settled(r, keys.stream(FaceScore), keys.group("fusion")) or ingest.poll() is not None,
                 timeout_s=60)
        svc.start("fusion-b", "fusion")
        wait_for(lambda: ingest.poll() is not None, timeout_s=120, every_s=1)
        wait_for(lambda: drained(r, keys), timeout_s=90, every_s=1)
    finally:
        svc.stop_all()
    decisions = check_exactly_once(r, keys)
    assert {d[0].camera for d in decisions.values()} == set(FAULT_CLIPS), "every camera's track was decided"
    assert not any("Traceback" in log for log in svc.logs.values())


def snapshot(r: redis.Redis, keys: Keys) -> tuple[dict[bytes, dict[bytes, bytes]], dict[str, TrackEvidence]]:
    """The decisions (entry id -> fields) and fusion's track states, as Redis holds them now."""
    decisions = {i: f for i, f in r.xrange(keys.stream(Decision))}
    tracks = {Decision.from_fields(f).track for f in decisions.values()}
    tracks |= {FaceScore.from_fields(f).track for _, f in r.xrange(keys.stream(FaceScore))}
    states = {t: TrackEvidence.from_hash(r.hgetall(keys.track_state(t))) for t in tracks}
    return decisions, {t: ev for t, ev in states.items() if ev.face_n or ev.eye_n}


def test_redis_crash_mid_run_under_the_shipped_acl_loses_and_repeats_nothing(prefix: str, tmp_path: Path) -> None:
    """Redis with the deployments' ACL file and AOF settings, SIGKILLed mid-run and started again:
    it replays its AOF (as user ``default``), and every decision, track state and acknowledgement
    written before the crash is there; the run goes on, and nothing is decided twice."""
    server = PrivateRedisServer(tmp_path / "redis", acl_prefix=prefix)
    server.start()
    r = server.client()
    keys = Keys(prefix)
    config = services_config(tmp_path, prefix, {"live-a": FAULT_CLIPS["live-a"], "photo": FAULT_CLIPS["photo"]})
    settings = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**settings, "streams": {"crop_retention_s": 3600}}))  # every crop stays to be counted
    svc = Services(config, server.env)
    try:
        svc.start_scoring()
        wait_state(r, keys, "fusion", "face", "eye")
        svc.start("ingest", "ingest", "--loop")
        wait_for(lambda: r.exists(keys.stream(Decision)) and r.xlen(keys.stream(Decision)) >= 2
                 and r.xlen(keys.stream(FaceScore)) >= 40, timeout_s=90)
        decisions, states = snapshot(r, keys)
        delivered = {g["name"]: _entry(g["last-delivered-id"]) for g in r.xinfo_groups(keys.stream(FaceCrop))}
        server.kill()
        # Redis stays down until every service has met the outage
        wait_for(lambda: all("Redis unavailable" in svc.log(name) for name in ("fusion", "face", "eye"))
                 and "Redis write failed" in svc.log("ingest"), timeout_s=60)
        server.start()
        r = server.client()
        after, after_states = snapshot(r, keys)
        lost = [i for i, f in decisions.items() if after.get(i) != f]
        assert not lost, f"{len(lost)} of {len(decisions)} decisions lost in the crash"
        for track, ev in states.items():
            now = after_states.get(track)
            assert now is not None and (now.face_n, now.eye_n, now.decisions) >= (ev.face_n, ev.eye_n, ev.decisions), \
                f"{track}: fusion's state went back in the crash"
        for g in r.xinfo_groups(keys.stream(FaceCrop)):
            assert _entry(g["last-delivered-id"]) >= delivered[g["name"]], "group state kept"
        before = r.xlen(keys.stream(FaceScore))
        wait_for(lambda: r.xlen(keys.stream(FaceScore)) > before + 20, timeout_s=60)
        wait_state(r, keys, "fusion", "face", "eye", "ingest:live-a")  # each says it is back at work
        assert all(p.poll() is None for p in svc.procs.values()), "every service carried on"
        svc.procs["ingest"].send_signal(signal.SIGTERM)
        wait_for(lambda: svc.procs["ingest"].poll() is not None, timeout_s=40)
        wait_for(lambda: drained(r, keys), timeout_s=90, every_s=1)
        svc.stop_all()
        check_exactly_once(r, keys)
    finally:
        svc.stop_all()
        server.stop()
    logs = "".join(svc.logs.values())
    assert "Traceback" not in logs and "NOPERM" not in logs
    assert not any(p in logs for p in server.passwords.values())


def _entry(entry_id: bytes) -> tuple[int, int]:
    ms, seq = entry_id.decode().split("-")
    return int(ms), int(seq)


def test_role_users_and_tls(tmp_path: Path, prefix: str) -> None:
    """The pipeline under the deployments' ACL file, each service as its role's user, over TLS:
    nothing refused, nothing lost, every decision signed with fusion's key."""
    server = PrivateRedisServer(tmp_path / "secure", tls=True, acl_prefix=prefix)
    server.start()
    r = server.client()
    keys = Keys(prefix)
    svc = Services(services_config(tmp_path, prefix, {"photo": FAULT_CLIPS["photo"]}), server.env)
    try:
        svc.start_scoring()
        wait_state(r, keys, "fusion", "face", "eye")
        svc.start("ingest", "ingest")
        wait_for(lambda: r.exists(keys.stream(Decision)), timeout_s=90)
        wait_for(lambda: svc.procs["ingest"].poll() is not None, timeout_s=60)
        wait_for(lambda: drained(r, keys), timeout_s=60)
        svc.stop_all()
        decisions = check_exactly_once(r, keys)
        key = server.decision_key.encode()
        assert all(d.authentic(key) for ds in decisions.values() for d in ds), "fusion signed every decision"
    finally:
        svc.stop_all()
        server.stop()
    logs = "".join(svc.logs.values())
    assert "NOPERM" not in logs and "no permissions" not in logs, "each service needs no command beyond its user's"
    assert not any(p in logs for p in server.passwords.values()) and "Traceback" not in logs


def test_services_started_before_redis_wait_for_it(prefix: str, tmp_path: Path) -> None:
    server = PrivateRedisServer(tmp_path / "late")
    keys = Keys(prefix)
    svc = Services(services_config(tmp_path, prefix, {"live-a": FAULT_CLIPS["live-a"]}), server.env())
    try:
        svc.start_scoring()
        svc.start("ingest", "ingest", "--loop")
        wait_for(lambda: all("not answering" in svc.log(name) for name in svc.procs), timeout_s=60)
        assert all(p.poll() is None for p in svc.procs.values()), "nobody gave up while Redis was down"
        server.start()
        r = server.client()
        wait_for(lambda: r.exists(keys.stream(Decision)), timeout_s=90)
        wait_state(r, keys, "fusion", "face", "eye", "ingest:live-a")  # every one of them came to work
        assert all(p.poll() is None for p in svc.procs.values())
    finally:
        svc.stop_all()
        server.stop()
    logs = "".join(svc.logs.values())
    assert "not answering" in logs and "Traceback" not in logs


def test_redis_out_of_memory_is_neither_a_delivery_nor_a_dead_letter(tmp_path: Path, prefix: str) -> None:
    """Two face workers read crops, and Redis refuses their commits for want of memory for several
    reclaim periods: each holds its batch, claiming it without counting a delivery; `liveness
    status` says Redis is out of memory. Once memory is back, every crop is scored once, and none
    was delivered twice or dead-lettered."""
    server = PrivateRedisServer(tmp_path / "redis", acl_prefix=prefix)
    server.start()
    r = server.client()
    keys = Keys(prefix)
    svc = Services(services_config(tmp_path, prefix, {}), server.env)
    crops = [crop_message(jpeg, "cam", f"cam:1:{i % 3}", i) for i, jpeg in enumerate(real_crops("live", 24))]
    try:
        svc.start("face-a", "face-worker")
        svc.start("face-b", "face-worker")
        wait_state(r, keys, "face-a", "face-b")
        for name in ("face-a", "face-b"):  # the crops wait for them, and memory runs out before they read
            svc.procs[name].send_signal(signal.SIGSTOP)
        ids = [r.xadd(keys.stream(FaceCrop), crop.to_fields()).decode() for crop in crops]
        r.config_set("maxmemory", int(r.info("memory")["used_memory"]) // 2)
        for name in ("face-a", "face-b"):
            svc.procs[name].send_signal(signal.SIGCONT)
        with pytest.raises(redis.OutOfMemoryError):
            r.xadd(keys.stream(FaceScore), {"probe": 1})
        wait_for(lambda: r.xpending(keys.stream(FaceCrop), keys.group("face-workers"))["pending"], timeout_s=30)
        time.sleep(6)  # six reclaim periods (min_idle_ms 1000) with every commit refused
        pending = r.xpending_range(keys.stream(FaceCrop), keys.group("face-workers"), "-", "+", 100)
        assert pending and all(p["times_delivered"] == 1 for p in pending), "running out of memory is no delivery"
        status = subprocess.run(liveness_cmd("status", "--config", str(svc.config), "--json"), env=svc.env,
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 1 and json.loads(status.stdout)["redis_out_of_memory"] is True
        assert all("Redis out of memory" in svc.log(name) for name in ("face-a", "face-b"))
        r.config_set("maxmemory", 0)
        wait_for(lambda: settled(r, keys.stream(FaceCrop)), timeout_s=30)
        svc.stop_all()
        scored = Counter(FaceScore.from_fields(f).source_id for _, f in r.xrange(keys.stream(FaceScore)))
        assert scored == Counter(ids), "every crop scored exactly once"
        assert not r.exists(keys.dead(keys.stream(FaceCrop))), "nothing dead-lettered"
    finally:
        svc.stop_all()
        server.stop()
    logs = "".join(svc.logs.values())
    assert "dead-lettered" not in logs and "Traceback" not in logs and "took the held batch" in logs
