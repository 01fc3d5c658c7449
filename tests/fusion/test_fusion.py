"""Fusion as a real process on real Redis: decisions, duplicates, labels, restarts."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis
import yaml

from liveness.contract import Decision, EyeScore, FaceScore, Keys, Label
from liveness.errors import CorruptStateError
from liveness.evidence import Policy, TrackEvidence, decided_by
from liveness.streams import settled
from tests.conftest import free_port, liveness_cmd, wait_for
from tests.fixtures import (fusion_config, metric, metrics_port, read_decisions, send_face_score, start_fusion,
                            stop_process)


def test_policy_defaults_decide_as_documented() -> None:
    policy = Policy()
    ev = TrackEvidence()
    for i in range(3):
        ev.add("face", 0.05, 1.0 + i, policy)
    assert ev.decide(policy)[0] == "live"
    ev = TrackEvidence()
    for i in range(3):
        ev.add("face", 0.95, 1.0 + i, policy)
    assert ev.decide(policy)[0] == "spoof"
    assert TrackEvidence.from_hash({k.encode(): v.encode() for k, v in ev.to_hash().items()}) == ev


def test_an_attack_like_moment_decides_spoof_and_is_never_revised_to_live() -> None:
    """A replay that looks live on most crops and like an attack on three in a row: spoof, and it stays so."""
    policy = Policy(face_weight=0.25, face_cap=12, spoof_at=1.5, live_at=2.0, moment_at=3.0)
    scores = [0.9, 0.9, 0.9, 0.2, 0.2, 0.99, 0.99, 0.99] + [0.05] * 30
    latched, plain = TrackEvidence(), TrackEvidence()
    verdicts = []
    for i, p in enumerate(scores):
        latched.step("face", p, float(i), policy, None, "evidence", float(i))
        plain.step("face", p, float(i), policy.model_copy(update={"moment_at": None}), None, "evidence", float(i))
        verdicts.append(latched.verdict)
    assert plain.verdict == "live", "without the moment, the live crops that follow outvote it"
    assert latched.verdict == "spoof" and latched.decisions == 1
    assert set(verdicts[7:]) == {"spoof"}
    assert latched.face_moment == 3.0 and len(latched.face_recent) == 3
    assert decided_by(*latched.evidence(policy), "spoof", policy, latched.face_moment) == "moment"
    # 0.9 is log-odds 2.2: three in a row are not a moment at the ceiling
    early = TrackEvidence()
    for i, p in enumerate(scores[:5]):
        early.add("face", p, float(i), policy)
    assert early.face_moment < 3.0
    assert TrackEvidence.from_hash({k.encode(): v.encode() for k, v in latched.to_hash().items()}) == latched
    for garbage in ("[true]", "[9.0]", "[1, 1, 1, 1]", '"abc"'):
        with pytest.raises(CorruptStateError, match="face_recent"):
            TrackEvidence.from_hash({**{k.encode(): v.encode() for k, v in latched.to_hash().items()},
                                     b"face_recent": garbage.encode()})


def test_decided_by_names_the_evidence_that_reached_the_threshold() -> None:
    policy = Policy(spoof_at=2.0, live_at=3.0)
    assert decided_by(2.5, 0.0, "spoof", policy) == "face"
    assert decided_by(-0.5, -3.0, "live", policy) == "eye"
    assert decided_by(-2.0, -1.5, "live", policy) == "both"
    assert decided_by(2.1, 2.6, "spoof", policy) == "eye", "each alone suffices: the larger"
    assert decided_by(3.5, -1.0, "spoof", policy) == "face", "against the verdict counts for nothing"
    moment = policy.model_copy(update={"moment_at": 3.0})
    assert decided_by(-4.0, 0.0, "spoof", moment, 3.0) == "moment"
    assert decided_by(2.5, 0.0, "spoof", moment, 3.0) == "face", "the evidence reached it too"
    assert decided_by(-4.0, 0.0, "spoof", policy, 3.0) == "both", "no moment rule in the policy"


def test_interleaved_tracks_and_duplicates(r: redis.Redis, prefix: str, tmp_path: Path) -> None:
    keys = Keys(prefix)
    proc = start_fusion(fusion_config(tmp_path, prefix))
    try:
        for frame in range(6):
            send_face_score(r, keys, "cam1", "live-track", frame, 0.04)
            send_face_score(r, keys, "cam1", "photo-track", frame, 0.97)
            send_face_score(r, keys, "cam2", "unsure-track", frame, 0.5 + (0.05 if frame % 2 else -0.05))
            r.xadd(keys.stream(EyeScore), EyeScore(f"e{frame}", "cam1", "live-track", frame, time.time(), time.time(),
                                                   time.time(), 0.1, "eye", "t").to_fields())
        # at-least-once delivery upstream: the same results again, under new entry ids
        for frame in range(6):
            send_face_score(r, keys, "cam1", "photo-track", frame, 0.97)
        # every score is counted and acknowledged: nothing more can come of them
        wait_for(lambda: settled(r, keys.stream(FaceScore)) and settled(r, keys.stream(EyeScore)), timeout_s=30)
    finally:
        out = stop_process(proc)
    got = {d.track: d for d in read_decisions(r, keys)}
    assert got["live-track"].verdict == "live" and got["photo-track"].verdict == "spoof"
    assert "unsure-track" not in got
    assert len(read_decisions(r, keys)) == 2, "one decision per track"
    photo = TrackEvidence.from_hash(r.hgetall(keys.track_state("photo-track")))
    assert photo.face_n == 6, "duplicates were not counted"
    live = TrackEvidence.from_hash(r.hgetall(keys.track_state("live-track")))
    assert live.eye_n == 6 and live.face_n == 6
    assert 0 < r.ttl(keys.track_state("live-track")) <= 60
    assert "Traceback" not in out


def test_labels_move_the_accuracy_gauges(r: redis.Redis, prefix: str, tmp_path: Path) -> None:
    keys = Keys(prefix)
    proc = start_fusion(fusion_config(tmp_path, prefix, free_port(), Policy(moment_at=3.0)))
    try:
        port = metrics_port(r, keys, "f1")
        # lobby: a face that looks live, then like an attack on three crops in a row: the moment decides
        for frame, score in enumerate([0.02] * 4 + [0.999] * 3):
            send_face_score(r, keys, "lobby", "m1", frame, score)
        # camera labels travel with the scores: door has 2 attacks (one accepted) and 1 live
        for frame in range(4):
            send_face_score(r, keys, "door", "a1", frame, 0.96, "spoof")
            send_face_score(r, keys, "door", "a2", frame, 0.03, "spoof")
            send_face_score(r, keys, "door", "l1", frame, 0.04, "live")
            send_face_score(r, keys, "gate", "g1", frame, 0.95)
        # hall: a neutral face, and eyes that blink in every window: the eyes decide
        for frame in range(10):
            now = time.time()
            r.xadd(keys.stream(EyeScore), EyeScore(f"h{frame}", "hall", "h1", frame, now, now, now, 0.02, "eye",
                                                   "t").to_fields())
        for frame in range(3):
            send_face_score(r, keys, "hall", "h1", frame, 0.5)
        wait_for(lambda: len(read_decisions(r, keys)) >= 7, timeout_s=30)
        wait_for(lambda: metric(port, 'liveness_apcer_ratio{camera="door",window="run"}') == 0.5, timeout_s=10)
        assert metric(port, 'liveness_bpcer_ratio{camera="door",window="run"}') == 0.0
        assert metric(port, 'liveness_acer_ratio{camera="door",window="run"}') == 0.25
        # operator feedback: g1 (no camera label, decided spoof) was in fact live
        label_cfg = str(fusion_config(tmp_path, prefix, port))
        res = subprocess.run(liveness_cmd("label", "--config", label_cfg, "--camera", "gate",
                                          "--track", "g1", "live"), capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        wait_for(lambda: metric(port, 'liveness_bpcer_ratio{camera="gate",window="run"}') == 1.0, timeout_s=10)
        # overall: attacks a1 (accepted), a2 (rejected); live l1 (accepted), g1 (rejected)
        assert metric(port, 'liveness_apcer_ratio{camera="all",window="run"}') == 0.5
        assert metric(port, 'liveness_bpcer_ratio{camera="all",window="run"}') == 0.5
        assert metric(port, 'liveness_decisions_total{camera="door",verdict="live"}') == 2
        assert metric(port, "liveness_time_to_decision_seconds_count") == 6
        # which evidence carried each decision: the face alone, but in the hall the eyes alone
        assert metric(port, 'liveness_decisions_by_evidence_total{camera="door",evidence="face"}') == 3
        assert metric(port, 'liveness_decisions_by_evidence_total{camera="hall",evidence="eye"}') == 1
        assert metric(port, 'liveness_decisions_by_evidence_total{camera="hall",evidence="face"}') == 0
        assert [d.verdict for d in read_decisions(r, keys) if d.track == "m1"] == ["live", "spoof"]
        assert metric(port, 'liveness_decisions_by_evidence_total{camera="lobby",evidence="moment"}') == 1
    finally:
        stop_process(proc)


def test_live_labels_make_their_camera_stricter_and_never_laxer(r: redis.Redis, prefix: str, tmp_path: Path) -> None:
    """A room whose live faces score 0.0001: an attack at 0.119 passes the uncalibrated neutral point
    (0.5) but not the calibrated one (3 log-odds above the room's live faces). Labels on attacks
    cannot move a camera's neutral point up."""
    keys = Keys(prefix)
    cfg = fusion_config(tmp_path, prefix, free_port())
    proc = start_fusion(cfg)

    def scores(camera: str, track: str, score: float) -> None:
        for frame in range(6):
            send_face_score(r, keys, camera, track, frame, score)

    def verdicts() -> dict[str, str]:
        return {d.track: d.verdict for d in read_decisions(r, keys)}

    try:
        port = metrics_port(r, keys, "f1")
        for track in ("d1", "d2", "d3"):
            scores("dim", track, 0.0001)
        scores("other", "b0", 0.119)      # an attack on a camera nobody calibrated: accepted
        wait_for(lambda: len(verdicts()) == 4, timeout_s=30)
        assert verdicts() == {"d1": "live", "d2": "live", "d3": "live", "b0": "live"}
        res = subprocess.run(liveness_cmd("label", "--config", str(cfg), "--camera", "dim", "--recent", "60", "live"),
                             capture_output=True, text=True, timeout=60)  # commissioning: everyone in view is live
        assert res.returncode == 0 and res.stdout.count("labelled dim") == 3, res.stdout + res.stderr
        wait_for(lambda: metric(port, 'liveness_calibration_tracks{camera="dim"}') == 3, timeout_s=15)
        assert abs(metric(port, 'liveness_live_baseline_logodds{camera="dim"}') + 9.2102) < 1e-3  # logit(0.0001)
        scores("dim", "d4", 0.0001)       # another live face in the same room
        scores("dim", "d5", 0.119)        # the same attack, now in the calibrated room
        scores("other", "b1", 0.119)      # another camera keeps the uncalibrated neutral point
        wait_for(lambda: len(verdicts()) == 7, timeout_s=30)
        got = verdicts()
        assert (got["d4"], got["d5"], got["b1"]) == ("live", "spoof", "live")
        assert r.zcard(keys.calibration("other")) == 0
        # attacks labelled live (a wrong commissioning) leave the neutral point where it was
        for track in ("f1", "f2", "f3"):
            scores("fooled", track, 0.999)
        wait_for(lambda: len(verdicts()) == 10, timeout_s=30)
        res = subprocess.run(liveness_cmd("label", "--config", str(cfg), "--camera", "fooled", "--recent", "60", "live"),
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        wait_for(lambda: metric(port, 'liveness_calibration_tracks{camera="fooled"}') == 3, timeout_s=15)
        scores("fooled", "f4", 0.999)
        wait_for(lambda: len(verdicts()) == 11, timeout_s=30)
        assert verdicts()["f4"] == "spoof"
        # the operator corrects one label: it leaves the calibration
        r.xadd(keys.stream(Label), Label("dim", "d1", "spoof", time.time()).to_fields())
        wait_for(lambda: r.zcard(keys.calibration("dim")) == 2, timeout_s=15)
        wait_for(lambda: metric(port, 'liveness_calibration_tracks{camera="dim"}') == 2, timeout_s=15)
    finally:
        stop_process(proc)


def test_corrupt_track_state_is_dead_lettered_and_reset(r: redis.Redis, prefix: str, tmp_path: Path) -> None:
    """A state field that does not parse (an older schema, a partial write, a hostile client): the score
    for that track goes to the dead letters with the reason, the track starts again, fusion goes on."""
    keys = Keys(prefix)
    proc = start_fusion(fusion_config(tmp_path, prefix, free_port()))
    try:
        port = metrics_port(r, keys, "f1")
        r.hset(keys.track_state("bad"), mapping={"camera": "cam1", "face_n": "not-a-number"})
        send_face_score(r, keys, "cam1", "bad", 0, 0.97)
        for frame in range(4):
            send_face_score(r, keys, "cam1", "good", frame, 0.97)
        dead = wait_for(lambda: r.xrange(keys.dead(keys.stream(FaceScore))), timeout_s=30)
        wait_for(lambda: "good" in {d.track for d in read_decisions(r, keys)}, timeout_s=30)
        assert not r.exists(keys.track_state("bad")), "the corrupt state was reset"
        for frame in range(1, 5):  # the track goes on from a fresh state
            send_face_score(r, keys, "cam1", "bad", frame, 0.97)
        wait_for(lambda: "bad" in {d.track for d in read_decisions(r, keys)}, timeout_s=30)
        # no thread is left dead: the gauges see both tracks open, after the corrupt state was met
        wait_for(lambda: metric(port, "liveness_tracks_open") == 2, timeout_s=15)
        assert metric(port, 'liveness_messages_dead_lettered_total{group="%s",reason="corrupt_state"}'
                      % keys.group("fusion")) == 1
        assert proc.poll() is None
        assert r.xpending(keys.stream(FaceScore), keys.group("fusion"))["pending"] == 0
    finally:
        out = stop_process(proc)
    assert len(dead) == 1 and dead[0][1][b"f:track"] == b"bad"
    reason = dead[0][1][b"reason"].decode()
    assert reason.startswith("corrupt state:") and "face_n" in reason and "not-a-number" in reason, reason
    assert TrackEvidence.from_hash(r.hgetall(keys.track_state("bad"))).face_n == 4
    assert "Traceback" not in out


def test_restart_mid_run_neither_loses_nor_repeats_decisions(r: redis.Redis, prefix: str, tmp_path: Path) -> None:
    keys = Keys(prefix)
    cfg = fusion_config(tmp_path, prefix)
    proc = start_fusion(cfg)
    tracks = [f"t{i}" for i in range(20)]
    try:
        for frame in range(2):
            for i, t in enumerate(tracks):
                send_face_score(r, keys, "cam", t, frame, 0.97 if i % 2 else 0.03)
        wait_for(lambda: settled(r, keys.stream(FaceScore)), timeout_s=30)  # the first two frames are counted
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for frame in range(2, 8):
            for i, t in enumerate(tracks):
                send_face_score(r, keys, "cam", t, frame, 0.97 if i % 2 else 0.03)
        proc = start_fusion(cfg, "f2")
        wait_for(lambda: len(read_decisions(r, keys)) >= len(tracks) and settled(r, keys.stream(FaceScore)),
                 timeout_s=60)
    finally:
        stop_process(proc)
    got = read_decisions(r, keys)
    assert sorted(d.track for d in got) == sorted(tracks), "each track decided exactly once"
    assert all(d.verdict == ("spoof" if int(d.track[1:]) % 2 else "live") for d in got)


def test_decisions_command_prints_json_lines(r: redis.Redis, prefix: str, tmp_path: Path) -> None:
    keys = Keys(prefix)
    d = Decision("cam", "cam:1:1", "spoof", 0.9, 3.0, 0.0, 5, 1.0, 2.0, 2.1, "evidence")
    r.xadd(keys.stream(Decision), d.to_fields())
    r.xadd(keys.stream(Decision), d.to_fields())
    cfg = str(fusion_config(tmp_path, prefix))
    res = subprocess.run(liveness_cmd("decisions", "--config", cfg, "--json", "--count", "1"),
                         capture_output=True, text=True, timeout=60)
    lines = res.stdout.strip().splitlines()
    assert res.returncode == 0 and len(lines) == 1
    assert json.loads(lines[0])["verdict"] == "spoof"
    res = subprocess.run(liveness_cmd("decisions", "--config", cfg, "--json", "--follow",
                                      "--from-start", "--timeout", "2"), capture_output=True, text=True, timeout=60)
    assert len(res.stdout.strip().splitlines()) == 2


def test_ctrl_c_ends_decisions_follow_quietly(r: redis.Redis, prefix: str, tmp_path: Path) -> None:
    keys = Keys(prefix)
    cfg = str(fusion_config(tmp_path, prefix))
    out = tmp_path / "out.jsonl"
    with out.open("w") as stdout:
        proc = subprocess.Popen(liveness_cmd("decisions", "--config", cfg, "--json", "--follow"), stdout=stdout,
                                stderr=subprocess.PIPE, text=True)
    # once it follows (a decision written now is printed), ^C
    d = Decision("cam", "cam:1:1", "live", 0.9, -3.0, 0.0, 5, 1.0, 2.0, 2.1, "evidence")
    wait_for(lambda: r.xadd(keys.stream(Decision), d.to_fields()) and out.read_text().count("\n") >= 1, timeout_s=60)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert (proc.returncode, err) == (130, ""), "no traceback, the usual status of ^C"
    # and while it starts (imports take seconds on a busy machine)
    proc = subprocess.Popen(liveness_cmd("decisions", "--config", cfg, "--follow"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert (proc.returncode, err) == (130, "")


KEY = "decision-key-0123456789"


def signing_config(tmp_path: Path, prefix: str, port: int = 0) -> Path:
    """``fusion_config`` with fusion's decision key."""
    cfg = fusion_config(tmp_path, prefix, port)
    data = yaml.safe_load(cfg.read_text())
    data["fusion"]["decision_key"] = KEY
    cfg.write_text(yaml.safe_dump(data))
    return cfg


def test_forged_decisions_are_flagged_by_every_reader(r: redis.Redis, prefix: str, tmp_path: Path) -> None:
    """Whoever else writes to the decisions stream (a Redis user other than fusion's, or a leaked
    password without the key) cannot make a decision that passes: ``liveness decisions`` flags it,
    and fusion's sliding-window gauges leave it out and count it."""
    keys = Keys(prefix)
    cfg = signing_config(tmp_path, prefix, free_port())
    proc = start_fusion(cfg)
    try:
        port = metrics_port(r, keys, "f1")
        for frame in range(4):
            send_face_score(r, keys, "door", "p1", frame, 0.97, "spoof")
        wait_for(lambda: read_decisions(r, keys), timeout_s=30)
        (real,) = read_decisions(r, keys)
        assert real.verdict == "spoof" and real.authentic(KEY.encode())
        forged = [replace(real, verdict="live", mac=None),  # unsigned
                  replace(real, verdict="live").signed(b"another-key-0123456789"),  # signed without fusion's key
                  replace(real, verdict="live")]  # fusion's decision, altered
        for d in forged:
            r.xadd(keys.stream(Decision), d.to_fields())
        wait_for(lambda: metric(port, "liveness_forged_decisions") == 3, timeout_s=10)
        assert metric(port, 'liveness_apcer_ratio{camera="door",window="sliding"}') == 0.0, "the forged live is left out"
    finally:
        stop_process(proc)
    res = subprocess.run(liveness_cmd("decisions", "--config", str(cfg), "--json"), capture_output=True, text=True,
                         timeout=60)
    printed = [json.loads(line) for line in res.stdout.splitlines()]
    assert [p["authentic"] for p in printed] == [True, False, False, False]
    assert res.stderr.count("FORGED") == 3
    res = subprocess.run(liveness_cmd("decisions", "--config", str(cfg)), capture_output=True, text=True, timeout=60)
    assert [line.endswith("FORGED") for line in res.stdout.splitlines()] == [False, True, True, True]


def test_webhook_gets_each_decision_despite_a_failure(r: redis.Redis, prefix: str, tmp_path: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict] = []
    calls = {"n": 0}

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            calls["n"] += 1
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if calls["n"] == 1:
                self.send_response(503)  # the receiver is down for the first try
            else:
                received.append(body)
                self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = HTTPServer(("127.0.0.1", free_port()), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cfg = signing_config(tmp_path, prefix)
    data = yaml.safe_load(cfg.read_text())
    data["fusion"]["webhook_url"] = f"http://127.0.0.1:{server.server_address[1]}/hook"
    cfg.write_text(yaml.safe_dump(data))
    keys = Keys(prefix)
    proc = start_fusion(cfg)
    try:
        for frame in range(4):
            send_face_score(r, keys, "door", "w1", frame, 0.97)
        wait_for(lambda: received, timeout_s=30)
    finally:
        stop_process(proc)
        server.shutdown()
    assert received[0]["track"] == "w1" and received[0]["verdict"] == "spoof" and calls["n"] == 2
    assert Decision(**received[0]).authentic(KEY.encode()), "the receiver can check fusion's signature"


def test_label_recent_without_tracks_is_a_clear_error(r: redis.Redis, prefix: str, tmp_path: Path) -> None:
    keys = Keys(prefix)
    cfg = str(fusion_config(tmp_path, prefix))
    send_face_score(r, keys, "busy", "b1", 0, 0.2)  # another camera's recent track is not the quiet camera's
    for recent, error in (("30", "camera quiet: no track scored in the last 30 s; nothing labelled"),
                          ("-5", "--recent -5: must be a positive number of seconds")):
        res = subprocess.run(liveness_cmd("label", "--config", cfg, "--camera", "quiet", "--recent", recent, "live"),
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and error in res.stderr and "labelled" not in res.stdout, res.stdout + res.stderr
    assert not r.exists(keys.stream(Label)), "nothing was labelled"
    assert not r.exists(keys.calibration("quiet"))
