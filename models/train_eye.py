"""``liveness train eye``: train, validate across capture sessions and export the eye model.

Windows come from the same face pipeline and the same ``EyeHistory`` as ingest, one per face
frame. Validation trains on one capture session and scores the other (and the reverse), at
window level and per sequence (the mean window log-odds, which fusion accumulates per track).
Operating thresholds are chosen on data the scored model never saw: inside the training
session by subject-grouped folds for the figures reported, on the pooled cross-session scores
for the exported model. ``--dataset seed-csv`` reruns the original project's experiment.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from liveness import __version__
from liveness.defaults import EYE_WINDOW
from liveness.errors import LivenessError
from liveness.eyes import FEATURES, OPEN_LEVEL_FRAMES, WINDOW_RATE_HZ, EyeHistory, eye_input, window_features
from liveness.models import datasets
from liveness.models.eye_data import EyeTrack, eye_tracks
from liveness.models.eye_onnx import INPUT, OUTPUT, to_onnx
from liveness.pad_metrics import auc, det_curve, eer, error_rates

log = logging.getLogger(__name__)

MODELS: dict[str, tuple[bool, Callable[[int], Pipeline]]] = {
    "knn": (True, lambda seed: Pipeline([("knn", KNeighborsClassifier(n_neighbors=3))])),
    "logreg": (False, lambda seed: Pipeline([("scale", StandardScaler()),
                                              ("logreg", LogisticRegression(class_weight="balanced", max_iter=1000))])),
    "gbt": (False, lambda seed: Pipeline([("gbt", GradientBoostingClassifier(
        n_estimators=150, max_depth=2, learning_rate=0.05, subsample=0.8, min_samples_leaf=20, random_state=seed))])),
}
"""name -> (uses the raw 20 ratios, builder). ``knn`` is the original's: k=3 on raw ratios."""

DEFAULT_MODEL = "gbt"
FPS_CHECKS = (5.0, 15.0, 30.0)
"""Replay rates of the frame-rate check: the same frames, spaced as a 5, 15 or 30 fps camera."""

LOGIT_CLIP = 1e-3
"""Window probabilities are clipped to [c, 1 - c] before log-odds, so one window weighs at most ~7 nats."""

SEQUENCE_QUANTILE = 0.25
"""A track's eye score is this quantile of its window scores: the live evidence of its blinking
quarter. Unlike the minimum it does not fall as a track gets longer (NUAA's live sequences are
five times longer than its session-02 attacks), and unlike the mean it is not drowned by the
many windows between blinks; it beat both on cross-session sequence AUC."""

@dataclass
class Windows:
    """Model input rows of many tracks, with each row's label and track index."""

    x: np.ndarray
    y: np.ndarray
    seq: np.ndarray


def track_windows(track: EyeTrack, rate_hz: float = WINDOW_RATE_HZ) -> np.ndarray:
    """Rows ``(n, 21)`` of one track, one per frame once the window is full (ingest publishes every ``eye_every``-th)."""
    hist = EyeHistory(rate_hz=rate_hz)
    rows = []
    for ts, left, right in zip(track.ts, track.left, track.right):
        hist.add(float(ts), float(left), float(right))
        w = hist.window()
        if w is not None and hist.open_level > 0:
            rows.append(eye_input(w, hist.open_level))
    return np.array(rows, dtype=np.float32).reshape(-1, 2 * EYE_WINDOW + 1)


def build_windows(tracks: list[EyeTrack]) -> Windows:
    xs = [track_windows(t) for t in tracks]
    return Windows(np.concatenate(xs), np.concatenate([np.full(len(x), t.spoof) for x, t in zip(xs, tracks)]),
                   np.concatenate([np.full(len(x), i) for i, x in enumerate(xs)]))


