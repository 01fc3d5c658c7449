"""A track's eye-ratio history, turned into fixed-rate windows for the eye model.

A window of 10 camera frames spans 0.33 s at 30 fps and 2 s at 5 fps, while a blink lasts
0.1-0.4 s. So windows are resampled to ``rate_hz``: each sample is the minimum ratio seen in
its time bin (a blink shorter than a bin still shows), and empty bins repeat the previous
sample. Ingest builds windows with this code; training builds them with the same code.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from liveness.defaults import EYE_WINDOW

WINDOW_RATE_HZ = 10.0
"""Samples per second of an eye window: 10 samples span one second."""

OPEN_LEVEL_FRAMES = 60
"""Frames of history whose median ratio is the track's open-eye level."""


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
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()

    @property
    def open_level(self) -> float:
        """Running median of the mean ratio: the track's open eye, so the model sees lid movement."""
        return float(np.median(self._levels)) if self._levels else 0.0

    def window(self) -> list[list[float]] | None:
        """The last ``size`` fixed-rate samples ``[left, right]``, oldest first, or None while too short."""
        if not self._samples:
            return None
        end = self._samples[-1][0]
        start = end - self.size / self.rate_hz
        if self._samples[0][0] > start + 1.0 / self.rate_hz:
            return None
        bins: list[list[float] | None] = [None] * self.size
        for ts, left, right in self._samples:
            i = int((ts - start) * self.rate_hz)
            if i < 0:
                continue
            i = min(i, self.size - 1)
            b = bins[i]
            bins[i] = [left, right] if b is None else [min(b[0], left), min(b[1], right)]
        out: list[list[float]] = []
        last = next((b for b in bins if b is not None), None)
        for b in bins:
            last = b if b is not None else last
            out.append(list(last))  # type: ignore[arg-type]
        return out
