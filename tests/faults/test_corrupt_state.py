"""Garbage in each Redis structure fusion keeps, generated with hypothesis: a track's state hash (any
field), its seen-set, the open-tracks and calibration sorted sets, the set of calibrated cameras and
the accuracy hash, holding junk or a key of another type. Each ends in a dead letter with its reason,
a reset or an ignored entry; fusion goes on deciding and never stops. (Garbage in the workers' and
fusion's input streams: ``test_hostile``.)"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveness.contract import Decision, FaceScore, Keys, Label
from liveness.evidence import Policy, TrackEvidence
from tests.conftest import free_port, wait_for
from tests.fixtures import fusion_config, metric, send_face_score, start_fusion, stop_process, wait_state

STRUCTURES = ("state", "seen", "open_tracks", "calibration", "calibrated", "accuracy")
FIELDS = [f.name for f in dataclasses.fields(TrackEvidence)]
KINDS = {"hash", "set", "zset"}

junk = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"", b"not-a-number", b"nan", b"inf", b"-inf", b"-1", b"1e400", b"null", b"[1,2]", b"{}",
                     b"[" + b"0," * 19 + b"-1]", b"[" + b"true," * 19 + b"true]", b"\xff\xfe", b"1.5", b"9" * 30]),
    st.integers().map(lambda i: str(i).encode()),
    st.floats().map(lambda x: repr(x).encode()),
    st.text(max_size=20).map(str.encode),
)
members = st.lists(st.binary(min_size=1, max_size=30), min_size=1, max_size=5)
scores = st.floats(allow_nan=False)  # a sorted set holds any score but NaN


@st.composite
def corruption(draw: st.DrawFn) -> tuple[str, str, Any]:
    """(structure, "type" or "junk", what to write)."""
    where = draw(st.sampled_from(STRUCTURES))
    if draw(st.integers(0, 3)) == 0:
        return where, "type", draw(st.sampled_from(["string", "list"]))
    if where == "state":
        return where, "junk", draw(st.dictionaries(st.sampled_from(FIELDS), junk, min_size=1, max_size=3))
    if where in ("seen", "calibrated"):
        return where, "junk", draw(members)
    if where in ("open_tracks", "calibration"):
        camera = draw(st.one_of(st.just("cam"), st.text(min_size=1, max_size=12)))
        return where, "junk", (camera, draw(st.dictionaries(st.binary(min_size=1, max_size=20), scores, min_size=1,
                                                             max_size=4)))
    field = draw(st.one_of(st.just(b"cam|live|spoof"), st.binary(max_size=30)))  # the first one is counted below
    return where, "junk", {field: draw(junk)}


def corrupt(r: redis.Redis, keys: Keys, track: str, where: str, how: str, what: Any) -> None:
    camera = what[0] if where in ("open_tracks", "calibration") and how == "junk" else "cam"
    key = {"state": keys.track_state(track), "seen": keys.seen(track), "open_tracks": keys.open_tracks,
           "calibration": keys.calibration(camera), "calibrated": keys.calibrated, "accuracy": keys.accuracy}[where]
    if how == "type":
        r.delete(key)
        if what == "string":
            r.set(key, b"junk")
        else:
            r.rpush(key, b"junk")
        return
    if where == "state":  # a track already under way, then some of its fields overwritten
        ev = TrackEvidence()
        for i in range(2):
            ev.add("face", 0.9, 1.0 + i, Policy())
            ev.add("eye", 0.3, 1.0 + i, Policy())
        r.hset(key, mapping={**ev.to_hash(), **what})
    elif where in ("seen", "calibrated"):
        r.sadd(key, *what)
    elif where in ("open_tracks", "calibration"):
        r.zadd(key, what[1])
        if where == "calibration":
            r.sadd(keys.calibrated, camera)
    else:
        r.hset(key, mapping=what)


def test_garbage_in_fusion_state_never_stops_fusion(r: redis.Redis, prefix: str, tmp_path: Path) -> None:
    keys = Keys(prefix)
    group = keys.group("fusion")
    proc = start_fusion(fusion_config(tmp_path, prefix, free_port()))
    examples = iter(range(10_000))
    try:
        port = wait_state(r, keys, "f1")["f1"].metrics_port

        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(corruption())
        def example(case: tuple[str, str, Any]) -> None:
            n = next(examples)
            track, probe = f"t{n}", f"probe{n}"
            corrupt(r, keys, track, *case)
            sent = []
            for frame in range(4):
                send_face_score(r, keys, "cam", track, frame, 0.97, "live", source_id=f"{n}-{frame}")
                send_face_score(r, keys, "probe", probe, frame, 0.97, source_id=f"{n}-{frame}")
                sent.append(f"{n}-{frame}")
            r.xadd(keys.stream(Label), Label("cam", track, "live", time.time()).to_fields())
            wait_for(lambda: probe in {Decision.from_fields(f).track for _, f in r.xrevrange(keys.stream(Decision),
                                                                                          count=20)}
                     and _drained(r, keys, group), timeout_s=30, every_s=0.02)
            assert proc.poll() is None, f"fusion ended on {case}"
            for _, f in r.xrange(keys.dead(keys.stream(FaceScore))):
                if f[b"f:track"] == track.encode():
                    assert f[b"reason"].startswith(b"corrupt state: "), (case, f[b"reason"])
                assert f[b"f:track"] != probe.encode(), f"a clean track was dead-lettered: {case}"
            state = r.hgetall(keys.track_state(track))
            if state:  # garbage is reset or parsed as what it says, never carried on as evidence
                TrackEvidence.from_hash(state)

        example()
        # the gauges read every structure after the last garbage: a new camera's calibration shows
        r.zadd(keys.calibration("gauged"), {"a": -1.0, "b": -2.0, "c": -3.0})
        r.sadd(keys.calibrated, "gauged")
        wait_for(lambda: metric(port, 'liveness_calibration_tracks{camera="gauged"}') == 3, timeout_s=15)
        wait_for(lambda: all(r.type(k).decode() in KINDS | {"none"} for k in _read_by_gauges(r, keys)),
                 timeout_s=15)  # a key of another type is reset
        assert math.isfinite(metric(port, 'liveness_live_baseline_logodds{camera="gauged"}'))
        for _, f in r.xrange(keys.stream(Decision)):
            Decision.from_fields(f)  # every decision fusion wrote keeps the contract, garbage or not
        assert proc.poll() is None
    finally:
        out = stop_process(proc)
    assert "Traceback" not in out


def _read_by_gauges(r: redis.Redis, keys: Keys) -> list[str]:
    cameras = r.smembers(keys.calibrated) if r.type(keys.calibrated) == b"set" else set()
    calibrations = []
    for camera in cameras:
        try:
            calibrations.append(keys.calibration(camera.decode()))
        except UnicodeDecodeError:
            continue
    return [keys.open_tracks, keys.accuracy, keys.calibrated, *calibrations]


def _drained(r: redis.Redis, keys: Keys, group: str) -> bool:
    for stream in (FaceScore, Label):
        for g in r.xinfo_groups(keys.stream(stream)):
            if g["name"].decode() == group and (g["pending"] or g["lag"]):
                return False
    return True
