"""The face worker: scores face crops with the face ONNX model, in batches.

Any number of these, on any number of machines, share the face stream through one
consumer group; a crashed worker's messages are reclaimed by the others.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from liveness.config import Settings, load_settings
from liveness.contract import FaceCrop, FaceScore, Message
from liveness.defaults import artifact_path
from liveness.errors import PoisonMessageError
from liveness.images import oversized
from liveness.workers.runners import FACE_INPUT_SHAPE
from liveness.workers.scoring import ScoringWorker, serve_worker, with_cli_overrides

MAX_CROP_SIDE = 1024
"""Largest crop side accepted, pixels: bigger ones are dead-lettered, not resized."""


def decode_crop(jpeg: bytes, shape: tuple[int, ...], views: int) -> np.ndarray:
    """JPEG bytes of ``views`` square views side by side to the model's ``(H, W, 3)`` BGR input.

    PoisonMessageError if it is not an image of that many square views; one whose header states
    more pixels than that may hold is refused undecoded.
    """
    why = oversized(jpeg, "face-crop", MAX_CROP_SIDE * MAX_CROP_SIDE * views)
    if why is not None:
        raise PoisonMessageError(f"crop: {why}")
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise PoisonMessageError("crop: not a decodable image")
    h, w = img.shape[:2]
    if max(h, w) > MAX_CROP_SIDE * views or min(h, w) < 16:
        raise PoisonMessageError(f"crop: {w}x{h} pixels is outside 16..{MAX_CROP_SIDE} per view")
    if w != h * views:
        raise PoisonMessageError(f"crop: {w}x{h} pixels is not {views} square view(s) side by side")
    if (h, w) != shape[:2]:
        img = cv2.resize(img, (shape[1], shape[0]), interpolation=cv2.INTER_AREA if h > shape[0] else cv2.INTER_LINEAR)
    return img


class FaceWorker(ScoringWorker):
    """Writes one FaceScore per crop."""

    source = FaceCrop
    output = FaceScore
    consumer_group = "face-workers"
    heartbeat_role = "face-worker"
    biometric = True
    section = "face_worker"
    short = "face"
    input_shape = FACE_INPUT_SHAPE

    @classmethod
    def model_path(cls, configured: str | None) -> Path:
        return Path(configured) if configured else artifact_path("face.onnx")

    def prepare(self, msg: Message) -> np.ndarray:
        assert isinstance(msg, FaceCrop)
        return crop_input(msg, self.model.views, self.input_shape)


def crop_input(msg: FaceCrop, model_views: tuple[float, ...], shape: tuple[int, ...]) -> np.ndarray:
    """The model's input row of a crop, as the face worker and offline analysis score it;
    PoisonMessageError if it cannot be scored."""
    check_views(msg.views, model_views)
    return decode_crop(msg.jpeg, shape, len(msg.views))


def check_views(views: list[float], model_views: tuple[float, ...]) -> None:
    """A crop cut at other scales than the model was trained on would be scored wrongly: refuse it."""
    if tuple(views) != model_views:
        raise PoisonMessageError(f"crop views {list(views)} do not match the face model's {list(model_views)} "
                                 f"(ingest.crop.views of that camera)")


def serve_face_worker(settings: Settings, *, name: str | None = None, metrics_port: int | None = None) -> None:
    """One face worker's process."""
    cv2.setNumThreads(1)  # a crop decodes in well under a millisecond: a thread pool only spins
    serve_worker(settings, FaceWorker, name=name, metrics_port=metrics_port)


def run(args: argparse.Namespace) -> int:
    serve_face_worker(with_cli_overrides(load_settings(args.config), args, FaceWorker), name=args.name)
    return 0
