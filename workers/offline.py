"""The whole pipeline offline, on one clip or sequence: what ``evaluate --model fused`` and clip
jobs run.

The same code as the live path, in the same order: the face tracker and the track sampler of
ingest (``liveness.sampling``), the input rows and ONNX models of the workers, the verdict
stepper of fusion (``TrackEvidence.step``). Only the transport differs (no Redis), and inference
is batched per clip: every sample an undecided track would send is scored once, and ``replay``
steps, under a policy, through those a camera would have sent (a decided track sends fewer
crops), so one analysis serves every policy ``liveness train fusion`` tries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple

import numpy as np

from liveness.config import CameraDefaults
from liveness.contract import FaceCrop, Verdict
from liveness.errors import ModelError, PoisonMessageError
from liveness.evidence import Change, Policy, TrackEvidence
from liveness.face import FacePipeline
from liveness.pacing import FramePacer
from liveness.sampling import Kind, Sample, Shot, TrackSampler, TrackState, sends
from liveness.tracking import FaceTracker, Track
from liveness.workers.eye import sample_input
from liveness.workers.face import check_views, crop_input
from liveness.workers.runners import OnnxModel


class Event(NamedTuple):
    """One scored sample of a track."""

    ts: float
    """Seconds of the frame in the clip."""
    frame: int
    """The frame's number among the clip's processed frames."""
    kind: Kind
    score: float
    slot: int
    """The sample's slot (``liveness.sampling``): whether a decided track still sends it."""


@dataclass
class TrackResult:
    """One track's outcome: its final verdict, how long the first decision took, and its scores."""

    track: str
    frames: int
    first_ts: float
    last_ts: float
    verdict: Verdict = "undecided"
    confidence: float = 0.0
    face_evidence: float = 0.0
    eye_evidence: float = 0.0
    decision_frames: int | None = None
    decision_s: float | None = None
    events: list[Event] = field(default_factory=list)
    """Every sample an undecided track sends, scored, in capture order: enough to replay other policies."""
    decisions: list[tuple[int, Verdict]] = field(default_factory=list)
    """(frame, verdict) of each change of verdict in the last replay: what fusion would have published."""

    def face_logit_mean(self, policy: Policy) -> float | None:
        """Mean face log-odds of the crops sent under ``policy`` (uncalibrated): what a live label
        contributes to its camera's calibration."""
        return self._step(policy, "evidence", None)[0].face_logit_mean

    def replay(self, policy: Policy, rule: str = "evidence", baseline: float | None = None) -> list[Event]:
        """Decide again, as fusion would, under ``policy`` and the camera's calibration; returns the
        events a camera would have sent (and fusion stepped)."""
        ev, sent, changes = self._step(policy, rule, baseline)
        self.verdict, self.confidence, self.decision_s, self.decision_frames = "undecided", 0.0, None, None
        if changes:
            first = changes[0][0]
            self.decision_s = first.ts - self.first_ts
            self.decision_frames = first.frame - self.events[0].frame + 1
            self.verdict, self.confidence = changes[-1][1]
        self.decisions = [(e.frame, change.verdict) for e, change in changes]
        self.face_evidence, self.eye_evidence = ev.evidence(policy)
        return sent

    def _step(self, policy: Policy, rule: str, baseline: float | None
              ) -> tuple[TrackEvidence, list[Event], list[tuple[Event, Change]]]:
        """Fusion's stepper over the events a camera would have sent: the evidence, those events,
        and each change of verdict with the event that brought it."""
        ev = TrackEvidence()
        sent: list[Event] = []
        changes: list[tuple[Event, Change]] = []
        frame, decided = None, False
        for e in self.events:
            if e.frame != frame:  # the sampler sees the verdict as it stood before the frame
                frame, decided = e.frame, ev.verdict != "undecided"
            if not sends(e.kind, e.slot, decided):
                continue
            sent.append(e)
            change = ev.step(e.kind, e.score, e.ts, policy, baseline, rule, e.ts)
            if change is not None:
                changes.append((e, change))
        return ev, sent, changes


