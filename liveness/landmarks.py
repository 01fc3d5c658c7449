"""Facial landmarks in dlib's 68-point layout, from one of two models a deployment chooses.

- ``face_mesh`` (default): MediaPipe's face mesh with attention (468 points, lids and lips
  refined by their own sub-networks; Apache-2.0), converted to ONNX (``models/artifacts/face_mesh.md``),
  of which 68 points in dlib's places are kept (``MESH_TO_68``). A product may ship it.
- ``dlib68``: dlib's 68-point shape predictor from the ``face-recognition-models`` package
  (``pip install 'liveness[dlib68]'``). Trained on iBUG 300-W, whose licence excludes
  commercial use: its author says it "can't be used in a commercial product".

Both give the same layout (0-based: 0-16 jaw, 36-41 the eye on the image's left, 42-47 the
one on its right), so the eye ratios, the face box and the crops read them alike.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from liveness.config import LandmarkModel
from liveness.defaults import artifact_path
from liveness.errors import ModelError
from liveness.onnx import open_session

Box = tuple[int, int, int, int]

MESH_FILE = "face_mesh.onnx"

MESH_INPUT = 192
"""Side of the square image the mesh network sees."""

MESH_POINTS = 468

MESH_SCALE = 1.5
"""The mesh's input region is the face box scaled 1.5x, as MediaPipe cuts it from a detection."""

MAX_ROLL_DEG = 10.0
"""Eye-line tilt above which the mesh runs a second time on the region turned upright.

MediaPipe turns the region by the face's roll before the network sees it; here the first run's
eye corners give the roll, so an upright face (most of them) costs one run."""

MESH_TO_68 = np.array([
    127, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 356,  # jaw 0-16
    71, 63, 105, 66, 107, 336, 296, 334, 293, 301,  # brows 17-26
    168, 197, 5, 4, 75, 97, 2, 326, 305,  # nose 27-35
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,  # eyes 36-47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87,  # mouth 48-67
])
"""Mesh vertex of each of dlib's 68 points; the eyes are the six per eye that the eye-aspect-ratio
literature uses with the mesh (corners 33/133 and 362/263, lids 160/144, 158/153, 385/380, 387/373),
the jaw's ends the vertices nearest dlib's (127, 356)."""

JAW_SCALE = 1.03
"""The mesh's jaw line runs inside dlib's: its points are moved out from the nose tip (point 30) by
3 %, so the face box, and with it the crops the face model was fitted on, stays as dlib's made it
(median box size ratio 1.00, IoU 0.94 over NUAA and the video sources: ``face_mesh.md``)."""


LEFT_CORNER, RIGHT_CORNER = 33, 263
"""Mesh vertices of the outer eye corners (image-left, image-right), whose line gives the face's roll."""


class Landmarker(Protocol):
    def __call__(self, image: np.ndarray, box: Box) -> np.ndarray:
        """68 landmarks ``(68, 2)`` float32, in frame pixels, of the face in ``box`` of a BGR or grey frame."""


class FaceMesh:
    """MediaPipe's face mesh in onnxruntime: 68 of its 468 points, in dlib's layout.

    The network sees the face box scaled 1.5x, turned upright, at 192x192 (as MediaPipe cuts it).

    Args:
        path: the ONNX file (default: the committed artifact).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else artifact_path(MESH_FILE)
        self.session = open_session(self.path, what="face mesh model")
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if (len(inputs) != 1 or list(inputs[0].shape)[1:] != [3, MESH_INPUT, MESH_INPUT]
                or [list(o.shape)[1:] for o in outputs] != [[MESH_POINTS, 3], [1]]):
            raise ModelError(f"{self.path}: not the face mesh graph "
                             f"(input {[i.shape for i in inputs]}, outputs {[o.shape for o in outputs]})")
        self.input_name = inputs[0].name

    def __call__(self, image: np.ndarray, box: Box) -> np.ndarray:
        return mesh_to_68(self.mesh(image, box))

    def mesh(self, image: np.ndarray, box: Box) -> np.ndarray:
        """All 468 points ``(468, 2)`` in frame pixels; a face tilted beyond MAX_ROLL_DEG is looked at again, upright."""
        pts = self.run(image, box, 0.0)
        dx, dy = pts[RIGHT_CORNER] - pts[LEFT_CORNER]
        roll = math.atan2(float(dy), float(dx))
        if abs(math.degrees(roll)) > MAX_ROLL_DEG:
            pts = self.run(image, box, roll)
        return pts

    def run(self, image: np.ndarray, box: Box, roll: float) -> np.ndarray:
        """The 468 points, the network seeing the region around ``box`` turned by ``-roll`` radians."""
        x, y, w, h = box
        centre = np.array([x + w / 2.0, y + h / 2.0])
        k = MESH_INPUT / (MESH_SCALE * max(w, h, 1))
        c, s = math.cos(roll), math.sin(roll)
        rot = k * np.array([[c, s], [-s, c]])
        warp = np.hstack([rot, (MESH_INPUT / 2.0 - rot @ centre)[:, None]])
        patch = cv2.warpAffine(image, warp, (MESH_INPUT, MESH_INPUT), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT)
        rgb = cv2.cvtColor(patch, cv2.COLOR_GRAY2RGB if patch.ndim == 2 else cv2.COLOR_BGR2RGB)
        tensor = (rgb.astype(np.float32) * np.float32(1 / 255.0)).transpose(2, 0, 1)[None]
        mesh, _ = self.session.run(None, {self.input_name: tensor})
        back = cv2.invertAffineTransform(warp)
        return mesh[0, :, :2].astype(np.float64) @ back[:, :2].T + back[:, 2]


def mesh_to_68(mesh: np.ndarray) -> np.ndarray:
    """dlib's 68 points ``[..., 68, 2]`` float32 of meshes ``[..., 468, 2]``: ``MESH_TO_68``, the jaw moved out by ``JAW_SCALE``."""
    pts = np.array(mesh[..., MESH_TO_68, :], dtype=np.float64)
    nose = pts[..., 30:31, :]
    pts[..., :17, :] = nose + (pts[..., :17, :] - nose) * JAW_SCALE
    return pts.astype(np.float32)


def dlib68_model_path() -> Path:
    """dlib's 68-point model from the installed face-recognition-models package.

    Found with find_spec because the package's ``__init__`` needs pkg_resources; nothing is
    ever downloaded.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("landmarks 'dlib68' need the package face-recognition-models "
                         "(pip install 'liveness[dlib68]'; not for commercial use: iBUG 300-W licence)")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise ModelError(f"dlib landmark model missing at {path}")
    return path


@functools.cache
def shape_predictor() -> Any:
    """dlib's 68-point model, loaded once per process (100 MB), or inherited from the fork server."""
    import dlib

    return dlib.shape_predictor(str(dlib68_model_path()))


class Dlib68:
    """dlib's 68-point shape predictor on the grey frame (opt-in: not for commercial use)."""

    def __init__(self) -> None:
        self._shape = shape_predictor()

    def __call__(self, image: np.ndarray, box: Box) -> np.ndarray:
        import dlib

        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        x, y, w, h = box
        shape = self._shape(grey, dlib.rectangle(x, y, x + w, y + h))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


@functools.cache
def landmarker(model: LandmarkModel) -> Landmarker:
    """The landmark model, loaded once per process; a missing or broken model fails here, at start."""
    if model == "face_mesh":
        return FaceMesh()
    if model == "dlib68":
        return Dlib68()
    raise ModelError(f"unknown landmark model {model!r} (face_mesh or dlib68)")
