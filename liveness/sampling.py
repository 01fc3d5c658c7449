"""What a track sends, frame by frame: one sampler for ingest and for offline analysis.

Each kind of per-track evidence is one ``Rule``: on which of the track's frames it is due (every
``every``-th, counted from its first), how much rarer once fusion has decided the track, and the
message it makes. A due frame is a *slot*, numbered from 0 per rule and track. Once a track is
decided, a rule with ``decided_every`` = k sends only every k-th slot; the slots it skips are the
ones offline replay skips too (``sends``), so what ``evaluate --model fused`` scores is what a
live camera sends. A new kind of evidence is one more ``Rule`` in ``RULES``.

The eye rule runs only where the camera turns it on (``eyes``; off by default, as the shipped
fusion policy weighs the eye model 0). Crops are cut from the track's box, so the tracker
landmarks tracks only where ``landmarks`` says: on every frame while eye windows are kept,
else never.

Ingest learns that a track is decided from fusion (``liveness.evidence.read_verdicts``), a
moment after it is; offline replay knows it from the next frame on.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from liveness.config import CameraTuning
from liveness.contract import EyeSample, FaceCrop
from liveness.eyes import EyeHistory
from liveness.face import crop_jpeg
from liveness.tracking import Track

Kind = Literal["face", "eye"]
"""What a sample carries: a face crop or an eye window (the score stream it becomes)."""

Sent = FaceCrop | EyeSample

DECIDED_SLOWDOWN = 4
"""A track fusion has decided sends a crop this many times less often: its face keeps being
checked (a verdict can change), but the face workers' time goes to the tracks still undecided."""


@dataclass
class TrackState:
    """What the sampler keeps per track: the eye history, and whether fusion has decided it."""

    eyes: EyeHistory = field(default_factory=EyeHistory)
    decided: bool = False


@dataclass(frozen=True)
class Shot:
    """One frame as the sampler sees it."""

    index: int
    capture_ts: float
    media_ts: float
    """Seconds on the source's own clock (a file's time in the video): what eye windows are timed by."""
    image: np.ndarray


@dataclass(frozen=True)
class Sample:
    """A message a rule made, and its slot."""

    kind: Kind
    slot: int
    message: Sent


class Rule(ABC):
    """One kind of per-track evidence: when it is due and what it sends."""

    kind: ClassVar[Kind]
    decided_every: ClassVar[int] = 1
    """Once the track is decided, only every this-many-th slot is sent."""
    sheddable: ClassVar[bool] = False
    """Whether ingest drops it (counted) while the workers that score it lag."""
    observes: ClassVar[bool] = False
    """Whether ``observe`` needs the track's landmarked face on every frame (the only use of landmarks)."""

    def __init__(self, sampler: "TrackSampler") -> None:
        self.sampler = sampler

    @property
    @abstractmethod
    def every(self) -> int:
        """Due on the track's 1st, (every + 1)-th, ... frame."""

    def observe(self, track: Track[TrackState], shot: Shot) -> None:
        """Called on every frame of the track, due or not (histories)."""

    @abstractmethod
    def make(self, track: Track[TrackState], shot: Shot, now: float) -> Sent | None:
        """The message of a due frame; None when there is none to send."""

    def slot(self, track_frame: int) -> int | None:
        """The slot of the track's ``track_frame``-th frame (counted from 1), None when not due."""
        return (track_frame - 1) // self.every if (track_frame - 1) % self.every == 0 else None


class EyeRule(Rule):
    """An eye sample every ``eye_every`` frames, with the track's window once it is full."""

    kind = "eye"
    observes = True

    @property
    def every(self) -> int:
        return self.sampler.camera.eye_every

    def observe(self, track: Track[TrackState], shot: Shot) -> None:
        assert track.state is not None and track.face is not None and track.fresh, "an eye rule needs this frame's landmarks"
        track.state.eyes.add(shot.media_ts, track.face.left, track.face.right)

    def make(self, track: Track[TrackState], shot: Shot, now: float) -> Sent | None:
        assert track.state is not None and track.face is not None
        eyes, face = track.state.eyes, track.face
        window = eyes.window()
        return EyeSample(self.sampler.camera_id, track.id, shot.index, shot.capture_ts, now, _box(track.box),
                         face.left, face.right, eyes.open_level, window, eyes.rate_hz if window else None,
                         self.sampler.label)


class CropRule(Rule):
    """A face crop every ``crop_every`` frames, ``DECIDED_SLOWDOWN`` times rarer once decided."""

    kind = "face"
    decided_every = DECIDED_SLOWDOWN
    sheddable = True

    @property
    def every(self) -> int:
        return self.sampler.camera.crop_every

    def make(self, track: Track[TrackState], shot: Shot, now: float) -> Sent | None:
        crop = self.sampler.camera.crop
        jpeg = crop_jpeg(shot.image, track.box, crop)
        if jpeg is None:
            return None
        return FaceCrop(self.sampler.camera_id, track.id, shot.index, shot.capture_ts, now, _box(track.box),
                        jpeg, list(crop.views), self.sampler.label)


RULES: tuple[type[Rule], ...] = (EyeRule, CropRule)
"""Every kind of evidence a track sends, in the order its messages of one frame go out."""


def sends(kind: Kind, slot: int, decided: bool) -> bool:
    """Whether a slot of ``kind`` goes out, for a track decided or not: how offline replay knows
    which of the samples it scored a live camera would have sent."""
    rule = next(r for r in RULES if r.kind == kind)
    return not decided or slot % rule.decided_every == 0


class TrackSampler:
    """Decides, per track and frame, what is sent; one per camera (or per offline clip)."""

    def __init__(self, camera: CameraTuning, camera_id: str, label: str | None = None) -> None:
        self.camera = camera
        self.camera_id = camera_id
        self.label = label
        self.rules = [rule(self) for rule in RULES if rule.kind != "eye" or camera.eyes]
        self.landmarks = any(rule.observes for rule in self.rules)
        """Whether the tracker must landmark every track on every frame (``FaceTracker.update``): only
        where a rule keeps a history of the face (the eye windows)."""

    def sample(self, track: Track[TrackState], shot: Shot, shed: bool = False) -> tuple[list[Sample], int]:
        """The track's samples of this frame, and how many were due but shed (``shed``: the
        workers lag, so sheddable rules send nothing)."""
        if track.state is None:
            track.state = TrackState()
        out: list[Sample] = []
        dropped = 0
        now = time.time()
        for rule in self.rules:
            rule.observe(track, shot)
            slot = rule.slot(track.frames)
            if slot is None or not sends(rule.kind, slot, track.state.decided):
                continue
            if shed and rule.sheddable:
                dropped += 1
                continue
            message = rule.make(track, shot, now)
            if message is not None:
                out.append(Sample(rule.kind, slot, message))
        return out, dropped


def _box(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x, y, w, h = box
    return int(x), int(y), int(w), int(h)  # numpy integers do not encode as JSON
