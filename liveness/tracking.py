"""Per-camera face tracking: detect every N frames, follow each face's box in between.

Shared by ingest and offline evaluation, so a track means the same thing in both. A detection
round places each track on its detector box; between rounds the box follows the face by matching
the face as the last round saw it, shrunk to 32-64 pixels a face width, in the region around its last place
(a small fraction of a millisecond a face). Crops are cut from that box, as single-frame analysis
cuts them from the detector's, so no frame needs landmarks for its crop. Landmarks (about 4 ms a
face) run only where the tracker's user asks for them (``update``'s ``landmarks``: ingest's
sampler does while it keeps eye windows, where the eye path is on).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

import cv2
import numpy as np

from liveness.face import Face, FacePipeline, iou

MIN_IOU = 0.3
"""Overlap with a detection below which a track counts as lost."""

FOLLOW_PX = 32
"""Least face width, in pixels, at which a face is matched between detection rounds."""

FOLLOW_REACH = 0.5
"""How far from its last place a face is looked for between two frames, in face widths."""

FOLLOW_MIN_MATCH = 0.5
"""Normalised correlation below which the face is not where it was looked for: the box stays."""

MAX_MISSES = 2
"""Detection rounds a track may miss before it ends (absorbs a single missed detection).

No grace in a round that found a face no track explains: the track has lost its face (a
fast move, a cut), and the new face gets a new track. Keeping the lost one would follow
the background for two rounds, doubling the landmark work and sending crops of nothing."""


S = TypeVar("S")
"""What the tracker's user keeps per track (ingest: ``TrackState``)."""


@dataclass
class Track(Generic[S]):
    """A face followed across frames; ``id`` stays while the face stays in view."""

    id: str
    box: tuple[int, int, int, int]
    """Where the face is on this frame: its detector box on a detection round, followed in between."""
    first_frame: int
    face: Face | None = None
    """The landmarked face of the last frame that needed landmarks (None before the first)."""
    frames: int = 1
    misses: int = 0
    state: S | None = None
    """Set by the tracker's user on the track's first frame."""
    fresh: bool = False
    """Whether ``face`` was landmarked on this frame."""
    template: np.ndarray | None = field(default=None, repr=False)
    """The face as the last detection round saw it, grey, shrunk ``_factor(box width)`` times."""


