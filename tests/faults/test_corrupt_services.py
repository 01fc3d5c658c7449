"""Garbage in the Redis structures every service keeps, generated with hypothesis: each process's
heartbeat hash and the services set (written by all four services), and the ingest camera's start
counter. Each is replaced or reset; every service goes on working and beating, and ``liveness
status`` reads through it. (Fusion's own state: ``test_corrupt_state``; input streams: ``test_hostile``.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveness.contract import EyeSample, FaceCrop, FaceScore, Keys
from liveness.heartbeat import heartbeats
from tests.conftest import PrivateRedisServer, liveness_cmd, wait_for
from tests.fixtures import FAULT_CLIPS, Services, services_config, wait_state

NAMES = ("fusion", "face", "eye", "ingest:live-a")
"""Every process the test runs, by the name it beats under."""

junk = st.one_of(st.binary(max_size=40), st.sampled_from([b"", b"nan", b"-1", b"9" * 30, b"\xff\xfe", b"ready"]))
fields = st.sampled_from(["v", "name", "role", "state", "host", "pid", "started_ts", "ts", "metrics_port", "x"])


@st.composite
def corruption(draw: st.DrawFn) -> tuple[str, str, Any]:
    """(structure, how, what): a key of another type, or junk where the structure's values go."""
    where = draw(st.sampled_from(["heartbeat", "services"]))
    if draw(st.booleans()):
        return where, "type", draw(st.sampled_from(["string", "list", "set", "zset" if where == "heartbeat" else "hash"]))
    if where == "heartbeat":
        return where, "junk", draw(st.dictionaries(fields, junk, min_size=1, max_size=4))
    members = st.dictionaries(st.binary(min_size=1, max_size=30), st.floats(allow_nan=False), min_size=1, max_size=4)
    return where, "junk", draw(members)


def corrupt(r: redis.Redis, keys: Keys, where: str, how: str, what: Any, name: str) -> None:
    key = keys.heartbeat(name) if where == "heartbeat" else keys.services
    if how == "type":
        r.delete(key)
        {"string": lambda: r.set(key, b"junk"), "list": lambda: r.rpush(key, b"junk"),
         "set": lambda: r.sadd(key, b"junk"), "zset": lambda: r.zadd(key, {b"junk": 1.0}),
         "hash": lambda: r.hset(key, b"junk", b"junk")}[what]()
    elif where == "heartbeat":
        r.hset(key, mapping=what)
    else:
        r.zadd(key, what)


def test_garbage_in_every_services_structures_never_stops_them(private_redis: PrivateRedisServer, prefix: str,
                                                                tmp_path: Path) -> None:
    r = private_redis.client()
    keys = Keys(prefix)
    svc = Services(services_config(tmp_path, prefix, {"live-a": FAULT_CLIPS["live-a"]}), private_redis.env())
    try:
        svc.start_scoring()
        svc.start("ingest", "ingest", "--loop")
        wait_state(r, keys, *NAMES)

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(corruption(), st.sampled_from(NAMES))
        def example(case: tuple[str, str, Any], name: str) -> None:
            scored = r.xlen(keys.stream(FaceScore))
            corrupt(r, keys, *case, name)
            heartbeats(r, keys)  # what `liveness status` reads: never an exception, whatever is there
            # each process beats over the garbage, ready, and the pipeline moves on
            wait_for(lambda: r.type(keys.services) == b"zset"
                     and {hb.name for hb in heartbeats(r, keys)[0] if hb.state == "ready"} >= set(NAMES),
                     timeout_s=15, every_s=0.1)
            wait_for(lambda: r.xlen(keys.stream(FaceScore)) > scored, timeout_s=30, every_s=0.1)
            assert all(p.poll() is None for p in svc.procs.values()), f"a service ended on {case}"

        example()
        status = subprocess.run(liveness_cmd("status", "--config", str(svc.config), "--json"), env=svc.env,
                                capture_output=True, text=True, timeout=60)
        listed = json.loads(status.stdout)
        assert {s["name"] for s in listed["services"]} == set(NAMES), listed
        assert {s["role"] for s in listed["services"]} == {"fusion", "face-worker", "eye-worker", "ingest"}
    finally:
        svc.stop_all()
    assert not any("Traceback" in log for log in svc.logs.values())
    assert not set(NAMES) & {m.decode(errors="replace") for m in r.zrange(keys.services, 0, -1)}, \
        "each clean exit leaves the list"


@pytest.mark.parametrize("garbage", ["string", "number too large", "list"])
def test_a_camera_counter_that_is_not_one_is_reset(private_redis: PrivateRedisServer, prefix: str, tmp_path: Path,
                                                   garbage: str) -> None:
    r = private_redis.client()
    keys = Keys(prefix)
    key = keys.camera_session("live-a")
    if garbage == "list":
        r.rpush(key, b"junk")
    else:
        r.set(key, b"not-a-number" if garbage == "string" else b"9" * 30)
    svc = Services(services_config(tmp_path, prefix, {"live-a": FAULT_CLIPS["live-a"]}), private_redis.env())
    try:
        svc.start("ingest", "ingest", "--loop")
        wait_state(r, keys, "ingest:live-a")
        wait_for(lambda: r.xlen(keys.stream(EyeSample)) > 0 and r.xlen(keys.stream(FaceCrop)) > 0, timeout_s=60)
        assert svc.procs["ingest"].poll() is None
    finally:
        svc.stop_all()
    start = int(r.get(key))
    assert start > 1_700_000_000, "a new counter above any count of earlier starts"
    tracks = {EyeSample.from_fields(f).track for _, f in r.xrange(keys.stream(EyeSample))}
    assert tracks and all(t.startswith(f"live-a:{start}:") for t in tracks)
    assert "is not a counter" in svc.logs["ingest"] and "Traceback" not in svc.logs["ingest"]
