"""``liveness evaluate --model eye``: one decision per sequence besides the per-window figures."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from liveness.app.cli import main
from liveness.models.eye_data import sequence_figures
from tests.conftest import nuaa_sequence

RULE = {"liveness.sequence_quantile": "0.25", "liveness.sequence_threshold": "0.5"}


def test_sequence_decisions_by_the_models_rule() -> None:
    live = [np.array([0.1, 0.2, 0.9, 0.9]), np.array([0.8, 0.9, 0.9, 0.9]), np.array([])]  # ok, rejected, no window
    spoof = [np.array([0.9, 0.9, 0.9]), np.array([0.1, 0.2, 0.3]), np.array([])]  # refused, accepted, no window
    got = sequence_figures([0, 0, 0, 1, 1, 1], live + spoof, RULE, window_threshold=0.95)
    # quantile 0.25 at 0.5: the first live sequence is accepted on its blinking quarter (its mean, 0.525, is not)
    assert got["sequence_bpcer"] == pytest.approx(2 / 3), "a live face with no window is rejected"
    assert got["sequence_apcer"] == pytest.approx(1 / 3), "an attack with no window is not accepted"
    assert got["sequence_acer"] == pytest.approx(0.5)
    assert (got["sequence_threshold"], got["sequence_rule"], got["sequence_no_window"]) == (0.5, "quantile 0.25", 2)
    assert (got["sequence_n_live"], got["sequence_n_spoof"]) == (3, 3)
    # a model without a sequence rule: the mean of its windows at its window threshold
    mean = sequence_figures([0, 0, 0, 1, 1, 1], live + spoof, {}, window_threshold=0.5)
    assert mean["sequence_rule"] == "mean" and mean["sequence_bpcer"] == pytest.approx(1.0)
    only_live = sequence_figures([0, 0], live[:2], RULE, 0.5)
    assert only_live["sequence_apcer"] is None and only_live["sequence_acer"] is None and only_live["sequence_bpcer"] == 0.5


def test_evaluate_eye_reports_per_sequence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Real NUAA frames, plus a live entry without a face: it has no window and counts as a rejected live face."""
    root = tmp_path / "data"
    for label, seq in (("live", "ClientRaw/0001_00_00_01"), ("spoof", "ImposterRaw/0001_00_00_01")):
        dest = root / label / seq.split("/")[1]
        dest.mkdir(parents=True)
        for i, frame in enumerate(nuaa_sequence(seq)):
            (dest / f"frame{i}.jpg").symlink_to(frame)
    blank = root / "live" / "nobody"
    blank.mkdir()
    for i in range(20):
        cv2.imwrite(str(blank / f"frame{i}.jpg"), np.full((240, 320, 3), 90, np.uint8))
    assert main(["evaluate", "--model", "eye", "--dataset", "folders", "--root", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["unit"] == "window" and report["n_live"] > 15 and report["n_spoof"] > 5  # the keys kept
    for key in ("apcer", "bpcer", "acer", "auc", "eer", "threshold", "no_face"):
        assert key in report
    assert (report["sequence_n_live"], report["sequence_n_spoof"], report["sequence_no_window"]) == (2, 1, 1)
    assert report["no_face"] == 1
    # the blinking live face is accepted, the faceless live entry rejected, the print refused
    assert (report["sequence_bpcer"], report["sequence_apcer"], report["sequence_acer"]) == (0.5, 0.0, 0.25), report
    assert report["sequence_rule"] == "quantile 0.25"