class FaceTracker(Generic[S]):
    """Keeps the faces of one camera; ``update()`` returns the live tracks of a frame."""

    def __init__(self, pipeline: FacePipeline, new_id: Callable[[], str] | None = None) -> None:
        self.pipeline = pipeline
        counter = itertools.count(1)
        self._new_id = new_id or (lambda: f"t{next(counter)}")
        self.tracks: list[Track[S]] = []
        self._last_detect = -(10**9)
        self.ended: list[Track[S]] = []

    def update(self, frame: np.ndarray, index: int, landmarks: bool = True) -> list[Track[S]]:
        """Advance to frame ``index``; ended tracks are left in ``self.ended`` for the caller.

        ``landmarks``: whether every track's face is landmarked on this frame (``Track.face``)."""
        self.ended = []
        h, w = frame.shape[:2]
        every = self.pipeline.detect_settings.every_n_frames
        # an empty scene is searched twice as often, not on every frame: detection is the
        # costliest step, and a camera facing an empty corridor must stay cheap
        detect = index - self._last_detect >= (max(1, every // 2) if not self.tracks else every)
        followed: list[Track[S]] = []
        for track in self.tracks:
            if not _inside(track.box, w, h):
                self.ended.append(track)
                continue
            track.frames += 1
            track.fresh = False
            followed.append(track)
        if detect:
            self._last_detect = index
            self.tracks = self._match(frame, followed, index)
        else:
            for track in followed:
                _follow(track, frame)
            self.tracks = followed
        if landmarks:  # each track once, in the box it ends the frame in
            for track in self.tracks:
                track.face = self.pipeline.face(frame, track.box)
                track.fresh = True
        return self.tracks

    def _match(self, frame: np.ndarray, tracks: list[Track[S]], index: int) -> list[Track[S]]:
        """Pair tracks with this frame's detections by their last box.

        A matched track takes the detector's box (re-anchored: no drift); a missed one follows
        its face as between rounds. A track starts only on a detection of ``start_score`` or
        more, so a track is a face; one it keeps may score less (a turned head), and a track
        without a matching detection ends after ``MAX_MISSES``.
        """
        found = self.pipeline.detections(frame)
        unmatched = [box for box, _ in found]
        kept: list[Track[S]] = []
        missed: list[Track[S]] = []
        for track in sorted(tracks, key=lambda t: -t.frames):
            best = max(unmatched, key=lambda b: iou(b, track.box), default=None)
            if best is not None and iou(best, track.box) >= MIN_IOU:
                unmatched.remove(best)
                track.box = best
                _anchor(track, frame)
                track.misses = 0
                kept.append(track)
            else:
                missed.append(track)
        for track in missed:
            if track.misses < MAX_MISSES and not unmatched:
                track.misses += 1
                _follow(track, frame)
                kept.append(track)
            else:
                self.ended.append(track)
        room = self.pipeline.detect_settings.max_faces - len(kept)
        start = self.pipeline.detect_settings.start_score
        confident = [box for box, score in found if score >= start and box in unmatched]
        for box in confident[: max(room, 0)]:
            track = Track[S](self._new_id(), box, index)
            _anchor(track, frame)
            kept.append(track)
        return kept


def _shrink(frame: np.ndarray, x0: int, y0: int, x1: int, y1: int, k: int) -> np.ndarray:
    """The frame's region ``[y0:y1, x0:x1]`` grey and ``k`` times smaller: only the region is
    converted, and by a whole factor, which OpenCV averages several times faster than any other."""
    region = frame[y0:y1, x0:x1]
    grey = region if region.ndim == 2 else cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
    h, w = (grey.shape[0] // k, grey.shape[1] // k)
    return cv2.resize(grey[:h * k, :w * k], (w, h), interpolation=cv2.INTER_AREA) if k > 1 else grey


def _factor(w: int) -> int:
    """How many times a face ``w`` pixels wide is shrunk to be matched: to ``FOLLOW_PX`` up to twice that."""
    return max(1, w // FOLLOW_PX)


def _anchor(track: Track[Any], frame: np.ndarray) -> None:
    """Keep the face in the track's box as the template it is followed by until the next round."""
    x, y, w, h = track.box
    fh, fw = frame.shape[:2]
    k = _factor(w)
    template = _shrink(frame, max(0, x), max(0, y), min(fw, x + w), min(fh, y + h), k)
    track.template = template if min(template.shape) >= 8 else None


def _follow(track: Track[Any], frame: np.ndarray) -> None:
    """Move the track's box to where its template matches best near its last place.

    Only the region around the box is shrunk and turned grey, so the cost does not grow with the
    frame. Where nothing near matches well (the face turned away, or is covered), the box stays,
    and the next detection round decides whether the track goes on."""
    if track.template is None:
        return
    x, y, w, h = track.box
    reach = int(FOLLOW_REACH * w)
    fh, fw = frame.shape[:2]
    x0, y0 = max(0, x - reach), max(0, y - reach)
    k = _factor(w)
    region = _shrink(frame, x0, y0, min(fw, x + w + reach), min(fh, y + h + reach), k)
    th, tw = track.template.shape[:2]
    if region.shape[0] < th or region.shape[1] < tw:
        return  # the face is cut off by the frame's edge: left to the next round
    match = cv2.matchTemplate(region, track.template, cv2.TM_CCOEFF_NORMED)
    _, best, _, (mx, my) = cv2.minMaxLoc(match)
    if best >= FOLLOW_MIN_MATCH:
        dx, dy = _subpixel(match, mx, my)
        track.box = (int(round(x0 + (mx + dx) * k)), int(round(y0 + (my + dy) * k)), w, h)


def _subpixel(match: np.ndarray, mx: int, my: int) -> tuple[float, float]:
    """The peak's offset from ``(mx, my)`` by a parabola through its neighbours, each way."""

    def one(a: float, b: float, c: float) -> float:
        d = a - 2 * b + c
        return 0.0 if d >= 0 else min(0.5, max(-0.5, 0.5 * float(a - c) / float(d)))

    h, w = match.shape
    dx = one(match[my, mx - 1], match[my, mx], match[my, mx + 1]) if 0 < mx < w - 1 else 0.0
    dy = one(match[my - 1, mx], match[my, mx], match[my + 1, mx]) if 0 < my < h - 1 else 0.0
    return dx, dy


def _inside(box: tuple[int, int, int, int], w: int, h: int) -> bool:
    x, y, bw, bh = box
    return bw > 10 and x > -bw / 2 and y > -bh / 2 and x + bw / 2 < w and y + bh / 2 < h

