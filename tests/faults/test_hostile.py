"""Hostile input on every stream, generated with hypothesis: truncated, oversized and wrongly
typed fields, huge or non-image crops, NaN ratios. Each is dead-lettered with a reason or
processed; nothing crashes, and a good track decided alongside is unaffected."""

from __future__ import annotations

import math
from pathlib import Path

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveness.contract import Decision, EyeSample, EyeScore, FaceCrop, FaceScore, Keys, Label
from tests.conftest import PrivateRedisServer, wait_for
from tests.fixtures import (Services, crop_message, drained, real_crops, real_eye_samples, services_config,
                            wait_state)

VALID = {
    FaceCrop: lambda: crop_message(real_crops("live")[0], "cam", "hostile:1", 1).to_fields(),
    EyeSample: lambda: real_eye_samples("live")[30].to_fields(),
    FaceScore: lambda: FaceScore("1-0", "cam", "hostile:2", 1, 1.0, 1.0, 1.0, 0.5, "face", "1").to_fields(),
    EyeScore: lambda: EyeScore("1-0", "cam", "hostile:3", 1, 1.0, 1.0, 1.0, 0.5, "eye", "1").to_fields(),
    Label: lambda: Label("cam", "hostile:4", "live", 1.0).to_fields(),
}

junk = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=70_000, max_size=70_001),
    st.sampled_from([b"", b"nan", b"NaN", b"inf", b"-1", b"1e400", b"[1,2]", b"[[NaN,1]]", b"\xff\xd8\xff", b"null",
                     b"[" + b"[0.3,0.3]," * 9 + b"[0.3]]", str(math.nan).encode(), b"\x00" * 10]),
    st.integers().map(lambda i: str(i).encode()),
    st.text(max_size=30).map(str.encode),
)


@st.composite
def hostile(draw: st.DrawFn) -> tuple[type, dict[str, bytes]]:
    kind = draw(st.sampled_from(list(VALID)))
    fields = VALID[kind]()
    how = draw(st.sampled_from(["replace", "drop", "truncate", "add", "huge_crop"]))
    name = draw(st.sampled_from(sorted(fields)))
    if how == "replace":
        fields[name] = draw(junk)
    elif how == "drop":
        del fields[name]
    elif how == "truncate":
        fields[name] = fields[name][: draw(st.integers(0, max(0, len(fields[name]) - 1)))]
    elif how == "add":
        fields[draw(st.text(min_size=1, max_size=8))] = draw(junk)
    elif kind is FaceCrop:
        fields["jpeg"] = b"\xff\xd8" + draw(st.binary(min_size=10, max_size=100)) * 3000
    return kind, fields


def test_hostile_messages_are_dead_lettered_not_fatal(private_redis: PrivateRedisServer, prefix: str,
                                                       tmp_path: Path) -> None:

    r = private_redis.client()
    keys = Keys(prefix)
    svc = Services(services_config(tmp_path, prefix, {"photo": "ImposterRaw/0001_00_00_01"}), private_redis.env())
    sent: list[tuple[type, str]] = []
    try:
        svc.start_scoring()
        wait_state(r, keys, "fusion", "face", "eye")

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(hostile())
        def send(msg: tuple[type, dict[str, bytes]]) -> None:
            kind, fields = msg
            entry = r.xadd(keys.stream(kind), fields)
            sent.append((kind, entry.decode()))

        send()
        svc.start("ingest", "ingest")  # a good camera alongside
        wait_for(lambda: svc.procs["ingest"].poll() is not None, timeout_s=90, every_s=1)
        wait_for(lambda: drained(r, keys) and _labels_drained(r, keys), timeout_s=90, every_s=1)
        alive = {name: p.poll() is None for name, p in svc.procs.items() if name != "ingest"}
    finally:
        svc.stop_all()
    assert all(alive.values()), alive
    dead = {}
    for kind in VALID:
        for _, f in r.xrange(keys.dead(keys.stream(kind))):
            dead[(kind, f[b"source_id"].decode())] = f[b"reason"].decode()
            assert f[b"reason"], "every dead letter says why"
    ours = set(sent)  # the score streams hold hostile entries too: skip those
    scored = {(FaceCrop, FaceScore.from_fields(f).source_id) for i, f in r.xrange(keys.stream(FaceScore))
              if (FaceScore, i.decode()) not in ours}
    scored |= {(EyeSample, EyeScore.from_fields(f).source_id) for i, f in r.xrange(keys.stream(EyeScore))
               if (EyeScore, i.decode()) not in ours}
    for kind, entry in sent:
        if (kind, entry) in dead:
            continue
        if kind is FaceCrop:
            assert (kind, entry) in scored, f"crop {entry} neither scored nor dead-lettered: {_show(r, keys, kind, entry)}"
        elif kind is EyeSample and b"window" in (r.xrange(keys.stream(EyeSample), entry, entry)[0][1]):
            assert (kind, entry) in scored, f"eye window {entry} neither scored nor dead-lettered: {_show(r, keys, kind, entry)}"
    assert len(dead) >= len(sent) // 3, "most hostile messages were refused"
    decisions = [Decision.from_fields(f) for _, f in r.xrange(keys.stream(Decision))]  # written by fusion only
    assert any(d.camera == "photo" for d in decisions), "the good camera was decided as usual"
    assert not any("Traceback" in log for log in svc.logs.values())


def _show(r: redis.Redis, keys: Keys, kind: type, entry: str) -> dict[bytes, bytes]:
    return {k: v[:60] for k, v in r.xrange(keys.stream(kind), entry, entry)[0][1].items()}


def _labels_drained(r: redis.Redis, keys: Keys) -> bool:
    groups = r.xinfo_groups(keys.stream(Label))
    return bool(groups) and not any(g["pending"] or g["lag"] for g in groups)
