"""The whole pipeline offline, on one clip or sequence: what ``evaluate --model fused`` and clip
jobs run.

The same code as the live path, in the same order: the face tracker and eye windows of
ingest, the ONNX models of the workers, the evidence and decision rule of fusion. Only the
transport differs (no Redis), and inference is batched per clip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from liveness.config import CameraDefaults
from liveness.contract import Verdict
from liveness.errors import PoisonMessageError
from liveness.evidence import Policy, TrackEvidence
from liveness.eyes import EyeHistory, eye_input
from liveness.face import FacePipeline, crop_jpeg
from liveness.pacing import FramePacer, sends
from liveness.tracking import FaceTracker
from liveness.workers.face import check_views, decode_crop
from liveness.workers.runners import OnnxModel


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
    events: list[tuple[float, int, str, float]] = field(default_factory=list)
    """(seconds, frame, "face" or "eye", score) in capture order: enough to replay other policies."""

    @property
    def face_logit_mean(self) -> float | None:
        """Mean face log-odds of the track: what a live label contributes to its camera's calibration."""
        ev = TrackEvidence()
        for ts, _, kind, score in self.events:
            if kind == "face":
                ev.add("face", score, ts, Policy())
        return ev.face_logit_mean

    def replay(self, policy: Policy, rule: str = "evidence", baseline: float | None = None) -> None:
        """Decide again from the stored scores under ``policy`` and the camera's calibration (as fusion would)."""
        ev = TrackEvidence()
        self.verdict, self.confidence, self.decision_s, self.decision_frames = "undecided", 0.0, None, None
        first_frame = self.events[0][1] if self.events else 0
        for ts, frame, kind, score in self.events:
            ev.add(kind, score, ts, policy, baseline)  # type: ignore[arg-type]  # events are face or eye
            verdict, confidence = ev.decide(policy, rule)
            if verdict != "undecided":
                if self.decision_s is None:
                    self.decision_s = ts - self.first_ts
                    self.decision_frames = frame - first_frame + 1
                self.verdict, self.confidence = verdict, confidence
        self.face_evidence, self.eye_evidence = ev.evidence(policy)


@dataclass
class _Event:
    ts: float
    frame: int
    kind: str
    row: np.ndarray


class OfflineAnalyzer:
    """Runs clips through tracker, models and fusion; reusable across clips (models load once)."""

    def __init__(self, face_model: OnnxModel, eye_model: OnnxModel, policy: Policy,
                 camera: CameraDefaults | None = None, rule: str = "evidence") -> None:
        self.face_model = face_model
        self.eye_model = eye_model
        self.policy = policy
        self.camera = camera or CameraDefaults()
        self.rule = rule
        self.pipeline = FacePipeline(self.camera.detect, self.camera.crop)

    def analyze(self, frames: Iterable[tuple[float, np.ndarray]]) -> list[TrackResult]:
        """Tracks of one clip, longest first. ``frames`` yields (seconds, BGR frame)."""
        tracker = FaceTracker[None](self.pipeline)
        histories: dict[str, EyeHistory] = {}
        events: dict[str, list[_Event]] = {}
        results: dict[str, TrackResult] = {}
        pacer = FramePacer(self.camera.max_fps)
        processed = 0
        shape, views = self.face_model.input_shape, list(self.camera.crop.views)
        for ts, image in frames:
            if not pacer.take(ts):
                continue  # as ingest: frames above max_fps are dropped
            for track in tracker.update(image, processed):
                res = results.setdefault(track.id, TrackResult(track.id, 0, ts, ts))
                res.frames += 1
                res.last_ts = ts
                hist = histories.setdefault(track.id, EyeHistory())
                hist.add(ts, track.face.left, track.face.right)
                ev = events.setdefault(track.id, [])
                window = hist.window() if sends(res.frames, self.camera.eye_every) else None
                if window is not None:
                    try:
                        ev.append(_Event(ts, processed, "eye", eye_input(window, hist.open_level)))
                    except PoisonMessageError:
                        pass  # as the eye worker: an unscorable window is not evidence
                if sends(res.frames, self.camera.crop_every):
                    jpeg = crop_jpeg(image, track.face.landmarks, self.camera.crop)
                    if jpeg is not None:  # the workers see the crop after JPEG, so offline does too
                        check_views(views, self.face_model.views)
                        ev.append(_Event(ts, processed, "face", decode_crop(jpeg, shape, len(views))))
            processed += 1
        for track_id, ev in events.items():
            self._decide(results[track_id], ev)
        return sorted(results.values(), key=lambda r: -r.frames)

    def _score(self, model: OnnxModel, rows: list[np.ndarray]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(rows), 64):
            out += [float(s) for s in model.predict(np.stack(rows[i:i + 64]))]
        return out

    def _decide(self, res: TrackResult, events: list[_Event]) -> None:
        """Score the track's crops and windows in batches, then replay them through fusion's rule."""
        faces = [e for e in events if e.kind == "face"]
        eyes = [e for e in events if e.kind == "eye"]
        scores = dict(zip(map(id, faces), self._score(self.face_model, [e.row for e in faces]) if faces else []))
        scores.update(zip(map(id, eyes), self._score(self.eye_model, [e.row for e in eyes]) if eyes else []))
        res.events = [(e.ts, e.frame, e.kind, scores[id(e)]) for e in sorted(events, key=lambda e: (e.ts, e.kind))]
        res.replay(self.policy, self.rule)
