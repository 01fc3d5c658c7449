"""The face worker: scores face crops with the face ONNX model, in batches.

Any number of these, on any number of machines, share the face stream through one
consumer group; a crashed worker's messages are reclaimed by the others.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from liveness.contract import FaceCrop, FaceScore, Message
from liveness.errors import PoisonMessageError
from workers.runners import FACE_INPUT_SHAPE
from workers.scoring import ScoringWorker, run_worker

MAX_CROP_SIDE = 1024
"""Largest crop side accepted, pixels: bigger ones are dead-lettered, not resized."""


def decode_crop(jpeg: bytes, size: int) -> np.ndarray:
    """JPEG bytes to a ``size`` x ``size`` BGR image; PoisonMessageError if it is not one."""
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise PoisonMessageError("crop: not a decodable image")
    h, w = img.shape[:2]
    if max(h, w) > MAX_CROP_SIDE or min(h, w) < 16:
        raise PoisonMessageError(f"crop: {w}x{h} pixels is outside 16..{MAX_CROP_SIDE}")
    if (h, w) != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


class FaceWorker(ScoringWorker):
    """Writes one FaceScore per crop."""

    source = FaceCrop
    output = FaceScore
    role = "face-workers"
    artifact = "face.onnx"
    input_shape = FACE_INPUT_SHAPE

    def prepare(self, msg: Message) -> np.ndarray:
        return decode_crop(msg.jpeg, self.input_shape[-1])  # type: ignore[attr-defined]


def run(args: argparse.Namespace) -> int:
    cv2.setNumThreads(1)  # a crop decodes in well under a millisecond: a thread pool only spins
    return run_worker(args, FaceWorker, "face_worker", "face")
