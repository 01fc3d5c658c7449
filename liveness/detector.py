"""BlazeFace (MediaPipe's short-range face detector) in onnxruntime.

Why this detector: dlib's HOG finds no face in a backlit dark-skinned person's frames and
misses a third of the faces in other webcam rooms, while BlazeFace finds them all at a few
milliseconds a frame (the measurements are in ``models/artifacts/blazeface.md``).

The graph (``models/artifacts/blazeface_short_range.onnx``, converted once from the
``.tflite`` in the mediapipe 0.10.14 wheel) takes one 1x3x128x128 RGB image in [-1, 1]
and returns, for each of 896 fixed anchors, 16 box regressors and one score logit. The
anchors and the decoding below are MediaPipe's (``face_detection_short_range.pbtxt``):
strides 8, 16, 16, 16; 2 anchors per cell on the 16x16 grid and 6 on the 8x8 one; sigmoid
scores; weighted non-maximum suppression at IoU 0.3. The frame is letterboxed, so faces
keep their shape.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

from liveness.defaults import artifact_path
from liveness.errors import ModelError
from liveness.onnx import open_session

INPUT_SIZE = 128
"""Side of the square image the network sees."""

MIN_SCORE = 0.5
"""Score above which an anchor counts as a face (MediaPipe's default)."""

NMS_IOU = 0.3
"""Overlap above which two detections are merged (MediaPipe's default)."""

MODEL_FILE = "blazeface_short_range.onnx"


@functools.cache
def anchors() -> np.ndarray:
    """The 896 anchor centres ``(x, y)`` in [0, 1], in the network's output order."""
    out = []
    for grid, per_cell in ((16, 2), (8, 6)):
        ys, xs = np.mgrid[0:grid, 0:grid]
        centres = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], axis=-1).reshape(-1, 2)
        out.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


class BlazeFace:
    """Face boxes ``(x, y, w, h)`` and scores in a BGR or grey frame of any size.

    Args:
        path: the ONNX file (default: the committed artifact).
        min_score: detections below this score are dropped.
    """

    def __init__(self, path: str | Path | None = None, min_score: float = MIN_SCORE) -> None:
        self.path = Path(path) if path is not None else artifact_path(MODEL_FILE)
        self.session = open_session(self.path, what="face detector model")
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if (len(inputs) != 1 or list(inputs[0].shape) != [1, 3, INPUT_SIZE, INPUT_SIZE]
                or [o.shape[-1] for o in outputs] != [16, 1]):
            raise ModelError(f"{self.path}: not the BlazeFace short-range graph "
                             f"(input {[i.shape for i in inputs]}, outputs {[o.shape for o in outputs]})")
        self.input_name = inputs[0].name
        self.min_score = min_score

    def tensor(self, frame: np.ndarray) -> tuple[np.ndarray, float, int, int]:
        """The letterboxed network input, and the scale and padding that map it back to the frame."""
        h, w = frame.shape[:2]
        scale = INPUT_SIZE / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        small = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        rgb = (cv2.cvtColor(small, cv2.COLOR_GRAY2RGB) if small.ndim == 2 else
               cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
        canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        px, py = (INPUT_SIZE - nw) // 2, (INPUT_SIZE - nh) // 2
        canvas[py:py + nh, px:px + nw] = rgb
        x = canvas.astype(np.float32) * (2.0 / 255.0) - 1.0
        return x.transpose(2, 0, 1)[None], scale, px, py

    def detect(self, frame: np.ndarray) -> list[tuple[tuple[int, int, int, int], float]]:
        """``((x, y, w, h), score)`` of every face, in frame pixels, best first."""
        x, scale, px, py = self.tensor(frame)
        reg, logit = self.session.run(None, {self.input_name: x})
        scores = 1.0 / (1.0 + np.exp(-np.clip(logit[0, :, 0].astype(np.float64), -100.0, 100.0)))
        keep = np.flatnonzero(scores >= self.min_score)
        if not len(keep):
            return []
        a = anchors()[keep]
        r = reg[0, keep, :4] / INPUT_SIZE
        cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
        boxes = np.stack([cx - r[:, 2] / 2, cy - r[:, 3] / 2, r[:, 2], r[:, 3]], axis=1) * INPUT_SIZE
        boxes[:, 0] -= px
        boxes[:, 1] -= py
        boxes /= scale
        h, w = frame.shape[:2]
        out = []
        for box, score in _weighted_nms(boxes, scores[keep]):
            bx, by, bw, bh = box
            x0, y0 = max(0.0, bx), max(0.0, by)
            x1, y1 = min(float(w), bx + bw), min(float(h), by + bh)
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                out.append(((int(x0), int(y0), int(x1 - x0), int(y1 - y0)), score))
        return out


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[0] + box[2], others[:, 0] + others[:, 2])
    y1 = np.minimum(box[1] + box[3], others[:, 1] + others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter / (box[2] * box[3] + others[:, 2] * others[:, 3] - inter + 1e-9)


def _weighted_nms(boxes: np.ndarray, scores: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's weighted NMS: each cluster's box is the score-weighted mean of its members."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    out = []
    remaining = np.arange(len(scores))
    while len(remaining):
        overlap = _iou(boxes[remaining[0]], boxes[remaining])
        members = remaining[overlap > NMS_IOU]
        members = members if len(members) else remaining[:1]
        weights = scores[members]
        out.append(((boxes[members] * weights[:, None]).sum(0) / weights.sum(), float(scores[remaining[0]])))
        remaining = remaining[overlap <= NMS_IOU]
    return out
