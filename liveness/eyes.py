"""A track's eye-ratio history, turned into fixed-rate windows for the eye model.

A window of 10 camera frames spans 0.33 s at 30 fps and 2 s at 5 fps, while a blink lasts
0.1-0.4 s. So windows are resampled to ``rate_hz``: each sample is the minimum ratio seen in
its time bin (a blink shorter than a bin still shows), and empty bins repeat the previous
sample. Ingest builds windows with this code; training builds them with the same code.

The eye model's input is one row of ``INPUT_SIZE`` values (``eye_input``): the window's
``[left, right]`` pairs oldest first, flattened ``l0, r0, l1, r1, ...``, then the open level.
``window_features`` is the model's first stage in numpy; the ONNX model computes the same
features inside its graph, so workers feed it the raw row.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Sequence

import numpy as np

from liveness.defaults import EYE_WINDOW
from liveness.errors import PoisonMessageError

WINDOW_RATE_HZ = 10.0
"""Samples per second of an eye window: 10 samples span one second."""

OPEN_LEVEL_FRAMES = 60
"""Frames of history whose median ratio is the track's open-eye level."""

INPUT_SIZE = 2 * EYE_WINDOW + 1
"""Values per model input row: the flattened window, then the open level."""

CLOSED_FRACTION = 0.75
"""A sample whose mean ratio is below this fraction of the open level counts as a closing lid."""

FEATURES = ("min", "median", "max", "depth", "closed_samples", "min_both", "lr_corr")
"""Window statistics, all on ratios divided by the open level (lid movement, not eye shape):
lowest, median and highest mean ratio; median minus lowest (dip depth); samples below
``CLOSED_FRACTION`` (dip duration, in 1/rate_hz seconds); the lowest of the wider eye (both
lids down, not one landmark glitch); the left-right correlation (lids move together)."""

_EPS = 1e-6
_BIN_EPS = 1e-9  # frame times that are exact multiples of a bin fall on the newer side


class EyeHistory:
    """Eye ratios of one track over time; cheap to update on every frame."""

    def __init__(self, rate_hz: float = WINDOW_RATE_HZ, size: int = EYE_WINDOW) -> None:
        self.rate_hz = rate_hz
        self.size = size
        self._samples: deque[tuple[float, float, float]] = deque()
        self._levels: deque[float] = deque(maxlen=OPEN_LEVEL_FRAMES)

    def add(self, ts: float, left: float, right: float) -> None:
        self._samples.append((ts, left, right))
        self._levels.append((left + right) / 2.0)
        horizon = ts - (self.size + 1) / self.rate_hz
        while len(self._samples) > 1 and self._samples[1][0] <= horizon:
            self._samples.popleft()

    @property
    def open_level(self) -> float:
        """Running median of the mean ratio: the track's open eye, so the model sees lid movement."""
        return float(np.median(self._levels)) if self._levels else 0.0

    def window(self) -> list[list[float]] | None:
        """The last ``size`` fixed-rate samples ``[left, right]``, oldest first, or None while too short.

        Bins end at the newest frame, so the newest sample always holds the newest frame; a
        bin without a frame repeats the one before it, the oldest from the last frame before
        the window. None until some frame is at least ``size - 1`` bins old.
        """
        if not self._samples:
            return None
        end = self._samples[-1][0]
        bins: list[list[float] | None] = [None] * self.size
        carry: list[float] | None = None
        for ts, left, right in self._samples:
            i = self.size - 1 - math.floor((end - ts) * self.rate_hz + _BIN_EPS)
            if i < 0:
                carry = [left, right]
                continue
            b = bins[i]
            bins[i] = [left, right] if b is None else [min(b[0], left), min(b[1], right)]
        if bins[0] is None and carry is None:
            return None
        out: list[list[float]] = []
        last = carry
        for b in bins:
            last = b if b is not None else last
            out.append(list(last))  # type: ignore[arg-type]  # not None: bins[0] or carry is (see above)
        return out


def eye_input(window: Sequence[Sequence[float]], open_level: float) -> np.ndarray:
    """One model input row ``(INPUT_SIZE,)`` float32; raises PoisonMessageError on a bad window.

    Closed eyes can make a width of zero upstream: NaN, infinite or negative ratios, a wrong
    shape or a non-positive open level can never be scored, so the message is dead-lettered.
    """
    w = np.asarray(window, dtype=np.float64)
    if w.shape != (EYE_WINDOW, 2):
        raise PoisonMessageError(f"eye window: shape {w.shape}, expected ({EYE_WINDOW}, 2)")
    if not np.isfinite(w).all() or (w < 0).any():
        raise PoisonMessageError("eye window: ratios must be finite and >= 0")
    if not (math.isfinite(open_level) and open_level > 0):
        raise PoisonMessageError(f"eye window: open_level {open_level!r} must be finite and > 0")
    return np.append(w.ravel(), open_level).astype(np.float32)


def window_features(x: np.ndarray) -> np.ndarray:
    """``FEATURES`` of input rows ``(N, INPUT_SIZE)``, float32 ``(N, len(FEATURES))``.

    The ONNX graph of ``liveness.models.eye_onnx`` computes exactly this, op for op, in float32.
    """
    x = np.asarray(x, dtype=np.float32).reshape(-1, INPUT_SIZE)
    w = x[:, :-1].reshape(-1, EYE_WINDOW, 2) / np.maximum(x[:, -1:], np.float32(_EPS))[:, :, None]
    left, right = w[:, :, 0], w[:, :, 1]
    mean = (left + right) * np.float32(0.5)
    s = np.sort(mean, axis=1)
    lo, hi = (EYE_WINDOW - 1) // 2, EYE_WINDOW // 2
    median = (s[:, lo] + s[:, hi]) * np.float32(0.5)
    mn, mx = s[:, 0], s[:, -1]
    closed = (mean < np.float32(CLOSED_FRACTION)).astype(np.float32).sum(axis=1)
    min_both = np.maximum(left, right).min(axis=1)
    dl = left - left.mean(axis=1, keepdims=True)
    dr = right - right.mean(axis=1, keepdims=True)
    corr = (dl * dr).sum(axis=1) / np.sqrt((dl * dl).sum(axis=1) * (dr * dr).sum(axis=1) + np.float32(_EPS))
    return np.stack([mn, median, mx, median - mn, closed, min_both, corr], axis=1).astype(np.float32)