@dataclass
class _Scoring:
    """A sample waiting for its score."""

    ts: float
    frame: int
    sample: Sample
    row: np.ndarray


class OfflineAnalyzer:
    """Runs clips through tracker, sampler, models and fusion; reusable across clips (models load once)."""

    def __init__(self, face_model: OnnxModel, eye_model: OnnxModel | None, policy: Policy,
                 camera: CameraDefaults | None = None, rule: str = "evidence") -> None:
        """``eye_model`` may be None where ``camera`` sends no eye windows (``eyes``: off)."""
        self.camera = camera or CameraDefaults()
        if self.camera.eyes and eye_model is None:
            raise ModelError("offline analysis: the camera sends eye windows (eyes: true), but no eye model is given")
        self.face_model = face_model
        self.eye_model = eye_model
        self.policy = policy
        self.rule = rule
        self.pipeline = FacePipeline(self.camera.detect, self.camera.crop)
        check_views(list(self.camera.crop.views), face_model.views)

    def analyze(self, frames: Iterable[tuple[float, np.ndarray]],
                observe: Callable[[Track[TrackState], Shot], None] | None = None) -> list[TrackResult]:
        """Tracks of one clip, longest first. ``frames`` yields (seconds, BGR frame); ``observe`` sees
        every track on every processed frame (what a study of cues across frames measures)."""
        tracker = FaceTracker[TrackState](self.pipeline)
        sampler = TrackSampler(self.camera, "offline")
        pending: dict[str, list[_Scoring]] = {}
        results: dict[str, TrackResult] = {}
        pacer = FramePacer(self.camera.max_fps)
        processed = 0
        for ts, image in frames:
            if not pacer.take(ts):
                continue  # as ingest: frames above max_fps are dropped
            shot = Shot(processed, ts, ts, image)
            for track in tracker.update(image, processed, observe is not None or sampler.landmarks):
                res = results.setdefault(track.id, TrackResult(track.id, 0, ts, ts))
                res.frames += 1
                res.last_ts = ts
                if observe is not None:
                    observe(track, shot)
                samples, _ = sampler.sample(track, shot)  # never decided here: replay skips what a decided track would not send
                for sample in samples:
                    row = self._row(sample)
                    if row is not None:
                        pending.setdefault(track.id, []).append(_Scoring(ts, processed, sample, row))
            processed += 1
        for track_id, scoring in pending.items():
            self._decide(results[track_id], scoring)
        return sorted(results.values(), key=lambda r: -r.frames)

    def _row(self, sample: Sample) -> np.ndarray | None:
        """The sample's model input, as its worker prepares it; None for what the worker does not score."""
        try:
            if isinstance(sample.message, FaceCrop):
                return crop_input(sample.message, self.face_model.views, self.face_model.input_shape)
            return sample_input(sample.message)
        except PoisonMessageError:
            return None  # as the workers: a sample they dead-letter is not evidence

    def _score(self, model: OnnxModel, rows: list[np.ndarray]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(rows), 64):
            out += [float(s) for s in model.predict(np.stack(rows[i:i + 64]))]
        return out

    def _decide(self, res: TrackResult, scoring: list[_Scoring]) -> None:
        """Score the track's samples in batches, then replay them through fusion's stepper."""
        scores: dict[int, float] = {}
        for kind, model in (("face", self.face_model), ("eye", self.eye_model)):
            mine = [s for s in scoring if s.sample.kind == kind]
            if mine:
                assert model is not None, "eye windows are sampled only with an eye model (__init__)"
                scores.update(zip(map(id, mine), self._score(model, [s.row for s in mine])))
        res.events = [Event(s.ts, s.frame, s.sample.kind, scores[id(s)], s.sample.slot)
                      for s in sorted(scoring, key=lambda s: (s.ts, s.sample.kind))]
        res.replay(self.policy, self.rule)
