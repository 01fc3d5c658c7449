"""One fusion policy loader (``liveness.evidence.load_policy``): live fusion, ``evaluate --model fused``
and clip jobs decide alike under a config that overrides a threshold. That they decide the same
frames alike is ``tests/e2e/test_one_path.py``; here, that each of them reads the override."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import redis
import yaml

from liveness.app.cli import main
from liveness.config import FusionSettings
from liveness.contract import FaceScore, Keys
from liveness.defaults import SEQUENCE_FPS
from liveness.errors import ConfigError
from liveness.evidence import Policy, load_policy
from liveness.streams import settled
from liveness.workers import jobs
from liveness.workers.offline import Event, TrackResult
from tests.conftest import nuaa_sequence, wait_for
from tests.fixtures import fusion_config, read_decisions, send_face_score, start_fusion, stop_process

SCORES = [0.65] * 10
"""Face scores of one track: 1.73 log-odds of evidence at most, so undecided under the default
policy (spoof at 2.0), and a spoof under ``fusion.spoof_threshold: 1.5``."""

LIVE = "ClientRaw/0001_00_00_01"
"""A live face the default policy accepts; under ``fusion.live_threshold: 12.0`` no face can be
accepted (evidence is at most face_weight x 3 x face_cap + eye_weight x 3 = 11.4 log-odds)."""


def overridden(tmp_path: Path, prefix: str) -> Path:
    cfg = fusion_config(tmp_path, prefix)  # fusion.policy: the documented defaults
    data = yaml.safe_load(cfg.read_text())
    data["fusion"].update(spoof_threshold=1.5, live_threshold=12.0)
    path = tmp_path / "overridden.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def evaluated(cfg: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The verdict ``evaluate --model fused`` reaches on the one live sequence under ``root``."""
    assert main(["evaluate", "--model", "fused", "--config", str(cfg), "--dataset", "folders", "--root", str(root),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return "undecided" if report["undecided"] else "spoof" if report["errors"] else "live"


def test_live_fusion_evaluate_and_clip_jobs_read_the_same_override(r: redis.Redis, prefix: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    plain, cfg = fusion_config(tmp_path, prefix), overridden(tmp_path, prefix)
    unchanged = TrackResult("t", len(SCORES), 0.0, 1.0,
                            events=[Event(i / 15, i, "face", score, i) for i, score in enumerate(SCORES)])
    unchanged.replay(Policy())
    assert unchanged.verdict == "undecided", "the override decides these scores, not the policy file"

    keys = Keys(prefix)
    proc = start_fusion(cfg)
    try:
        for frame, score in enumerate(SCORES):
            send_face_score(r, keys, "cam", "t", frame, score)
        wait_for(lambda: settled(r, keys.stream(FaceScore), keys.group("fusion")), timeout_s=30)
    finally:
        stop_process(proc)
    live = [d.verdict for d in read_decisions(r, keys) if d.track == "t"]

    frames = nuaa_sequence(LIVE)
    root = tmp_path / "data"
    (root / "live" / "seq").mkdir(parents=True)
    for i, frame in enumerate(frames):
        (root / "live" / "seq" / f"frame{i}.jpg").symlink_to(frame)

    def job(config: Path) -> str:
        """The clip job's verdict on the same frames, at the rate ``evaluate`` plays them."""
        images = ((i / SEQUENCE_FPS, cv2.imread(str(p))) for i, p in enumerate(frames))
        return jobs.analyzer(str(config)).analyze(images)[0].verdict

    assert (job(plain), evaluated(plain, root, capsys)) == ("live", "live"), "the face is accepted"
    assert live == ["spoof"]
    assert (job(cfg), evaluated(cfg, root, capsys)) == ("undecided", "undecided")


def test_a_threshold_the_policy_refuses_is_a_config_error(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(Policy().model_dump_json())
    assert load_policy(FusionSettings(policy=str(policy), live_threshold=4.0)).live_at == 4.0
    with pytest.raises(ConfigError, match="spoof_at"):
        load_policy(FusionSettings(policy=str(policy), spoof_threshold=-1.0))
    with pytest.raises(ConfigError, match="no such file"):
        load_policy(FusionSettings(policy=str(tmp_path / "missing.json")))
