"""The image-quality branch: its statistics on hand-made crops, and its addition to a face model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from liveness.cli import main
from liveness.errors import LivenessError
from tests.conftest import NUAA
from workers.runners import OnnxModel

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")


def test_statistics_of_hand_made_crops() -> None:
    from models.face_quality import FEATURES, features

    flat = np.full((112, 112, 3), 100, np.uint8)
    halves = flat.copy()
    halves[:, :56] = 0
    halves[:, 56:] = 200
    got = dict(zip(FEATURES, features(np.stack([flat, halves])).T))
    # a flat crop: mean 100, no spread, no high frequencies, no range (the blur is normalised
    # at the border, so the edge of the image is not an edge)
    np.testing.assert_allclose([got[f][0] for f in FEATURES], [100, 0, 0, 0, 100, 0, 0, 0], atol=1e-3)
    # black | light grey: mean 100, spread 100, range 200; the edge gives some high frequency
    np.testing.assert_allclose([got["crop_mean"][1], got["crop_std"][1], got["crop_range"][1]], [100, 100, 200], atol=1e-3)
    assert got["crop_hf"][1] > 0.5
    assert got["face_range"][1] == pytest.approx(200, abs=1e-3)  # the face box straddles the edge


def test_branch_adds_its_logit_to_the_face_model(tmp_path: Path) -> None:
    from models.face_data import face_crops
    from models.face_net import FaceNet, NetConfig
    from models.face_quality import features, fit, regressors
    from models.train_face import export_onnx

    data = face_crops("nuaa", NUAA, "all", limit=300)
    data = data.subset(data.has_face)
    torch.manual_seed(0)
    base = tmp_path / "base.onnx"
    export_onnx(FaceNet(NetConfig()).eval(), base, 0.6, {}, data.crops[:4])  # untrained: any base will do
    out = tmp_path / "face.onnx"
    assert main(["train", "quality", "--root", str(NUAA), "--limit", "300", "--base", str(base),
                 "--out", str(out), "--threshold", "0.7"]) == 0
    before, after = OnnxModel(base), OnnxModel(out)
    assert before.threshold == pytest.approx(0.6)
    assert after.name == before.name + "+quality" and after.threshold == pytest.approx(0.7)
    meta = after.metadata["liveness.quality"]
    assert "crop_range" in meta and "log(x + 0.001)" in meta

    # the added logit is the regression's on the statistics' logarithms, fitted on the same crops
    mean, scale, coef, intercept = fit(data.crops, data.labels)
    crops = data.crops[::5]
    p0, p1 = before.predict(crops), after.predict(crops)
    gain = np.log(p1 / (1 - p1)) - np.log(p0 / (1 - p0))
    np.testing.assert_allclose(gain, ((regressors(features(crops)) - mean) / scale) @ coef + intercept, atol=2e-3)
    assert gain[data.labels[::5] == 1].mean() > gain[data.labels[::5] == 0].mean()  # attacks pushed up

    with pytest.raises(LivenessError, match="already has a quality branch"):
        from models.face_quality import add_branch, quality_onnx

        add_branch(onnx.load(str(out)), quality_onnx(np.zeros(8), np.ones(8), np.zeros(8), 0.0))
