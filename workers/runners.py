"""ONNX model runners: load a committed model safely and score batches with onnxruntime.

The checks run once, at load, so a wrong or broken file fails at start-up with a clear
ModelError instead of on the first message. ``models/`` writes the files; this module
never imports it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from liveness.errors import ModelError
from liveness.onnx import open_session

log = logging.getLogger(__name__)

FACE_INPUT_SHAPE = (80, 160, 3)
"""Shape of one face-model input sample: the crop as ingest publishes it, the 2.7x and 4.0x
views of 80x80 side by side, BGR, channels last."""

SLICE = 8
"""Most samples onnxruntime runs at once; a larger batch runs in slices of this many.

Why: onnxruntime's CPU convolutions work one sample at a time, so a batch saves only the
per-node overhead, while the activations of a whole batch outgrow the caches. The face model
(2026-12-03, this 2-core VM, 2 MB of L2, one thread, thread time) cost 4.2 ms a crop at batch 1,
3.5-3.6 at 4 to 8, 3.8 at 16 and 4.2 at 32: a batch of 32 was no cheaper a crop than one.
"""


class OnnxModel:
    """One ONNX model with a single input and a single output, and its ``liveness.*`` metadata.

    Args:
        path: the ONNX file.
        threads: onnxruntime intra-op threads (1 suits many workers per machine).
        input_shape: expected shape of one sample (without the batch axis); a model whose
            input does not fit is refused.
        max_batch: the largest batch it will score; a batch of up to ``SLICE`` of these is run once at load.
    """

    def __init__(self, path: str | os.PathLike[str], threads: int = 1,
                 input_shape: tuple[int, ...] = FACE_INPUT_SHAPE, max_batch: int = 1) -> None:
        self.path = Path(path)
        self.session = open_session(self.path, threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{self.path}: expected 1 input and 1 output, got {len(inputs)} and {len(outputs)}")
        dims = inputs[0].shape
        fits = len(dims) == len(input_shape) + 1 and all(
            not isinstance(d, int) or d == want for d, want in zip(dims[1:], input_shape))
        if not fits:
            raise ModelError(f"{self.path}: input shape {dims} does not fit the expected (batch, "
                             f"{', '.join(map(str, input_shape))})")
        self.input_name = inputs[0].name
        self.input_shape = tuple(input_shape)
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.name = self.metadata.get("liveness.name", self.path.stem)
        self.version = self.metadata.get("liveness.version", "0")
        self.views = _views(self.path, self.metadata.get("liveness.views"))
        try:
            self.threshold = float(self.metadata["liveness.threshold"])
        except KeyError:
            raise ModelError(f"{self.path}: metadata 'liveness.threshold' missing (not exported by models/?)") from None
        except ValueError:
            raise ModelError(f"{self.path}: metadata 'liveness.threshold' is not a number") from None
        # Warm up at the largest slice: onnxruntime's arena grows to the largest batch it has seen and
        # keeps it, so a worker's memory is flat from the start instead of growing with its first busy minute.
        self.predict(np.zeros((min(max_batch, SLICE), *self.input_shape), np.float32))
        log.info("model %s v%s loaded from %s (threshold %.4f, %d thread(s))",
                 self.name, self.version, self.path, self.threshold, threads)

    def _layout(self, batch: np.ndarray) -> np.ndarray:
        """The batch in the model's layout; channels-last images (as OpenCV decodes) are transposed."""
        if batch.shape[1:] == self.input_shape:
            return batch
        shape = self.input_shape
        if batch.ndim == 4 and len(shape) == 3 and batch.shape[1:] == (shape[1], shape[2], shape[0]):
            return batch.transpose(0, 3, 1, 2)
        raise ModelError(f"batch shape {batch.shape} does not fit the model input (N, {', '.join(map(str, shape))})")

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """One score per sample, shape (N,), float32.

        Face model: ``batch`` is BGR crops as published, 0..255, (N, 80, 160, 3) uint8/float.
        """
        batch = np.asarray(batch)
        if batch.ndim == len(self.input_shape):
            batch = batch[None]
        batch = self._layout(batch)
        if not len(batch):
            return np.zeros(0, np.float32)
        # each slice converted on its own, so its float copy is still in the cache when the model reads it
        out = [self.session.run(None, {self.input_name: np.ascontiguousarray(batch[i:i + SLICE], dtype=np.float32)})[0]
               for i in range(0, len(batch), SLICE)]
        return np.concatenate(out).astype(np.float32).reshape(len(batch), -1)[:, 0]


def _views(path: Path, raw: str | None) -> tuple[float, ...]:
    """The crop views a face model was trained on (``liveness.views`` metadata); () for other models."""
    if raw is None:
        return ()
    try:
        views = tuple(float(v) for v in json.loads(raw))
    except (ValueError, TypeError):
        raise ModelError(f"{path}: metadata 'liveness.views' is not a list of numbers: {raw[:40]!r}") from None
    return views
