"""ISO/IEC 30107-3 figures on hand-made cases, and ``liveness evaluate`` on real frames."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from liveness.app.cli import main
from liveness.defaults import artifact_path
from liveness.pad_metrics import auc, bpcer_at_apcer, eer, pad_report
from tests.conftest import nuaa_sequence


def test_hand_made_report() -> None:
    # 4 live, 4 attacks; the last attack had no face (score 1.0); threshold 0.5.
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.8, 0.4, 0.7, 0.9, 1.0]
    rep = pad_report(labels, scores, 0.5)
    assert (rep.n_live, rep.n_spoof) == (4, 4)
    assert rep.apcer == 0.25  # the attack at 0.4 is accepted as live
    assert rep.bpcer == 0.25  # the live face at 0.8 is rejected
    assert rep.acer == 0.25 and rep.accuracy == 0.75
    assert rep.auc == 14 / 16  # attack > live in 14 of 16 pairs
    assert rep.eer == 0.25
    assert rep.bpcer_at_apcer_1 == 0.25 and rep.bpcer_at_apcer_10 == 0.25


def test_edge_cases() -> None:
    assert auc([0, 1], [0.5, 0.5]) == 0.5  # a tie counts half
    assert eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert bpcer_at_apcer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 0.01) == 0.0
    # A live face and an attack tie at 0.5: from one threshold to the next APCER goes 0 -> 0.5
    # while BPCER goes 0.5 -> 0; the crossing is interpolated.
    assert eer([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]) == 0.25
    rep = pad_report([1, 1], [0.9, 0.2], 0.5)  # attacks only: no BPCER, no curve
    assert rep.apcer == 0.5 and np.isnan(rep.bpcer) and rep.to_dict()["auc"] is None
    with pytest.raises(ValueError):
        pad_report([0, 2], [0.1, 0.2], 0.5)


@pytest.fixture
def folders_root(tmp_path: Path) -> Path:
    """live/ and spoof/ with 6 real frames each, plus a blank attack image (no face)."""
    root = tmp_path / "data"
    for label, name in (("live", "ClientRaw/0001_00_00_01"), ("spoof", "ImposterRaw/0001_00_00_01")):
        seq = root / label / "s1"
        seq.mkdir(parents=True)
        for i, frame in enumerate(nuaa_sequence(name)[:6]):
            (seq / f"f{i}.jpg").symlink_to(frame)
    cv2.imwrite(str(root / "spoof" / "blank.png"), np.zeros((240, 320, 3), np.uint8))
    return root


def test_evaluate_face_json(folders_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "det.png"
    rc = main(["evaluate", "--model", "face", "--dataset", "folders", "--root", str(folders_root), "--json",
               "--workers", "2", "--plot", str(plot), "--face-model", str(artifact_path("face.onnx"))])
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["unit"] == "frame" and report["n_live"] == 6 and report["n_spoof"] == 7
    assert (report["no_face"], report["no_face_live"], report["no_face_spoof"]) == (1, 0, 1)
    for key in ("apcer", "bpcer", "acer", "accuracy", "auc", "eer", "bpcer_at_apcer_1", "bpcer_at_apcer_10",
                "threshold"):
        assert key in report
    # a live face and a print of NUAA session 01, the faceless image not accepted: every frame on its side
    assert (report["apcer"], report["bpcer"], report["auc"]) == (0.0, 0.0, 1.0), report
    assert plot.is_file() and cv2.imread(str(plot)) is not None
    assert report["warnings"] == [
        "the figures rest on 1 live sequence(s), fewer than 20: a few people or videos, not a rate",
        "the figures rest on 2 spoof sequence(s), fewer than 20: a few people or videos, not a rate"]


def test_evaluate_warns_only_below_twenty_sequences_a_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    for label, name, n in (("live", "ClientRaw/0001_00_00_01", 20), ("spoof", "ImposterRaw/0001_00_00_01", 19)):
        for i, frame in enumerate(nuaa_sequence(name)[:n]):
            (root / label).mkdir(parents=True, exist_ok=True)
            (root / label / f"{i:02d}.jpg").symlink_to(frame)  # an image is a sequence of its own
    assert main(["evaluate", "--model", "face", "--dataset", "folders", "--root", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["warnings"] == [
        "the figures rest on 19 spoof sequence(s), fewer than 20: a few people or videos, not a rate"]

