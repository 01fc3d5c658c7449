"""``liveness collect`` against a real RTSP replay: an entry evaluate reads, bad input refused, a camera lost mid-way."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import cv2
import pytest
import yaml

from liveness.app.cli import main
from liveness.models.datasets import folders
from tests.conftest import RtspServer, free_port, liveness_cmd, nuaa_sequence, wait_for

SECRET = "hunter2"


def config(tmp_path: Path, cameras: list[dict]) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"cameras": cameras}))
    return path


def collect(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(liveness_cmd("--log-level", "DEBUG", "collect", "--config", str(cfg), *args),
                          capture_output=True, text=True, timeout=120)


def eye_rows(entry: Path) -> list[dict[str, str]]:
    with open(entry / "eyes.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_collected_entries_are_what_evaluate_reads(rtsp: RtspServer, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path, [{"id": "door", "source": rtsp.url("live").replace("rtsp://", f"rtsp://admin:{SECRET}@")},
                            {"id": "desk", "source": rtsp.url("photo")}])
    out = tmp_path / "site-data"
    live = collect(cfg, "--camera", "door", "--label", "live", "--out", str(out), "--seconds", "3")
    spoof = collect(cfg, "--camera", "desk", "--label", "spoof", "--out", str(out), "--seconds", "3")
    for res in (live, spoof):
        assert res.returncode == 0, res.stderr
        assert SECRET not in res.stdout + res.stderr and "rtsp://***@" in live.stderr
    frames = sorted((out / "live" / "door").glob("*.jpg"))
    rows = eye_rows(out / "live" / "door")
    assert f"collect door: {len(frames)} frames (" in live.stdout
    assert 20 <= len(frames) <= 46, "3 s at 15 fps at most (fewer when the machine is slower)"
    assert [int(r["frame"]) for r in rows] == list(range(len(frames)))
    times = [float(r["time_s"]) for r in rows]
    assert times[0] == 0.0 and times == sorted(times) and 2.0 < times[-1] < 3.0
    assert sum(bool(r["left"]) for r in rows) >= 0.8 * len(rows), "NUAA's live face is in view"
    assert all(0.0 < float(r["left"]) < 1.0 and 0.0 < float(r["right"]) < 1.0 for r in rows if r["left"])
    assert cv2.imread(str(frames[0])).shape == (480, 640, 3), "whole frames by default"

    data = folders(out)
    assert {(s.name, s.label, len(s)) for s in data.sequences} == {
        ("live-door", "live", len(frames)), ("spoof-desk", "spoof", len(eye_rows(out / "spoof" / "desk")))}
    assert main(["evaluate", "--model", "face", "--dataset", "folders", "--root", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (report["n_live"], report["n_spoof"]) == (len(frames), len(eye_rows(out / "spoof" / "desk")))

    crops = collect(cfg, "--camera", "door", "--label", "live", "--out", str(tmp_path / "crops"), "--seconds", "2",
                    "--crops")
    assert crops.returncode == 0, crops.stderr
    entry = tmp_path / "crops" / "live" / "door"
    with_face = [r["frame"] for r in eye_rows(entry) if r["left"]]
    assert with_face and sorted(p.stem for p in entry.glob("*.jpg")) == [f"{int(f):06d}" for f in with_face]
    assert cv2.imread(str(next(entry.glob("*.jpg")))).shape[0] < 480, "crops, not frames"


def test_a_slow_file_camera_is_recorded_with_its_times_and_a_warning(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (640, 480))
    for frame in nuaa_sequence("ClientRaw/0001_00_00_01")[:10]:
        writer.write(cv2.imread(str(frame)))
    writer.release()
    cfg = config(tmp_path, [{"id": "clip", "source": str(clip)}])
    res = collect(cfg, "--camera", "clip", "--label", "live", "--out", str(tmp_path / "data"))
    assert res.returncode == 0 and "collect clip: 10 frames (1.8 s)" in res.stdout, res.stdout + res.stderr
    assert [r["time_s"] for r in eye_rows(tmp_path / "data" / "live" / "clip")] == [f"{i / 5:.3f}" for i in range(10)]
    assert "5.0 frames per second recorded, not 15" in res.stderr and "3.0 times too fast" in res.stderr


def test_bad_input_is_refused_and_nothing_is_overwritten(tmp_path: Path) -> None:
    gone = f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/nothing"
    cfg = config(tmp_path, [{"id": "door", "source": gone, "open_timeout_s": 2}])
    out = tmp_path / "data"
    taken = out / "live" / "door"
    taken.mkdir(parents=True)
    (taken / "000000.jpg").write_bytes(b"an earlier recording")
    cases = {
        ("--camera", "hall", "--label", "live"): "unknown camera id 'hall' (known: door)",
        ("--camera", "door", "--label", "maybe"): "invalid choice: 'maybe'",
        ("--camera", "door", "--label", "live"): f"{taken}: exists and is not empty; nothing written",
        ("--camera", "door", "--label", "live", "--name", "../x"): "entry name '../x': letters, digits",
        ("--camera", "door", "--label", "live", "--seconds", "0"): "--seconds 0: must be a positive number",
        ("--camera", "door", "--label", "spoof"): "camera door: cannot open rtsp://***@127.0.0.1",
    }
    for args, error in cases.items():
        res = collect(cfg, *args, "--out", str(out))
        assert res.returncode == 2 and error in res.stderr, (args, res.stderr)
        assert SECRET not in res.stdout + res.stderr and "Traceback" not in res.stderr
    assert (taken / "000000.jpg").read_bytes() == b"an earlier recording"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["live", "live/door", "live/door/000000.jpg"]


def test_camera_lost_mid_collect_keeps_what_was_recorded(rtsp: RtspServer, tmp_path: Path) -> None:
    server = RtspServer({"cam": rtsp.mounts["live"]}, free_port())
    server.start()
    cfg = config(tmp_path, [{"id": "door", "source": server.url("cam"), "read_timeout_s": 2}])
    entry = tmp_path / "data" / "live" / "door"
    proc = subprocess.Popen(liveness_cmd("collect", "--config", str(cfg), "--camera", "door", "--label", "live",
                                         "--out", str(tmp_path / "data")), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (entry / "eyes.csv").is_file() and len(eye_rows(entry)) >= 10, timeout_s=60)
        server.stop()  # the camera goes away for good
        out, err = proc.communicate(timeout=60)
    finally:
        server.stop()
        if proc.poll() is None:
            proc.kill()
    frames = len(list(entry.glob("*.jpg")))
    assert proc.returncode == 1, err
    assert frames >= 10 and len(eye_rows(entry)) == frames
    seconds = float(eye_rows(entry)[-1]["time_s"])
    assert f"collect door: camera lost after {frames} frames ({seconds:.1f} s)" in out
    assert "what was recorded is kept" in out and "Traceback" not in err
    assert [s.name for s in folders(tmp_path / "data").sequences] == ["live-door"]
