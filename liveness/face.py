"""The face pipeline: one piece of code for ingest, training and evaluation.

BlazeFace finds faces (``liveness.detector``), 68 landmarks run inside its box on the
full-resolution frame (``liveness.landmarks``: MediaPipe's face mesh by default, dlib's model
where a deployment opts in) for the ratio of eye per eye, and the face's views for the face
model: the detector's box (followed between detection rounds by ``liveness.tracking``) reshaped,
scaled 2.7x and 4.0x, cut from the frame, 80x80 each.
Landmark indices are dlib's, 0-based: 36-41 is the eye on the image's left, 42-47 the one
on its right.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from liveness.config import CropSettings, DetectSettings
from liveness.detector import BlazeFace
from liveness.landmarks import landmarker


def eye_ratios(pts: np.ndarray) -> tuple[float, float]:
    """Ratio of eye (height / width) of the image-left (36-41) and image-right (42-47) eye."""

    def one(p1: int, p2: int, p4: int, p5: int, c0: int, c3: int) -> float:
        height = (np.linalg.norm(pts[p1] - pts[p5]) + np.linalg.norm(pts[p2] - pts[p4])) / 2.0
        width = np.linalg.norm(pts[c0] - pts[c3])
        return float(height / width) if width > 1e-6 else 0.0

    return one(37, 38, 40, 41, 36, 39), one(43, 44, 46, 47, 42, 45)


def view_box(frame_shape: tuple[int, ...], box: tuple[int, int, int, int], crop: CropSettings,
             scale: float) -> tuple[int, int, int, int]:
    """The region ``(x0, y0, x1, y1)`` of one view: the face box reshaped, scaled, kept inside the frame.

    As the pretrained networks' authors cut their training crops: the scale is reduced when
    the scaled box would not fit the frame, and the box is shifted, not padded, to lie inside.
    """
    h, w = frame_shape[:2]
    x, y, box_w, box_h = box
    cx, cy = x + box_w / 2.0, y + box_h / 2.0 + crop.box_shift * box_h
    bw, bh = max(box_w * crop.box_width, 1.0), max(box_h * crop.box_height, 1.0)
    scale = min((h - 1) / bh, (w - 1) / bw, scale)
    nw, nh = bw * scale, bh * scale
    x0, y0, x1, y1 = cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2
    if x0 < 0:
        x1, x0 = x1 - x0, 0.0
    if y0 < 0:
        y1, y0 = y1 - y0, 0.0
    if x1 > w - 1:
        x0, x1 = x0 - (x1 - w + 1), float(w - 1)
    if y1 > h - 1:
        y0, y1 = y0 - (y1 - h + 1), float(h - 1)
    return int(x0), int(y0), int(x1), int(y1)


def face_views(frame: np.ndarray, box: tuple[int, int, int, int], crop: CropSettings) -> np.ndarray:
    """The views of one face side by side: ``crop.size`` x ``crop.size * len(crop.views)`` BGR.

    One image, so one JPEG travels per face and the worker decodes once.
    """
    tiles = []
    for scale in crop.views:
        x0, y0, x1, y1 = view_box(frame.shape, box, crop, scale)
        region = frame[y0:y1 + 1, x0:x1 + 1]
        if region.ndim == 2:
            region = cv2.cvtColor(region, cv2.COLOR_GRAY2BGR)
        tiles.append(cv2.resize(region, (crop.size, crop.size)))
    return np.concatenate(tiles, axis=1)


def crop_jpeg(frame: np.ndarray, box: tuple[int, int, int, int], crop: CropSettings) -> bytes | None:
    """The views of the face in ``box`` as the JPEG that travels on the face stream (None if encoding failed)."""
    ok, jpeg = cv2.imencode(".jpg", face_views(frame, box, crop), [cv2.IMWRITE_JPEG_QUALITY, crop.jpeg_quality])
    return jpeg.tobytes() if ok else None


@dataclass(frozen=True)
class Face:
    """One face in one frame: its detector-style box, landmarks and eye ratios."""

    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    left: float
    right: float


@functools.cache
def detector() -> BlazeFace:
    """The face detector, loaded once per process; a missing or broken model fails here, at start."""
    return BlazeFace()


MOTION_LEVEL = 4.0
"""Mean grey-level change of a 32x24 thumbnail above which a scene counts as moved.