def fit(name: str, seed: int, x: np.ndarray, y: np.ndarray) -> Pipeline:
    """Fit one classifier on input rows; classes weighted equally whatever their window counts."""
    raw, make = MODELS[name]
    pipe = make(seed)
    feats = x[:, : 2 * EYE_WINDOW] if raw else window_features(x)
    weight = np.where(y == 1, 0.5 / max(y.mean(), 1e-9), 0.5 / max(1 - y.mean(), 1e-9))
    last = pipe.steps[-1][0]
    pipe.fit(feats, y, **({} if name == "knn" else {f"{last}__sample_weight": weight}))
    return pipe


def spoof_scores(pipe: Pipeline, name: str, x: np.ndarray) -> np.ndarray:
    feats = x[:, : 2 * EYE_WINDOW] if MODELS[name][0] else window_features(x)
    return pipe.predict_proba(feats)[:, 1]


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(p / (1 - p))


AGGREGATES: dict[str, Callable[[np.ndarray], float]] = {
    "quantile": lambda v: float(np.quantile(v, SEQUENCE_QUANTILE)),
    "mean_logit": lambda v: float(logit(v).mean()),
}
"""Ways to turn a track's window scores into one; ``quantile`` is what the model card's threshold is for."""


def sequence_scores(scores: np.ndarray, seq: np.ndarray, agg: str = "quantile") -> tuple[np.ndarray, np.ndarray]:
    """``(sequence indices, one score per sequence)``, higher = attack."""
    ids = np.unique(seq)
    return ids, np.array([AGGREGATES[agg](scores[seq == i]) for i in ids])


def eer_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold where APCER and BPCER are closest (attack when score >= threshold)."""
    th, apcer, bpcer = det_curve(labels, scores)
    i = int(np.argmin(np.abs(apcer - bpcer) + 1e-9 * np.arange(len(th))))
    return float(th[i]) if np.isfinite(th[i]) else float(scores.max()) + 1e-6


def figures(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    apcer, bpcer = error_rates(labels, scores, threshold)
    return {"apcer": apcer, "bpcer": bpcer, "acer": (apcer + bpcer) / 2, "auc": auc(labels, scores),
            "eer": eer(labels, scores), "threshold": threshold, "n": int(len(labels))}


def inner_thresholds(name: str, seed: int, w: Windows, tracks: list[EyeTrack]) -> tuple[float, float, float]:
    """Window, sequence (quantile) and sequence (mean log-odds) thresholds from subject-grouped
    out-of-fold scores of the training data."""
    groups = np.array([tracks[i].subject or tracks[i].name for i in w.seq])
    n = min(3, len(np.unique(groups)))
    oof = np.zeros(len(w.y))
    for tr, va in GroupKFold(n_splits=n).split(w.x, w.y, groups):
        oof[va] = spoof_scores(fit(name, seed, w.x[tr], w.y[tr]), name, w.x[va])
    ids, seq_s = sequence_scores(oof, w.seq)
    seq_y = np.array([tracks[i].spoof for i in ids])
    return (eer_threshold(w.y, oof), eer_threshold(seq_y, seq_s),
            eer_threshold(seq_y, sequence_scores(oof, w.seq, "mean_logit")[1]))


def folds(tracks: list[EyeTrack]) -> list[tuple[str, list[int], list[int]]]:
    """Cross-session folds (train on one session, validate on the others); subjects, then sequences, otherwise."""
    for attr in ("session", "subject", "name"):
        keys = sorted({getattr(t, attr) for t in tracks if getattr(t, attr) is not None})
        if len(keys) >= 2 and all(getattr(t, attr) is not None for t in tracks):
            break
    if attr == "session":
        return [(f"train {attr} {k} -> validate the rest", [i for i, t in enumerate(tracks) if t.session == k],
                 [i for i, t in enumerate(tracks) if t.session != k]) for k in keys]
    groups = [getattr(t, attr) for t in tracks]
    n = min(4, len(keys))
    return [(f"{attr} fold {j}", list(tr), list(va))
            for j, (tr, va) in enumerate(GroupKFold(n_splits=n).split(groups, groups=groups))]


def _subset(tracks: list[EyeTrack], idx: list[int], fps: float | None = None) -> tuple[list[EyeTrack], Windows]:
    sub = [tracks[i].at_fps(fps) if fps else tracks[i] for i in idx]
    return sub, build_windows(sub)


@dataclass
class Validation:
    """Cross-session figures of one classifier (its part of the JSON report, ``asdict``)."""

    folds: list[dict[str, object]]
    """Per fold (train on one session, score the other): thresholds, and figures per replay rate and level."""
    pooled_window_threshold: float
    """Equal-error threshold of the window scores of every fold at 15 fps: the exported model's."""
    pooled_sequence_threshold: float
    summary: dict[str, dict[str, float]]


