"""The face pipeline: one piece of code for ingest, training and evaluation.

dlib's HOG detector on a resized grey frame, dlib's 68 landmarks on the full-resolution
grey frame, the ratio of eye per eye, and a face crop aligned on the eyes. Landmark indices
are dlib's, 0-based: 36-41 is the eye on the image's left, 42-47 the one on its right.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np

from liveness.config import CropSettings, DetectSettings
from liveness.errors import ModelError


def landmark_model_path() -> Path:
    """dlib's 68-point model from the installed face-recognition-models package.

    Found with find_spec because the package's ``__init__`` needs pkg_resources; nothing is
    ever downloaded.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("package face-recognition-models is not installed (pip install face-recognition-models)")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise ModelError(f"dlib landmark model missing at {path}")
    return path


def eye_ratios(pts: np.ndarray) -> tuple[float, float]:
    """Ratio of eye (height / width) of the image-left (36-41) and image-right (42-47) eye."""

    def one(p1: int, p2: int, p4: int, p5: int, c0: int, c3: int) -> float:
        height = (np.linalg.norm(pts[p1] - pts[p5]) + np.linalg.norm(pts[p2] - pts[p4])) / 2.0
        width = np.linalg.norm(pts[c0] - pts[c3])
        return float(height / width) if width > 1e-6 else 0.0

    return one(37, 38, 40, 41, 36, 39), one(43, 44, 46, 47, 42, 45)


def face_geometry(pts: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Centre, size and in-plane angle (degrees) of a face from its landmarks.

    The crop depends on the landmarks alone, so a tracked face (ingest) and a detected face
    (training, evaluation) give the same crop.
    """
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre = (lo + hi) / 2.0
    size = float(max(hi - lo))
    left_eye, right_eye = pts[36:42].mean(axis=0), pts[42:48].mean(axis=0)
    dx, dy = right_eye - left_eye
    return centre, size, float(np.degrees(np.arctan2(dy, dx)))


def align_crop(frame: np.ndarray, pts: np.ndarray, crop: CropSettings) -> np.ndarray:
    """Square crop of ``crop.scale`` times the face size, rotated so the eyes are level."""
    centre, size, angle = face_geometry(pts)
    side = max(size * crop.scale, 1.0)
    zoom = crop.size / side
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, zoom)
    m[0, 2] += crop.size / 2.0 - centre[0]
    m[1, 2] += crop.size / 2.0 - centre[1]
    return cv2.warpAffine(frame, m, (crop.size, crop.size), flags=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def crop_jpeg(frame: np.ndarray, pts: np.ndarray, crop: CropSettings) -> bytes | None:
    """The aligned crop as the JPEG that travels on the face stream (None if encoding failed)."""
    ok, jpeg = cv2.imencode(".jpg", align_crop(frame, pts, crop), [cv2.IMWRITE_JPEG_QUALITY, crop.jpeg_quality])
    return jpeg.tobytes() if ok else None


def landmark_box(pts: np.ndarray) -> tuple[int, int, int, int]:
    """Axis-aligned box ``(x, y, w, h)`` around the landmarks."""
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return int(lo[0]), int(lo[1]), int(hi[0] - lo[0]), int(hi[1] - lo[1])


@dataclass(frozen=True)
class Face:
    """One face in one frame: its detector-style box, landmarks and eye ratios."""

    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    left: float
    right: float


@functools.cache
def shape_predictor() -> dlib.shape_predictor:
    """dlib's 68-point model, loaded once per process (100 MB), or inherited from the fork server."""
    return dlib.shape_predictor(str(landmark_model_path()))


class FacePipeline:
    """Detector and landmark model; the landmark model is shared by every pipeline of a process."""

    def __init__(self, detect: DetectSettings | None = None, crop: CropSettings | None = None) -> None:
        self.detect_settings = detect or DetectSettings()
        self.crop_settings = crop or CropSettings()
        self._detector = dlib.get_frontal_face_detector()
        self._shape = shape_predictor()

    @staticmethod
    def grey(frame: np.ndarray) -> np.ndarray:
        return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)

    def detect(self, grey: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Face boxes ``(x, y, w, h)`` in full-frame pixels, largest first.

        Each resize factor of ``detect.scale`` is tried in turn until one finds a face: dlib's HOG
        misses some faces at one size of the frame and finds them at another, so the second look
        (the larger frame) finds small faces without dropping any that the first finds.
        """
        for s in self.detect_settings.scales_for(grey.shape[1]):
            boxes = self._detect_at(grey, s)
            if boxes:
                return boxes
        return []

    def _detect_at(self, grey: np.ndarray, s: float) -> list[tuple[int, int, int, int]]:
        small = (grey if s == 1.0 else
                 cv2.resize(grey, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1.0 else cv2.INTER_LINEAR))
        rects = self._detector(small, self.detect_settings.upsample)
        boxes = [(int(r.left() / s), int(r.top() / s), int(r.width() / s), int(r.height() / s)) for r in rects]
        boxes = [b for b in boxes if b[2] >= self.detect_settings.min_face_px]
        boxes.sort(key=lambda b: b[2] * b[3], reverse=True)
        return boxes[: self.detect_settings.max_faces]

    def landmarks(self, grey: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """68 landmarks ``(68, 2)`` float32 of the face in ``box``."""
        x, y, w, h = box
        shape = self._shape(grey, dlib.rectangle(x, y, x + w, y + h))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def face(self, grey: np.ndarray, box: tuple[int, int, int, int]) -> Face:
        pts = self.landmarks(grey, box)
        left, right = eye_ratios(pts)
        return Face(box, pts, left, right)

    def analyze(self, frame: np.ndarray) -> list[Face]:
        """Detect and landmark every face of a single frame (stills, training, evaluation)."""
        grey = self.grey(frame)
        return [self.face(grey, box) for box in self.detect(grey)]

    def crop(self, frame: np.ndarray, face: Face) -> np.ndarray:
        return align_crop(frame, face.landmarks, self.crop_settings)
