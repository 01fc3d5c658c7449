"""The exported BlazeFace graph against the TensorFlow Lite original, and a broken model file."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from liveness.detector import BlazeFace
from liveness.errors import ModelError
from tests.conftest import SHARED

REFERENCE = Path(__file__).resolve().parent.parent / "data" / "blazeface_reference.json"
"""The best anchor of sample frames as mediapipe 0.10.14's .tflite computes it (TensorFlow Lite runtime)."""


@pytest.mark.parametrize("ref", json.loads(REFERENCE.read_text()), ids=lambda r: Path(r["frame"]).parent.parent.name)
def test_onnx_graph_agrees_with_the_tflite_original(ref: dict) -> None:
    det = BlazeFace()
    x, _, _, _ = det.tensor(cv2.imread(str(SHARED / ref["frame"])))
    reg, logit = det.session.run(None, {det.input_name: x})
    assert int(logit[0, :, 0].argmax()) == ref["anchor"]
    assert abs(float(logit[0, ref["anchor"], 0]) - ref["logit"]) < 1e-2
    np.testing.assert_allclose(reg[0, ref["anchor"]], ref["regressors"], atol=2e-2)


def test_a_missing_or_corrupt_detector_model_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        BlazeFace(tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    with pytest.raises(ModelError, match="not a loadable ONNX model|not the BlazeFace"):
        BlazeFace(bad)
