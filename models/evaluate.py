"""``liveness evaluate``: the ISO/IEC 30107-3 report of a model on a labelled dataset.

Attacks are the positive class. Models run through onnxruntime (``liveness.workers.runners``), as
in production, never through torch. Each model kind has one evaluation function in
``EVALUATORS``; the eye and fused evaluations are added there by their owners.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from liveness.config import CropSettings
from liveness.defaults import artifact_path
from liveness.errors import LivenessError
from liveness.models.datasets import Dataset, load
from liveness.models.face_data import FaceCrops, extract
from liveness.pad_metrics import det_curve, pad_report
from liveness.workers.runners import OnnxModel

log = logging.getLogger(__name__)

Evaluator = Callable[[argparse.Namespace], tuple[dict[str, Any], np.ndarray, np.ndarray]]
"""args -> (report, labels, scores); labels and scores feed the DET plot."""

MIN_SEQUENCES = 20
"""Sequences (people, videos) a class below which a rate is a handful of cases: evaluate warns."""


def _extract_part(dataset: Dataset) -> FaceCrops:
    return extract(dataset, CropSettings())


def face_crops_parallel(dataset: Dataset, workers: int) -> FaceCrops:
    """Crops of every frame, the sequences spread over ``workers`` processes (the models run single-threaded)."""
    if workers <= 1 or len(dataset.sequences) < 2:
        return extract(dataset, CropSettings())
    parts = [Dataset(dataset.sequences[i::workers]) for i in range(workers)]
    parts = [p for p in parts if p.sequences]
    with ProcessPoolExecutor(len(parts)) as pool:
        results = list(pool.map(_extract_part, parts))
    offsets = np.cumsum([0] + [len(p.sequences) for p in parts])
    return FaceCrops(
        crops=np.concatenate([r.crops for r in results]),
        has_face=np.concatenate([r.has_face for r in results]),
        boxes=np.concatenate([r.boxes for r in results]),
        labels=np.concatenate([r.labels for r in results]),
        sequence=np.concatenate([r.sequence + off for r, off in zip(results, offsets)]),
        names=[n for r in results for n in r.names],
        sessions=np.concatenate([r.sessions for r in results]),
        subjects=np.concatenate([r.subjects for r in results]),
        paths=[p for r in results for p in r.paths],
    )


def score_faces(model: OnnxModel, data: FaceCrops, batch: int = 64) -> np.ndarray:
    """Spoof score of every frame; a frame with no face is rejected: score 1.0."""
    scores = np.ones(len(data.labels), np.float32)
    idx = np.flatnonzero(data.has_face)
    for i in range(0, len(idx), batch):
        part = idx[i:i + batch]
        scores[part] = model.predict(data.crops[part])
    return scores


def no_face_counts(has_face: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """Frames where no face was found, by label: each one is a live person rejected, or an attack not accepted."""
    return {"no_face": int((~has_face).sum()), "no_face_live": int((~has_face & (labels == 0)).sum()),
            "no_face_spoof": int((~has_face & (labels == 1)).sum())}


def _source_row(data: FaceCrops, scores: np.ndarray, mask: np.ndarray, threshold: float) -> dict[str, Any]:
    rep = pad_report(data.labels[mask], scores[mask], threshold).to_dict()
    return {**{k: rep[k] for k in ("n_live", "n_spoof", "apcer", "bpcer", "acer")},
            **no_face_counts(data.has_face[mask], data.labels[mask])}


def evaluate_face(args: argparse.Namespace) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Per-frame report of the face model through the same face pipeline as ingest."""
    model = OnnxModel(args.face_model or artifact_path("face.onnx"), threads=1)
    dataset = load(args.dataset, args.root, args.split)
    data = face_crops_parallel(dataset, max(1, args.workers))
    if not len(data.labels):
        raise LivenessError(f"{args.root}: no frames to evaluate")
    scores = score_faces(model, data)
    report: dict[str, Any] = {"model": "face", "name": model.name, "version": model.version,
                              "dataset": args.dataset, "split": args.split, "unit": "frame"}
    report.update(pad_report(data.labels, scores, model.threshold).to_dict())
    report.update(no_face_counts(data.has_face, data.labels))
    report["skipped"] = dataset.skipped
    if len(set(data.sessions.tolist()) - {""}) > 1:
        report["per_source"] = {(f"session-{s}" if s.isdigit() else s): _source_row(data, scores, data.sessions == s,
                                                                                  model.threshold)
                                for s in sorted(set(data.sessions.tolist()) - {""})}
    seq_ids = np.unique(data.sequence)
    seq_scores = np.array([statistics.fmean(scores[data.sequence == s].tolist()) for s in seq_ids])
    seq_labels = np.array([data.labels[data.sequence == s][0] for s in seq_ids])
    seq = pad_report(seq_labels, seq_scores, model.threshold).to_dict()
    report["per_sequence"] = {k: seq[k] for k in ("n_live", "n_spoof", "apcer", "bpcer", "acer", "auc")}
    return report, data.labels, scores


