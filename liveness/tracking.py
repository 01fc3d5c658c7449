"""Per-camera face tracking: detect every N frames, follow faces with landmarks in between.

Shared by ingest and offline evaluation, so a track means the same thing in both. Landmarks
cost most of a processed frame (about 5 ms a face): a track is landmarked only on the frames its
user says need them (``update``'s ``needs``: ingest's sampler asks for the frames that feed a
crop or an eye window); on the others it keeps its last face and the box to look in next.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

import numpy as np

from liveness.face import Face, FacePipeline, face_box, iou

MIN_IOU = 0.3
"""Overlap with a detection below which a track counts as lost."""

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
    face: Face
    first_frame: int
    box: tuple[int, int, int, int]
    """Where the face is looked for next: the box of its last landmarks, or of the detection it
    last matched when that frame needed no landmarks."""
    frames: int = 1
    misses: int = 0
    state: S | None = None
    """Set by the tracker's user on the track's first frame."""
    fresh: bool = True
    """Whether ``face`` was landmarked on this frame (else it is the last frame's that was)."""


class FaceTracker(Generic[S]):
    """Keeps the faces of one camera; ``update()`` returns the live tracks of a frame."""

    def __init__(self, pipeline: FacePipeline, new_id: Callable[[], str] | None = None) -> None:
        self.pipeline = pipeline
        counter = itertools.count(1)
        self._new_id = new_id or (lambda: f"t{next(counter)}")
        self.tracks: list[Track[S]] = []
        self._last_detect = -(10**9)
        self.ended: list[Track[S]] = []
        self._needs: Callable[[Track[S]], bool] = lambda _: True

    def update(self, frame: np.ndarray, index: int,
               needs: Callable[[Track[S]], bool] | None = None) -> list[Track[S]]:
        """Advance to frame ``index``; ended tracks are left in ``self.ended`` for the caller.

        ``needs(track)`` (track's ``frames`` already counting this frame): whether its face must be
        landmarked now; None: on every frame. A new track is always landmarked."""
        self._needs = needs or (lambda _: True)
        self.ended = []
        h, w = frame.shape[:2]
        every = self.pipeline.detect_settings.every_n_frames
        # an empty scene is searched twice as often, not on every frame: detection is the
        # costliest step, and a camera facing an empty corridor must stay cheap
        detect = index - self._last_detect >= (max(1, every // 2) if not self.tracks else every)
        followed: list[tuple[Track[S], tuple[int, int, int, int]]] = []
        for track in self.tracks:
            if not _inside(track.box, w, h):
                self.ended.append(track)
                continue
            track.frames += 1
            track.fresh = False
            followed.append((track, track.box))
        if detect:
            self._last_detect = index
            self.tracks = self._match(frame, followed, index)
        else:
            # the frame before a detection round is landmarked whatever ``needs`` says: the round
            # matches tracks by their last box, and one a few frames old loses a moving face
            before_round = index + 1 - self._last_detect >= every
            for track, box in followed:
                self._look(track, frame, box, before_round)
            self.tracks = [track for track, _ in followed]
        return self.tracks

    def _match(self, frame: np.ndarray, tracks: list[tuple[Track[S], tuple[int, int, int, int]]],
               index: int) -> list[Track[S]]:
        """Pair tracks with this frame's detections by their last box; landmarks once per face.

        A matched track is landmarked in the detector's box (re-anchored: no drift), a missed one
        in the box its last landmarks give, a new face in its detection box. A track starts only
        on a detection of ``start_score`` or more, so a track is a face; one it keeps may score
        less (a turned head), and a track without a matching detection ends after ``MAX_MISSES``.
        """
        found = self.pipeline.detections(frame)
        unmatched = [box for box, _ in found]
        kept: list[Track[S]] = []
        missed: list[tuple[Track[S], tuple[int, int, int, int]]] = []
        for track, last in sorted(tracks, key=lambda tb: -tb[0].frames):
            best = max(unmatched, key=lambda b: iou(b, last), default=None)
            if best is not None and iou(best, last) >= MIN_IOU:
                unmatched.remove(best)
                track.box = best
                self._look(track, frame, best)
                track.misses = 0
                kept.append(track)
            else:
                missed.append((track, last))
        for track, last in missed:
            if track.misses < MAX_MISSES and not unmatched:
                track.misses += 1
                self._look(track, frame, last)
                kept.append(track)
            else:
                self.ended.append(track)
        room = self.pipeline.detect_settings.max_faces - len(kept)
        start = self.pipeline.detect_settings.start_score
        confident = [box for box, score in found if score >= start and box in unmatched]
        for box in confident[: max(room, 0)]:
            face = self.pipeline.face(frame, box)
            kept.append(Track(self._new_id(), face, index, face_box(face.landmarks)))
        return kept

    def _look(self, track: Track[S], frame: np.ndarray, box: tuple[int, int, int, int], force: bool = False) -> None:
        """Landmark the track's face in ``box`` if this frame needs it (or ``force``)."""
        if force or self._needs(track):
            track.face = self.pipeline.face(frame, box)
            track.box = face_box(track.face.landmarks)
            track.fresh = True


def _inside(box: tuple[int, int, int, int], w: int, h: int) -> bool:
    x, y, bw, bh = box
    return bw > 10 and x > -bw / 2 and y > -bh / 2 and x + bw / 2 < w and y + bh / 2 < h