The tiled second look costs several detector runs; a camera facing an empty corridor takes
it once, then again only when something in view has changed."""


class FacePipeline:
    """Detector and landmark model, one per camera (the models are shared by every pipeline of a process).

    The landmark model is ``detect.landmarks``: MediaPipe's face mesh (Apache-2.0) by default,
    dlib's 68-point model (not for commercial use) where the deployment chooses it.

    Detection: BlazeFace on the whole frame. Where it finds nothing on a frame large enough to
    hold faces it cannot see (BlazeFace sees the frame at 128 px, so faces narrower than about
    a tenth of it are lost), a second look runs on overlapping tiles, if the scene moved since
    the last second look.
    """

    def __init__(self, detect: DetectSettings | None = None, crop: CropSettings | None = None) -> None:
        self.detect_settings = detect or DetectSettings()
        self.crop_settings = crop or CropSettings()
        self._detector = detector()
        self._landmarks = landmarker(self.detect_settings.landmarks)
        self._last_look: np.ndarray | None = None
        self.second_looks = 0

    @staticmethod
    def grey(frame: np.ndarray) -> np.ndarray:
        return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)

    def detect(self, frame: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Face boxes ``(x, y, w, h)`` in full-frame pixels, best first, shaped as the landmark model expects."""
        return [box for box, _ in self.detections(frame)]

    def detections(self, frame: np.ndarray) -> list[tuple[tuple[int, int, int, int], float]]:
        """``detect``'s boxes with their detector scores."""
        found = self._detector.detect(frame)
        if not found and self._needs_second_look(frame):
            found = self._tiled(frame)
        # BlazeFace's box sits 3.5 % of its height lower than dlib's and is as large
        out = [((x, int(y - 0.035 * h), w, h), score) for (x, y, w, h), score in found
               if w >= self.detect_settings.min_face_px]
        return out[: self.detect_settings.max_faces]

    def _needs_second_look(self, frame: np.ndarray) -> bool:
        if not self.detect_settings.tiles:
            return False
        h, w = frame.shape[:2]
        if 0.1 * max(h, w) <= self.detect_settings.min_face_px:
            return False  # the first look already sees every face large enough to keep
        thumb = cv2.resize(self.grey(frame), (32, 24), interpolation=cv2.INTER_AREA).astype(np.float32)
        moved = self._last_look is None or float(np.abs(thumb - self._last_look).mean()) > MOTION_LEVEL
        if moved:
            self._last_look = thumb
        return moved

    def _tiled(self, frame: np.ndarray) -> list[tuple[tuple[int, int, int, int], float]]:
        """BlazeFace on a 2 x 2 (or 2 x 3 on wide frames) grid of overlapping tiles."""
        self.second_looks += 1
        h, w = frame.shape[:2]
        rows, cols = (2, 3) if w >= 1.5 * h else (2, 2)
        th, tw = min(h, int(h / rows * 1.3)), min(w, int(w / cols * 1.3))
        found: list[tuple[tuple[int, int, int, int], float]] = []
        for r in range(rows):
            for c in range(cols):
                y0, x0 = round(r * (h - th) / (rows - 1)), round(c * (w - tw) / (cols - 1))
                for (x, y, bw, bh), score in self._detector.detect(frame[y0:y0 + th, x0:x0 + tw]):
                    box = (x + x0, y + y0, bw, bh)
                    if all(iou(box, kept) < 0.3 for kept, _ in found):
                        found.append((box, score))
        found.sort(key=lambda f: -f[1])
        return found

    def landmarks(self, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """68 landmarks ``(68, 2)`` float32 of the face in ``box`` of a BGR or grey frame."""
        return self._landmarks(image, box)

    def face(self, image: np.ndarray, box: tuple[int, int, int, int]) -> Face:
        """The face in ``box``: the colour frame where there is one (the face mesh sees colour)."""
        pts = self.landmarks(image, box)
        left, right = eye_ratios(pts)
        return Face(box, pts, left, right)

    def analyze(self, frame: np.ndarray) -> list[Face]:
        """Detect and landmark every face of a single frame (stills, training, evaluation)."""
        return [self.face(frame, box) for box in self.detect(frame)]

    def crop(self, frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The views of the face in ``box`` (a detector box), as ingest publishes them (before JPEG)."""
        return face_views(frame, box, self.crop_settings)


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = min(ax + aw, bx + bw) - max(ax, bx)
    h = min(ay + ah, by + bh) - max(ay, by)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / float(aw * ah + bw * bh - inter)
