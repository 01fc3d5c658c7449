"""Face training end to end on a few hundred real NUAA crops, and the ONNX export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from liveness.cli import main
from liveness.errors import LivenessError
from tests.conftest import NUAA
from workers.runners import OnnxModel

torch = pytest.importorskip("torch")


def test_train_face_cli_exports_a_loadable_model(tmp_path: Path) -> None:
    """Both folds, then a 2-network ensemble on all sessions; the export checks ORT against torch."""
    out = tmp_path / "face.onnx"
    report = tmp_path / "report.json"
    rc = main(["train", "face", "--root", str(NUAA), "--limit", "300", "--epochs", "1", "--members", "2",
               "--out", str(out), "--report", str(report)])
    assert rc == 0 and out.is_file() and report.is_file()
    model = OnnxModel(out)
    assert model.name.endswith("-x2") and model.version and 0.0 < model.threshold < 1.0
    assert "112" in model.metadata["liveness.input"]
    assert model.metadata["liveness.paired_subjects"] == "true" and json.loads(report.read_text())["paired_subjects"]
    scores = model.predict(np.random.default_rng(0).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8))
    assert scores.shape == (5,) and ((scores >= 0) & (scores <= 1)).all()


def test_onnx_agrees_with_torch_on_real_crops(tmp_path: Path) -> None:
    from models.face_augment import AugmentConfig
    from models.face_data import face_crops
    from models.face_net import NetConfig
    from models.train_face import export_onnx, predict, train_one

    data = face_crops("nuaa", NUAA, "all", limit=300)
    data = data.subset(data.has_face)
    assert 250 <= len(data.labels) <= 300 and set(data.labels.tolist()) == {0, 1}
    model, _, _ = train_one(data, None, NetConfig(), AugmentConfig(synthetic=0.3), seed=0, epochs=1)
    out = tmp_path / "face.onnx"
    export_onnx(model, out, 0.5, {}, data.crops[:4])
    crops = data.crops[::4]
    np.testing.assert_allclose(OnnxModel(out).predict(crops), predict(model, crops), atol=1e-5)


def test_ensemble_makes_the_preprocessing_once_and_averages_the_logits(tmp_path: Path) -> None:
    """The members share ``pre`` (fixed weights), so the ensemble is the mean of its networks
    exactly, and its export holds one DoG (four blur products), not one per network."""
    import onnx

    from models.face_net import Ensemble, FaceNet, NetConfig
    from models.train_face import export_onnx

    torch.manual_seed(0)
    nets = [FaceNet(NetConfig()).eval() for _ in range(3)]
    x = torch.rand(4, 3, 112, 112) * 255
    assert torch.equal(Ensemble(nets)(x), torch.stack([net(x) for net in nets]).mean(dim=0))
    out = tmp_path / "face.onnx"
    check = (np.random.default_rng(0).random((4, 112, 112, 3)) * 255).astype(np.uint8)
    export_onnx(Ensemble(nets).eval(), out, 0.5, {}, check)
    assert sum(n.op_type == "MatMul" for n in onnx.load(out).graph.node) == 4
    with pytest.raises(ValueError, match="NetConfig"):
        Ensemble([FaceNet(NetConfig()), FaceNet(NetConfig(dog=False))])


def test_mixstyle_and_fourier_head_train_but_leave_the_export_deterministic(tmp_path: Path) -> None:
    """Both are training-only: MixStyle mixes statistics in train mode and is the identity in eval
    mode; the Fourier head is not part of the exported model."""
    from models.face_augment import AugmentConfig
    from models.face_data import face_crops
    from models.face_net import FourierHead, MixStyle, NetConfig
    from models.train_face import export_onnx, predict, train_one

    x = torch.randn(8, 4, 14, 14) * 3 + torch.arange(8.0).view(8, 1, 1, 1)
    torch.manual_seed(0)
    assert not torch.allclose(MixStyle(1.0).train()(x), x)
    assert MixStyle(1.0).eval()(x) is x
    target = FourierHead(32).target(torch.rand(3, 3, 112, 112) * 255)
    assert target.shape == (3, 14, 14) and float(target.min()) >= 0.0 and float(target.max()) <= 1.0

    data = face_crops("nuaa", NUAA, "all", limit=300)
    data = data.subset(data.has_face)
    model, _, history = train_one(data, None, NetConfig(mixstyle=1.0), AugmentConfig(fourier=1.0), seed=0, epochs=1)
    assert np.isfinite(history[0]["loss"])
    out = tmp_path / "face.onnx"
    export_onnx(model, out, 0.5, {}, data.crops[:4])
    crops = data.crops[::4]
    np.testing.assert_allclose(OnnxModel(out).predict(crops), predict(model, crops), atol=1e-5)
    np.testing.assert_array_equal(predict(model, crops), predict(model, crops))


def test_people_seen_with_one_label_only_are_left_out_of_training() -> None:
    """NUAA's 0008 is only a photo in session 01: trained on, a network can learn that face = attack."""
    from models.face_data import FaceCrops
    from models.train_face import _paired

    n = 6
    subjects = np.array(["0001", "0001", "0008", "0008", "", "0002"])
    data = FaceCrops(np.zeros((n, 112, 112, 3), np.uint8), np.ones(n, bool), np.zeros((n, 68, 2), np.float32),
                     np.array([0, 1, 1, 1, 0, 0]), np.arange(n), [f"s{i}" for i in range(n)], np.full(n, "01"),
                     subjects, [f"f{i}.jpg" for i in range(n)])
    assert data.paired_subjects().tolist() == [True, True, False, False, True, False]
    kept = _paired(data, keep_unpaired=False)
    assert kept.subjects.tolist() == ["0001", "0001", ""] and kept.labels.tolist() == [0, 1, 0]
    assert _paired(data, keep_unpaired=True) is data
    strangers = data.subset(np.array([False, False, True, True, False, True]))
    with pytest.raises(LivenessError, match="--keep-unpaired"):
        _paired(strangers, keep_unpaired=False)


def test_unseen_people_folds_train_without_the_people_they_report_on(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The stricter protocol: the test half's people are in neither the face nor the quality fit."""
    from models.face_data import face_crops
    from models.train_face import calibration_split

    data = face_crops("nuaa", NUAA, "all", limit=300)
    data = data.subset(data.has_face)
    val = data.subset(data.sessions == "02")
    test_people = sorted(set(val.subset(~calibration_split(val)).subjects.tolist()))
    report, cnn, face = tmp_path / "r.json", tmp_path / "cnn.onnx", tmp_path / "face.onnx"
    caplog.set_level("INFO", logger="models.train_face")
    assert main(["train", "face", "--root", str(NUAA), "--limit", "300", "--epochs", "1", "--val-session", "02",
                 "--unseen-people", "--out", str(cnn), "--report", str(report)]) == 0
    trained_on = next(r.getMessage() for r in caplog.records if "trains on" in r.getMessage())
    assert test_people and not any(p in trained_on for p in test_people)
    assert json.loads(report.read_text())["unseen_people"] is True
    assert main(["train", "quality", "--root", str(NUAA), "--limit", "300", "--train-session", "01",
                 "--leave-out", ",".join(test_people), "--base", str(cnn), "--out", str(face)]) == 0
    assert f"without {','.join(test_people)}" in OnnxModel(face).metadata["liveness.quality"]
