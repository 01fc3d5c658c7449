"""``liveness evaluate --model fused``: one decision per sequence or video, by the live code path.

Each sequence runs through ``liveness.workers.offline.OfflineAnalyzer`` (ingest's tracker and eye
windows, the ONNX models, fusion's evidence and rule); the longest track's verdict is the
sequence's decision, and "undecided" counts as not accepted. APCER/BPCER/ACER come from the
verdicts; AUC and EER from the track's final evidence, as a ranking. The policy and the rule are
the config's (``--config``: ``liveness.evidence.load_policy`` and ``fusion.rule``), as in live
fusion and clip jobs.

``--calibrate subjects`` measures what a camera calibrated by its operator does: each
capture session is a camera; its subjects are split in two halves (every other subject in
sorted order), the live sequences of one half calibrate it (``liveness.evidence.live_baseline``)
and the other half is reported, then the reverse, so every sequence is reported once, by a
calibration that never saw its subject.
"""

from __future__ import annotations

import argparse
import math
import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from liveness.config import CameraDefaults, load_settings
from liveness.defaults import artifact_path, eye_model_path
from liveness.errors import LivenessError
from liveness.evidence import Policy, live_baseline, load_policy
from liveness.eyes import INPUT_SIZE
from liveness.models.datasets import Sequence, load
from liveness.models.eye_data import sequence_figures
from liveness.pad_metrics import pad_report
from liveness.workers.offline import OfflineAnalyzer, TrackResult
from liveness.workers.runners import FACE_INPUT_SHAPE, OnnxModel


@dataclass
class SequenceResult:
    """A sequence and its longest track (None when no face was ever tracked)."""

    name: str
    label: str
    session: str | None
    unit: str
    track: TrackResult | None
    subject: str | None = None


_analyzer: OfflineAnalyzer | None = None


def _init(face_path: str, eye_path: str | None, policy: dict[str, Any], rule: str, camera: dict[str, Any]) -> None:
    global _analyzer
    _analyzer = OfflineAnalyzer(OnnxModel(face_path, input_shape=FACE_INPUT_SHAPE),
                                OnnxModel(eye_path, input_shape=(INPUT_SIZE,)) if eye_path else None,
                                Policy(**policy), CameraDefaults.model_validate(camera), rule)


def _analyze(seq: Sequence) -> SequenceResult:
    assert _analyzer is not None
    tracks = _analyzer.analyze(seq.read())
    return SequenceResult(seq.name, seq.label, seq.session, "video" if seq.video else "sequence",
                          tracks[0] if tracks else None, seq.subject)


def analyze(sequences: list[Sequence], face_path: str, eye_path: str | None, policy: Policy,
            rule: str = "evidence", workers: int = 1, camera: CameraDefaults | None = None) -> list[SequenceResult]:
    """Every sequence through the offline pipeline, in parallel processes when ``workers`` > 1, as
    ``camera`` samples it (default: the eye path on, for what studies the eye model); ``eye_path``
    may be None where ``camera`` sends no eye windows."""
    init = (face_path, eye_path, policy.model_dump(), rule, (camera or CameraDefaults(eyes=True)).model_dump())
    if workers <= 1:
        _init(*init)
        return [_analyze(s) for s in tqdm(sequences, desc="sequences", unit="seq")]
    with ProcessPoolExecutor(workers, initializer=_init, initargs=init) as pool:
        return list(tqdm(pool.map(_analyze, sequences), total=len(sequences), desc="sequences", unit="seq"))


def subject_half_baselines(results: list[SequenceResult], policy: Policy) -> list[float | None]:
    """Each result's camera calibration from the live sequences of the other half of its camera's subjects."""
    if any(r.subject is None for r in results):
        raise LivenessError("--calibrate subjects needs the subject of every sequence (NUAA, or folders "
                            "entries named SUBJECT__...)")
    baselines: list[float | None] = [None] * len(results)
    for session in {r.session for r in results}:
        mine = [i for i, r in enumerate(results) if r.session == session]
        subjects = sorted({results[i].subject for i in mine})  # type: ignore[type-var]
        halves = [set(subjects[0::2]), set(subjects[1::2])]
        for half, other in (halves, halves[::-1]):
            lives = [results[i].track.face_logit_mean(policy) for i in mine  # type: ignore[union-attr]
                     if results[i].subject in other and results[i].label == "live" and results[i].track]
            baseline = live_baseline([m for m in lives if m is not None], policy)
            for i in mine:
                if results[i].subject in half:
                    baselines[i] = baseline
    return baselines