@dataclass
class _Pooled:
    """Labels and scores of every fold's validation at 15 fps, windows and sequences."""

    window_labels: list[np.ndarray] = field(default_factory=list)
    window_scores: list[np.ndarray] = field(default_factory=list)
    sequence_labels: list[np.ndarray] = field(default_factory=list)
    sequence_scores: list[np.ndarray] = field(default_factory=list)


def validate(name: str, seed: int, tracks: list[EyeTrack]) -> Validation:
    """Cross-session figures of one classifier, window- and sequence-level, at each replay rate."""
    fold_list: list[dict[str, object]] = []
    pooled = _Pooled()
    for title, tr_idx, va_idx in folds(tracks):
        tr_tracks, tr_w = _subset(tracks, tr_idx)
        pipe = fit(name, seed, tr_w.x, tr_w.y)
        inner = inner_thresholds(name, seed, tr_w, tr_tracks)
        w_th, s_th = inner[:2]
        fold: dict[str, object] = {"fold": title, "window_threshold": w_th, "sequence_threshold": s_th}
        for fps in FPS_CHECKS:
            va_tracks, va_w = _subset(tracks, va_idx, fps)
            s = spoof_scores(pipe, name, va_w.x)
            ids, seq_s = sequence_scores(s, va_w.seq)
            seq_y = np.array([va_tracks[i].spoof for i in ids])
            fold[f"{fps:g}fps"] = {"window": figures(va_w.y, s, w_th), "sequence": figures(seq_y, seq_s, s_th),
                                   "sequence_mean_logit": figures(seq_y, sequence_scores(s, va_w.seq, "mean_logit")[1],
                                                                  inner[2])}
            if fps == 15.0:
                pooled.window_labels.append(va_w.y)
                pooled.window_scores.append(s)
                pooled.sequence_labels.append(seq_y)
                pooled.sequence_scores.append(seq_s)
        fold_list.append(fold)
    return Validation(
        fold_list,
        eer_threshold(np.concatenate(pooled.window_labels), np.concatenate(pooled.window_scores)),
        eer_threshold(np.concatenate(pooled.sequence_labels), np.concatenate(pooled.sequence_scores)),
        _summary(fold_list))


def _summary(fold_list: list[dict]) -> dict[str, dict[str, float]]:
    """Mean over folds of ACER and AUC, per replay rate and level."""
    return {f"{fps:g}fps {lvl}": {k: float(np.mean([f[f"{fps:g}fps"][lvl][k] for f in fold_list]))
                                  for k in ("acer", "auc", "apcer", "bpcer")}
            for fps in FPS_CHECKS for lvl in ("window", "sequence", "sequence_mean_logit")}