def _fused(args: argparse.Namespace) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    from liveness.models.evaluate_fused import evaluate_fused

    return evaluate_fused(args)


def _eye(args: argparse.Namespace) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    from liveness.models.evaluate_fused import evaluate_eye

    return evaluate_eye(args)


EVALUATORS: dict[str, Evaluator] = {
    "face": evaluate_face,
    "eye": _eye,
    "fused": _fused,
}
"""Model kind -> its evaluation."""


def plot_det(labels: np.ndarray, scores: np.ndarray, threshold: float, path: Path, title: str) -> None:
    """DET curve (BPCER against APCER, normal-deviate axes) as a PNG, drawn with OpenCV."""
    from statistics import NormalDist

    _, apcer, bpcer = det_curve(labels, scores)
    ticks = [0.001, 0.01, 0.05, 0.2, 0.5, 0.8]
    lo, hi = NormalDist().inv_cdf(ticks[0]), NormalDist().inv_cdf(ticks[-1])
    size, margin = 520, 60
    img = np.full((size, size, 3), 255, np.uint8)

    def xy(a: float, b: float) -> tuple[int, int]:
        def t(v: float) -> float:
            z = NormalDist().inv_cdf(min(max(v, ticks[0]), ticks[-1]))
            return (z - lo) / (hi - lo)

        return int(margin + t(a) * (size - 2 * margin)), int(size - margin - t(b) * (size - 2 * margin))

    for v in ticks:
        cv2.line(img, xy(v, ticks[0]), xy(v, ticks[-1]), (220, 220, 220), 1)
        cv2.line(img, xy(ticks[0], v), xy(ticks[-1], v), (220, 220, 220), 1)
        cv2.putText(img, f"{v:g}", (xy(v, ticks[0])[0] - 12, size - margin + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 0, 1)
        cv2.putText(img, f"{v:g}", (8, xy(ticks[0], v)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 0, 1)
    pts = np.array([xy(a, b) for a, b in zip(apcer, bpcer)], np.int32)
    cv2.polylines(img, [pts], False, (200, 60, 0), 2)
    a, b = pad_report(labels, scores, threshold).apcer, pad_report(labels, scores, threshold).bpcer
    cv2.circle(img, xy(a, b), 5, (0, 0, 220), -1)
    cv2.putText(img, "APCER", (size // 2 - 20, size - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 0, 1)
    cv2.putText(img, "BPCER", (5, margin - 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 0, 1)
    cv2.putText(img, title, (margin, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 0, 1)
    if not cv2.imwrite(str(path), img):
        raise LivenessError(f"{path}: cannot write the plot")


def _human(report: dict[str, Any]) -> str:
    rows = []
    for key, value in report.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif isinstance(value, dict):
            value = json.dumps(value)
        rows.append(f"{key:>18}  {value}")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    report, labels, scores = EVALUATORS[args.model](args)
    counts = {label: sum(s.label == label for s in load(args.dataset, args.root, args.split).sequences)
              for label in ("live", "spoof")}
    report["warnings"] = [f"the figures rest on {n} {label} sequence(s), fewer than {MIN_SEQUENCES}: a few people "
                          f"or videos, not a rate" for label, n in counts.items() if n < MIN_SEQUENCES]
    for warning in report["warnings"]:
        log.warning("evaluate: %s", warning)
    if args.plot and (labels == 0).any() and (labels == 1).any():
        plot_det(labels, scores, float(report["threshold"]), Path(args.plot),
                 f"{report.get('name', args.model)} on {args.dataset} {args.split or ''}")
    print(json.dumps(report) if args.json else _human(report))
    return 0
