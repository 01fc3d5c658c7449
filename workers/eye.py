"""The eye worker: scores eye-ratio windows with the eye ONNX model, in batches.

Stateless: each EyeSample carries its window and the track's open-eye level, so any worker
can score any message; evidence over a track is accumulated by fusion.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from liveness.config import Settings, load_settings
from liveness.contract import EyeSample, EyeScore, Message
from liveness.defaults import eye_model_path
from liveness.errors import PoisonMessageError
from liveness.eyes import INPUT_SIZE, WINDOW_RATE_HZ, eye_input
from liveness.workers.scoring import ScoringWorker, serve_worker, with_cli_overrides


class EyeWorker(ScoringWorker):
    """Writes one EyeScore per sample that carries a full window; others are acknowledged."""

    source = EyeSample
    output = EyeScore
    consumer_group = "eye-workers"
    heartbeat_role = "eye-worker"
    section = "eye_worker"
    short = "eye"
    input_shape = (INPUT_SIZE,)

    @classmethod
    def model_path(cls, configured: str | None) -> Path:
        """Opt-in: ``eye_worker.model``, or the one of a checkout (``eye_model_path``)."""
        return eye_model_path(configured)

    def prepare(self, msg: Message) -> np.ndarray | None:
        assert isinstance(msg, EyeSample)
        return sample_input(msg)


def sample_input(msg: EyeSample) -> np.ndarray | None:
    """The model's input row of a sample, as the eye worker and offline analysis score it: None
    without a full window (nothing to score), PoisonMessageError if it cannot be scored."""
    if msg.window is None:
        return None
    if abs((msg.window_rate_hz or 0.0) - WINDOW_RATE_HZ) > 1e-6:
        raise PoisonMessageError(f"eye window: rate {msg.window_rate_hz} Hz, the model expects {WINDOW_RATE_HZ}")
    return eye_input(msg.window, msg.open_level)


def serve_eye_worker(settings: Settings, *, name: str | None = None, metrics_port: int | None = None) -> None:
    """One eye worker's process."""
    serve_worker(settings, EyeWorker, name=name, metrics_port=metrics_port)


def run(args: argparse.Namespace) -> int:
    serve_eye_worker(with_cli_overrides(load_settings(args.config), args, EyeWorker), name=args.name)
    return 0