def export(name: str, seed: int, tracks: list[EyeTrack], val: Validation, out: Path) -> dict[str, object]:
    """Fit on every track, write the ONNX model, and check it against scikit-learn."""
    w = build_windows(tracks)
    pipe = fit(name, seed, w.x, w.y)
    meta = {
        "liveness.name": "eye",
        "liveness.version": f"{__version__}+{name}",
        "liveness.model": name,
        "liveness.threshold": repr(float(val.pooled_window_threshold)),
        "liveness.input": (f"input float32 [N, {2 * EYE_WINDOW + 1}]: eye window of {EYE_WINDOW} [left, right] eye "
                           f"ratios oldest first, flattened l0,r0,l1,r1,...,l{EYE_WINDOW - 1},r{EYE_WINDOW - 1}, "
                           f"sampled at {WINDOW_RATE_HZ:g} Hz (liveness.eyes.EyeHistory), then the track's open_level"),
        "liveness.output": "spoof float32 [N]: probability that the window is an attack (higher = attack)",
        "liveness.window_rate_hz": repr(WINDOW_RATE_HZ),
        "liveness.window_size": str(EYE_WINDOW),
        "liveness.open_level_frames": str(OPEN_LEVEL_FRAMES),
        "liveness.features": ",".join(("raw20",) if MODELS[name][0] else FEATURES),
        "liveness.sequence_aggregate": f"quantile {SEQUENCE_QUANTILE:g} of the spoof scores of the track's windows",
        "liveness.sequence_quantile": repr(SEQUENCE_QUANTILE),
        "liveness.sequence_threshold": repr(float(val.pooled_sequence_threshold)),
        "liveness.trained_on": f"{len(tracks)} sequences, {len(w.y)} windows",
    }
    model = to_onnx(pipe, MODELS[name][0], meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(model.SerializeToString())
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT], {INPUT: w.x})[0]
    diff = float(np.abs(got - spoof_scores(pipe, name, w.x)).max())
    if diff > 1e-4:
        raise LivenessError(f"eye export: ONNX and scikit-learn differ by {diff:.2g}")
    return {"path": str(out), "onnx_max_abs_diff": diff, "windows": int(len(w.y)), "metadata": meta}


def run(args: argparse.Namespace) -> int:
    """Entry point of ``liveness train eye``."""
    from liveness.models import eye_audits  # the audits score with this module's figures

    root = Path(args.root)
    if args.dataset == "seed-csv":
        report: dict[str, object] = {"dataset": "seed-csv", "seed": args.seed, **eye_audits.seed_csv(root, args.seed)}
    else:
        dataset = datasets.load(args.dataset, root, "all" if args.dataset == "nuaa" else None)
        tracks = eye_tracks(dataset)
        if len({t.label for t in tracks}) < 2:
            raise LivenessError("eye training needs live and spoof sequences with faces")
        names = [args.model] if args.model else list(MODELS)
        if any(n not in MODELS for n in names):
            raise LivenessError(f"unknown eye model {args.model!r} ({', '.join(MODELS)})")
        results = {n: validate(n, args.seed, tracks) for n in names}
        chosen = args.model or DEFAULT_MODEL
        report = {"dataset": args.dataset, "seed": args.seed, "sequences": len(tracks),
                  "validation": {n: asdict(v) for n, v in results.items()}, "model": chosen}
        if args.dataset == "nuaa":
            report["frame_spacing_only_baseline"] = eye_audits.rate_baseline(tracks, eye_audits.picture_steps(dataset))
        shipped = tracks
        if args.train_session:  # a fold model, for honest cross-session fusion figures
            shipped = [t for t in tracks if t.session == args.train_session]
            if len({t.label for t in shipped}) < 2:
                raise LivenessError(f"--train-session {args.train_session}: needs live and spoof sequences")
            report["trained_on_session"] = args.train_session
        report["export"] = export(chosen, args.seed, shipped, results[chosen], Path(args.out))
    if args.json:
        print(json.dumps(report, default=float))
    else:
        _print(report)
    return 0


def _print(report: dict[str, object]) -> None:
    if report["dataset"] == "seed-csv":
        for k, v in report.items():
            print(f"{k}: {v}")
        return
    for name, res in report["validation"].items():  # type: ignore[attr-defined]  # a report of mixed JSON values
        for k, v in res["summary"].items():
            print(f"{name:7s} {k:26s} ACER {v['acer']:.3f}  AUC {v['auc']:.3f}  APCER {v['apcer']:.3f}  BPCER {v['bpcer']:.3f}")
    if "frame_spacing_only_baseline" in report:
        b = report["frame_spacing_only_baseline"]
        print(f"frame-spacing-only baseline (sequence): ACER {b['acer']:.3f} AUC {b['auc']:.3f}")  # type: ignore[index]
    print(f"exported {report['model']} to {report['export']['path']}")  # type: ignore[index]
