"""The landmark models: the exported face mesh against its TFLite original, on real faces, and the opt-in dlib model."""

import importlib.util
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from liveness.config import DetectSettings
from liveness.errors import ModelError
from liveness.face import FacePipeline, eye_ratios
from liveness.landmarks import Dlib68, FaceMesh, dlib68_model_path
from tests.conftest import SHARED, nuaa_sequence

REFERENCE = Path(__file__).resolve().parent.parent / "data" / "face_mesh_reference.json"
"""Eye points (frame pixels) of sample NUAA frames as mediapipe 0.10.14 itself finds them: its FaceMesh
solution, static images, refine_landmarks=True (face detection, the attention mesh, refinement)."""


@pytest.mark.parametrize("ref", json.loads(REFERENCE.read_text()), ids=lambda r: Path(r["frame"]).stem)
def test_the_converted_mesh_finds_the_eyes_where_mediapipe_does(ref: dict) -> None:
    """Within 1.5 % of the eye distance: the converted graph, its custom ops and the region it sees.

    MediaPipe turns its region by the detector's eye keypoints and this pipeline by the mesh's eye
    corners, so the two do not see exactly the same pixels; a wrong op would miss by far more.
    """
    frame = cv2.imread(str(SHARED / ref["frame"]))
    (face,) = FacePipeline().analyze(frame)
    want = np.array(ref["points"])
    iod = float(np.linalg.norm(want[9] - want[0]))
    err = np.linalg.norm(face.landmarks[36:48] - want, axis=1) / iod
    assert err.mean() < 0.015, f"eye points {err.mean():.3f} of the eye distance from mediapipe's"
    assert abs(face.left - eye_ratios(_as68(want))[0]) < 0.04


def _as68(eyes: np.ndarray) -> np.ndarray:
    pts = np.zeros((68, 2), np.float32)
    pts[36:48] = eyes
    return pts


def test_mesh_eyes_open_and_close_on_a_real_face() -> None:
    """NUAA's first live sequence: open eyes near dlib's level (0.2-0.4), and its blinks dip below 0.75 of it."""
    pipe = FacePipeline()
    assert isinstance(pipe._landmarks, FaceMesh)
    faces = [pipe.analyze(cv2.imread(str(p)))[0] for p in nuaa_sequence("ClientRaw/0001_00_00_01")[:120]]
    ratios = np.array([(f.left + f.right) / 2 for f in faces])
    level = float(np.median(ratios))
    assert 0.2 < level < 0.4
    assert ratios.min() < 0.75 * level, "no blink seen in four seconds of a blinking person"
    iod = [np.linalg.norm(f.landmarks[45] - f.landmarks[36]) for f in faces]
    assert 0.3 * faces[0].box[2] < float(np.median(iod)) < 0.7 * faces[0].box[2], "eye corners span the face"


def test_a_tilted_face_is_turned_upright_for_the_mesh() -> None:
    """The same face rolled 30 degrees gives the same eye ratios and the rotated eye points."""
    frame = cv2.imread(str(nuaa_sequence("ClientRaw/0001_00_00_01")[0]))
    pipe = FacePipeline()
    (face,) = pipe.analyze(frame)
    centre = (face.box[0] + face.box[2] / 2, face.box[1] + face.box[3] / 2)
    turn = cv2.getRotationMatrix2D(centre, 30, 1.0)
    tilted = cv2.warpAffine(frame, turn, (frame.shape[1], frame.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    pts = pipe.landmarks(tilted, face.box)
    dx, dy = pts[45] - pts[36]
    assert abs(math.degrees(math.atan2(dy, dx)) + 30) < 5
    expected = face.landmarks @ turn[:, :2].T + turn[:, 2]
    iod = float(np.linalg.norm(face.landmarks[45] - face.landmarks[36]))
    assert np.linalg.norm(pts[36:48] - expected[36:48], axis=1).mean() < 0.08 * iod
    assert abs(eye_ratios(pts)[0] - face.left) < 0.05 and abs(eye_ratios(pts)[1] - face.right) < 0.05


def test_grey_frames_and_faces_at_the_border_give_finite_points() -> None:
    frame = cv2.imread(str(nuaa_sequence("ClientRaw/0001_00_00_01")[0]))
    mesh = FaceMesh()
    (box,) = FacePipeline().detect(frame)
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    assert np.linalg.norm(mesh(grey, box) - mesh(frame, box), axis=1).max() < 0.1 * box[2]
    for edge in ((-box[2] // 2, 10, box[2], box[3]), (frame.shape[1] - box[2] // 2, 300, box[2], box[3]), (5, 5, 1, 1)):
        pts = mesh(frame, edge)
        assert pts.shape == (68, 2) and np.isfinite(pts).all()


def test_a_missing_or_wrong_mesh_model_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        FaceMesh(tmp_path / "none.onnx")
    from liveness.defaults import artifact_path

    with pytest.raises(ModelError, match="not the face mesh"):
        FaceMesh(artifact_path("blazeface_short_range.onnx"))


def test_dlib68_is_opt_in_and_says_its_licence_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DetectSettings().landmarks == "face_mesh"
    assert "commercial" in DetectSettings.model_fields["landmarks"].description
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match=r"liveness\[dlib68\].*commercial"):
        dlib68_model_path()


@pytest.mark.skipif(importlib.util.find_spec("face_recognition_models") is None, reason="liveness[dlib68] not installed")
def test_dlib68_and_the_mesh_agree_on_the_eyes() -> None:
    """Both models, chosen by config, in the same boxes: eye points within a tenth of the eye distance."""
    mesh_pipe, dlib_pipe = FacePipeline(), FacePipeline(DetectSettings(landmarks="dlib68"))
    assert isinstance(dlib_pipe._landmarks, Dlib68)
    for path in nuaa_sequence("ClientRaw/0002_01_00_01")[:20:5]:
        frame = cv2.imread(str(path))
        (a,), (b,) = dlib_pipe.analyze(frame), mesh_pipe.analyze(frame)
        iod = float(np.linalg.norm(a.landmarks[45] - a.landmarks[36]))
        assert np.linalg.norm(a.landmarks[36:48] - b.landmarks[36:48], axis=1).mean() < 0.1 * iod