def report(results: list[SequenceResult], policy: Policy, rule: str = "evidence",
           baselines: list[float | None] | None = None) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """ISO/IEC 30107-3 figures of the verdicts under ``policy`` (tracks are replayed, not re-run), each
    sequence under its camera's calibration ``baselines[i]`` (None: uncalibrated)."""
    labels = np.array([1 if r.label == "spoof" else 0 for r in results])
    accepted = np.zeros(len(results), bool)
    evidence = np.ones(len(results))
    undecided = 0
    ttd_s: list[float] = []
    ttd_frames: list[int] = []
    ttd_live_s: list[float] = []
    for i, r in enumerate(results):
        if r.track is None:
            undecided += 1
            continue
        r.track.replay(policy, rule, baselines[i] if baselines else None)
        accepted[i] = r.track.verdict == "live"
        undecided += r.track.verdict == "undecided"
        total = r.track.face_evidence + r.track.eye_evidence
        evidence[i] = 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, total))))
        if r.track.decision_s is not None:
            ttd_s.append(r.track.decision_s)
            ttd_frames.append(int(r.track.decision_frames or 0))
            if r.label == "live" and r.track.verdict == "live":
                ttd_live_s.append(r.track.decision_s)
    verdict_scores = np.where(accepted, 0.0, 1.0)
    out: dict[str, Any] = pad_report(labels, verdict_scores, 0.5).to_dict()
    ranking = pad_report(labels, evidence, 0.5)
    out.update({"auc": ranking.auc, "eer": ranking.eer, "bpcer_at_apcer_1": ranking.bpcer_at_apcer_1,
                "bpcer_at_apcer_10": ranking.bpcer_at_apcer_10})
    out.update({
        "model": "fused", "rule": rule, "unit": results[0].unit if results else "sequence",
        "no_face": sum(r.track is None for r in results), "undecided": undecided,
        "no_face_live": sum(r.track is None and r.label == "live" for r in results),
        "no_face_spoof": sum(r.track is None and r.label == "spoof" for r in results),
        "time_to_decision_median_frames": statistics.median(ttd_frames) if ttd_frames else None,
        "time_to_decision_median_s": round(statistics.median(ttd_s), 3) if ttd_s else None,
        "time_to_decision_live_median_s": round(statistics.median(ttd_live_s), 3) if ttd_live_s else None,
        "errors": [r.name for r, a, y in zip(results, accepted, labels) if a == bool(y)],
    })
    return out, labels, evidence


def evaluate_fused(args: argparse.Namespace) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    dataset = load(args.dataset, args.root, args.split)
    if not dataset.sequences:
        raise LivenessError(f"{args.root}: no sequences to evaluate")
    settings = load_settings(args.config)
    fusion = settings.fusion
    policy = load_policy(fusion)
    face = str(args.face_model or artifact_path("face.onnx"))
    # as a camera of the config samples (ingest.eyes: eye windows, scored by the opt-in eye model, or none)
    eye = str(eye_model_path(args.eye_model or settings.eye_worker.model)) if settings.ingest.eyes else None
    results = analyze(dataset.sequences, face, eye, policy, fusion.rule, args.workers, settings.ingest)
    baselines = subject_half_baselines(results, policy) if args.calibrate == "subjects" else None
    out, labels, scores = report(results, policy, fusion.rule, baselines)
    out.update({"dataset": args.dataset, "split": args.split, "skipped": dataset.skipped, "threshold": 0.5,
                "calibration": args.calibrate,
                "calibrated": sum(b is not None for b in baselines) if baselines else 0})
    return out, labels, scores


def evaluate_eye(args: argparse.Namespace) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Per-window report of the eye model, on the windows ingest would publish (longest track), and
    ``sequence_*`` figures with one decision per sequence."""
    dataset = load(args.dataset, args.root, args.split)
    face = str(args.face_model or artifact_path("face.onnx"))
    eye_path = str(eye_model_path(args.eye_model))
    eye = OnnxModel(eye_path, input_shape=(INPUT_SIZE,))
    results = analyze(dataset.sequences, face, eye_path, Policy(), workers=args.workers)  # scores only
    labels, scores = [], []
    for r in results:
        for e in (r.track.events if r.track else []):
            if e.kind == "eye":
                labels.append(1 if r.label == "spoof" else 0)
                scores.append(e.score)
    if not scores:
        raise LivenessError(f"{args.root}: no eye windows (no face tracked for 1 s anywhere)")
    y, s = np.array(labels), np.array(scores)
    out: dict[str, Any] = {"model": "eye", "name": eye.name, "version": eye.version, "dataset": args.dataset,
                           "split": args.split, "unit": "window"}
    out.update(pad_report(y, s, eye.threshold).to_dict())
    out["no_face"] = sum(r.track is None for r in results)
    out["no_face_live"] = sum(r.track is None and r.label == "live" for r in results)
    out["no_face_spoof"] = sum(r.track is None and r.label == "spoof" for r in results)
    windows = [np.array([e.score for e in (r.track.events if r.track else []) if e.kind == "eye"])
               for r in results]
    out.update(sequence_figures([int(r.label == "spoof") for r in results], windows, eye.metadata, eye.threshold))
    return out, y, s
