"""Which frames to process under a ``max_fps`` cap, shared by ingest and the offline pipeline."""

from __future__ import annotations

TOLERANCE = 0.25
"""Fraction of a period a frame may come early and still be taken (network jitter)."""


class FramePacer:
    """A frame is taken when it is due; the schedule absorbs jitter and never bursts after a stall."""

    def __init__(self, max_fps: float) -> None:
        self.period = 1.0 / max_fps
        self._due = float("-inf")

    def take(self, ts: float) -> bool:
        """True to process the frame captured at ``ts`` (seconds), False to drop it."""
        if ts + TOLERANCE * self.period < self._due:
            return False
        self._due = max(self._due + self.period, ts + 0.5 * self.period)
        return True
