"""One fusion policy loader (``liveness.evidence.load_policy``): live fusion, ``evaluate --model fused``
and clip jobs decide the same scores alike under a config that overrides a threshold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import redis
import yaml

from liveness.app.cli import main
from liveness.config import FusionSettings
from liveness.contract import FaceScore, Keys
from liveness.errors import ConfigError
from liveness.evidence import Policy, load_policy
from liveness.models import evaluate_fused
from liveness.models.evaluate_fused import SequenceResult
from liveness.streams import settled
from liveness.workers import jobs
from liveness.workers.offline import OfflineAnalyzer, TrackResult, _Event
from tests.conftest import wait_for
from tests.fixtures import fusion_config, read_decisions, send_face_score, start_fusion, stop_process

SCORES = [0.65] * 10
"""Face scores of one track: 1.73 log-odds of evidence at most, so undecided under the default
policy (spoof at 2.0), and a spoof under ``fusion.spoof_threshold: 1.5``."""


def events() -> list[tuple[float, int, str, float]]:
    return [(i / 15, i, "face", score) for i, score in enumerate(SCORES)]


def test_live_fusion_evaluate_and_clip_jobs_decide_alike(r: redis.Redis, prefix: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg = fusion_config(tmp_path, prefix)  # fusion.policy: the documented defaults
    data = yaml.safe_load(cfg.read_text())
    data["fusion"]["spoof_threshold"] = 1.5
    cfg.write_text(yaml.safe_dump(data))
    unchanged = TrackResult("t", len(SCORES), 0.0, 1.0, events=events())
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

    analyzer = jobs.analyzer(str(cfg))
    monkeypatch.setattr(OfflineAnalyzer, "_score", lambda self, model, rows: SCORES[:len(rows)])
    job = TrackResult("t", len(SCORES), 0.0, 1.0)
    analyzer._decide(job, [_Event(ts, frame, kind, np.zeros(1)) for ts, frame, kind, _ in events()])

    root = tmp_path / "data"
    (root / "spoof").mkdir(parents=True)
    (root / "spoof" / "t.jpg").touch()  # the scores below stand for its analysis
    scored = [SequenceResult("spoof-t", "spoof", None, "sequence", TrackResult("t", len(SCORES), 0.0, 1.0,
                                                                             events=events()))]
    monkeypatch.setattr(evaluate_fused, "analyze", lambda *args, **kwargs: scored)
    assert main(["evaluate", "--model", "fused", "--config", str(cfg), "--dataset", "folders", "--root", str(root),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    evaluated = "live" if report["errors"] else "undecided" if report["undecided"] else "spoof"

    assert live == ["spoof"] and job.verdict == "spoof" and evaluated == "spoof", (live, job.verdict, report)


def test_a_threshold_the_policy_refuses_is_a_config_error(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(Policy().model_dump_json())
    assert load_policy(FusionSettings(policy=str(policy), live_threshold=4.0)).live_at == 4.0
    with pytest.raises(ConfigError, match="spoof_at"):
        load_policy(FusionSettings(policy=str(policy), spoof_threshold=-1.0))
    with pytest.raises(ConfigError, match="no such file"):
        load_policy(FusionSettings(policy=str(tmp_path / "missing.json")))
