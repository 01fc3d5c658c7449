"""Cues across a track, measured on sources left out: ``python -m liveness.models.cue_study``.

Which signals seen over a track's frames, beyond one frame's texture, separate live people from
screen replays and prints on a source a choice never saw? Each sequence runs through the offline
pipeline (``OfflineAnalyzer``: ingest's tracker and sampler, the ONNX models), and per processed
frame of its longest track this measures:

- ``motion_*``: the face against its surroundings. Lucas-Kanade flow of corners inside the face box
  and in a ring around it (the box widened 3x, at 96 pixels a face width). A face on a hand-held
  screen or print moves rigidly with the screen and the background inside it; a live head moves
  against a still room. ``motion_residual``: the face's points off the ring's similarity fit;
  ``motion_ring_residual``: the ring's points off the face's fit; ``motion_gap``: the face's and
  the ring's median motion apart. All in face widths per frame, median over the track.
- ``eye_q25``, ``eye_min``: the eye model's window scores (a blink seen says live); ``blink_depth``:
  the deepest dip of the mean eye ratio below its median.
- ``edges``: long straight edges (a screen's bezel, a print's border) in the wide view around the
  face, median over every 5th frame.
- ``flicker_face``, ``flicker_ratio``: the face's mean light from frame to frame (second
  differences), alone and divided by the ring's (a screen's refresh beating against the camera's).
- ``face``: the face model's mean log-odds, for reference and to combine with; ``face_q75``: their
  0.75 quantile, ``face_max3``: their highest mean over 3 crops in a row (a track's most
  attack-like moment: a replay may look live on most frames and betray itself on a few),
  ``face_spread``: their standard deviation (a screen's texture changes as it moves).

Each cue is judged leaving one source out: its direction and threshold are chosen on the other
sources (lowest half total error over their sequences), and the left-out source's sequences are
decided with them; the pooled left-out scores give the AUC. ``face+<cue>``: a logistic regression
on the face's log-odds and the cue, fitted on the other sources with the classes weighed equally,
against ``face (regression)``, the same on the face's log-odds alone.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegression

from liveness.config import CameraDefaults
from liveness.defaults import artifact_path, eye_model_path
from liveness.evidence import Policy
from liveness.eyes import INPUT_SIZE
from liveness.models.datasets import Sequence, folders, nuaa
from liveness.pad_metrics import pad_report
from liveness.sampling import Shot, TrackState
from liveness.tracking import Track
from liveness.workers.offline import OfflineAnalyzer
from liveness.workers.runners import FACE_INPUT_SHAPE, OnnxModel

SCALE = 96.0
"""Pixels per face width that the wide view is resized to (cost and scale do not depend on the camera)."""

CUES = ("face", "face_q75", "face_max3", "face_spread", "eye_q25", "eye_min", "blink_depth", "motion_residual", "motion_ring_residual", "motion_gap",
        "edges", "flicker_face", "flicker_ratio")

Box = tuple[int, int, int, int]


def _wide(grey: np.ndarray, box: Box, k: float) -> tuple[np.ndarray, float, float, float]:
    """The view ``k`` times the box around it, resized to ``SCALE`` pixels a face width, and the
    face box's corner in it."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(max(0, cx - k * w / 2)), int(max(0, cy - k * h / 2))
    x1, y1 = int(min(grey.shape[1], cx + k * w / 2)), int(min(grey.shape[0], cy + k * h / 2))
    s = SCALE / max(w, 1)
    return cv2.resize(grey[y0:y1, x0:x1], None, fx=s, fy=s, interpolation=cv2.INTER_AREA), (x - x0) * s, (y - y0) * s, s


def motion(prev: np.ndarray, cur: np.ndarray, box: Box) -> tuple[float, float, float] | None:
    """(face off the ring's fit, ring off the face's fit, |face motion - ring motion|) in face widths,
    between two grey frames, for the face at ``box`` in ``prev``; None when too few points track."""
    a, fx, fy, s = _wide(prev, box, 3.0)
    b = _wide(cur, box, 3.0)[0]
    if a.shape != b.shape or min(a.shape) < 32:
        return None
    pts = cv2.goodFeaturesToTrack(a, 300, 0.01, 4)
    if pts is None:
        return None
    p = pts.reshape(-1, 2)
    fh = box[3] * s
    inside = (p[:, 0] > fx + 0.15 * SCALE) & (p[:, 0] < fx + 0.85 * SCALE) & (p[:, 1] > fy + 0.1 * fh) & (p[:, 1] < fy + 0.9 * fh)
    ring = ((p[:, 0] < fx - 0.25 * SCALE) | (p[:, 0] > fx + 1.25 * SCALE)
            | (p[:, 1] < fy - 0.25 * fh) | (p[:, 1] > fy + 1.25 * fh))
    q, status, _ = cv2.calcOpticalFlowPyrLK(a, b, p.reshape(-1, 1, 2).astype(np.float32), None, winSize=(15, 15), maxLevel=2)
    q = q.reshape(-1, 2)
    ok = status.ravel() == 1
    face, around = inside & ok, ring & ok
    if face.sum() < 5 or around.sum() < 6:
        return None
    fit_ring = cv2.estimateAffinePartial2D(p[around], q[around], method=cv2.RANSAC, ransacReprojThreshold=1.0)[0]
    fit_face = cv2.estimateAffinePartial2D(p[face], q[face], method=cv2.RANSAC, ransacReprojThreshold=1.0)[0]
    if fit_ring is None or fit_face is None:
        return None

    def off(fit: np.ndarray, m: np.ndarray) -> float:
        return float(np.median(np.linalg.norm(q[m] - (p[m] @ fit[:, :2].T + fit[:, 2]), axis=1)) / SCALE)

    gap = abs(np.median(np.linalg.norm(q[face] - p[face], axis=1)) - np.median(np.linalg.norm(q[around] - p[around], axis=1)))
    return off(fit_ring, face), off(fit_face, around), float(gap) / SCALE


def edges(grey: np.ndarray, box: Box) -> int:
    """Straight edges at least 0.7 face widths long in the view 3.5 times the box, outside the face."""
    view, fx, fy, s = _wide(grey, box, 3.5)
    e = cv2.Canny(view, 60, 160)
    e[max(0, int(fy) - 10):int(fy + box[3] * s) + 10, max(0, int(fx) - 10):int(fx + SCALE) + 10] = 0
    lines = cv2.HoughLinesP(e, 1, np.pi / 180, 40, minLineLength=int(0.7 * SCALE), maxLineGap=4)
    return 0 if lines is None else len(lines)


@dataclass
class TrackCues:
    """What one track's frames showed."""

    motion: list[tuple[float, float, float]] = field(default_factory=list)
    edges: list[int] = field(default_factory=list)
    light: list[tuple[float, float]] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    prev: np.ndarray | None = None
    box: Box | None = None


class CueObserver:
    """Called by the offline pipeline on every processed frame of every track."""

    def __init__(self) -> None:
        self.tracks: dict[str, TrackCues] = {}

    def __call__(self, track: Track[TrackState], shot: Shot) -> None:
        c = self.tracks.setdefault(track.id, TrackCues())
        grey = cv2.cvtColor(shot.image, cv2.COLOR_BGR2GRAY)
        box: Box = track.box
        if c.prev is not None and c.box is not None:
            m = motion(c.prev, grey, c.box)
            if m is not None:
                c.motion.append(m)
        if len(c.ratios) % 5 == 0:
            c.edges.append(edges(grey, box))
        x, y, w, h = box
        face = grey[max(0, y):y + h, max(0, x):x + w]
        wide = _wide(grey, box, 3.0)[0]
        if face.size and wide.size:
            c.light.append((float(face.mean()), float(wide.mean())))
        assert track.face is not None, "observed tracks are landmarked on every frame"
        c.ratios.append((track.face.left + track.face.right) / 2)
        c.prev, c.box = grey, box


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def features(faces: list[float], eyes: list[float], c: TrackCues) -> dict[str, float]:
    """The ``CUES`` of one track (NaN where the track gave too little to measure)."""
    nan = math.nan
    out = {k: nan for k in CUES}
    out["face"] = float(_logit(np.array(faces)).mean()) if faces else nan
    if len(faces) >= 4:
        logits = _logit(np.array(faces))
        out["face_q75"] = float(np.quantile(logits, 0.75))
        out["face_max3"] = float(np.convolve(logits, np.ones(3) / 3, mode="valid").max())
        out["face_spread"] = float(np.std(logits))
    if eyes:
        out["eye_q25"], out["eye_min"] = float(np.quantile(eyes, 0.25)), float(min(eyes))
    if c.ratios:
        r = np.array(c.ratios)
        out["blink_depth"] = float(1 - r.min() / max(float(np.median(r)), 1e-6))
    if len(c.motion) >= 5:
        m = np.array(c.motion)
        out["motion_residual"], out["motion_ring_residual"], out["motion_gap"] = (float(v) for v in np.median(m, axis=0))
    if c.edges:
        out["edges"] = float(np.median(c.edges))
    if len(c.light) > 8:
        light = np.array(c.light)
        out["flicker_face"] = float(np.std(np.diff(light[:, 0], 2)) / max(light[:, 0].mean(), 1e-6))
        out["flicker_ratio"] = float(np.std(np.diff(light[:, 0] / np.maximum(light[:, 1], 1e-6), 2)))
    return out


def measure(seqs: list[Sequence], analyzer: OfflineAnalyzer, source: str) -> list[dict[str, Any]]:
    """One row per sequence: its source, label and the cues of its longest track (None: no face)."""
    rows = []
    for seq in seqs:
        observer = CueObserver()
        tracks = analyzer.analyze(seq.read(), observe=observer)
        cues = None
        if tracks:
            t = tracks[0]
            faces = [e.score for e in t.events if e.kind == "face"]
            eyes = [e.score for e in t.events if e.kind == "eye"]
            cues = features(faces, eyes, observer.tracks[t.track])
        rows.append({"name": seq.name, "source": source, "label": seq.label, "cues": cues})
    return rows


def _threshold(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(sign, threshold): ``sign * x >= threshold`` says spoof, with the lowest half total error; the
    threshold halfway between two neighbouring values (a margin on both sides)."""
    best = (math.inf, 1.0, 0.0)
    for sign in (1.0, -1.0):
        v = np.unique(sign * x)
        for t in np.concatenate([[v[0]], (v[1:] + v[:-1]) / 2, [v[-1] + 1]]):
            spoof = sign * x >= t
            err = ((~spoof[y == 1]).mean() if (y == 1).any() else 0) + (spoof[y == 0].mean() if (y == 0).any() else 0)
            if err < best[0]:
                best = (err, sign, float(t))
    return best[1], best[2]


def left_out(rows: list[dict[str, Any]], cues: list[str], regression: bool | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, left-out scores, left-out decisions) of every row with a face, each source decided by
    a rule chosen on the others: a threshold for one cue, a logistic regression for several (or
    for one, with ``regression``: the baseline a combination is compared with)."""
    rows = [r for r in rows if r["cues"] is not None]
    y = np.array([r["label"] == "spoof" for r in rows], int)
    src = np.array([r["source"] for r in rows])
    x = np.array([[r["cues"][k] for k in cues] for r in rows], float)
    fill = np.nanmedian(x, axis=0)
    x = np.where(np.isnan(x), fill, x)  # a track too short for a cue: the typical value, neither side
    score, spoof = np.zeros(len(rows)), np.zeros(len(rows), bool)
    for s in sorted(set(src)):
        test, train = src == s, src != s
        if not (len(cues) > 1 if regression is None else regression):
            sign, t = _threshold(x[train, 0], y[train])
            score[test] = sign * x[test, 0]
            spoof[test] = score[test] >= t
        else:
            mu, sd = x[train].mean(0), x[train].std(0) + 1e-9
            weight = np.where(y[train] == 1, 0.5 / y[train].mean(), 0.5 / (1 - y[train].mean()))
            lr = LogisticRegression().fit((x[train] - mu) / sd, y[train], sample_weight=weight)
            score[test] = lr.decision_function((x[test] - mu) / sd)
            spoof[test] = score[test] >= 0
    return y, score, spoof


def study(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per cue (and face+cue) and per group of sources (video, nuaa, all): left-out figures per sequence."""
    groups = {"video": lambda r: not r["source"].startswith("nuaa"), "nuaa": lambda r: r["source"].startswith("nuaa"),
              "all": lambda r: True}
    out: dict[str, Any] = {}
    combos = [([c], False) for c in CUES] + [(["face"], True)] + [(["face", c], True) for c in CUES if c != "face"]
    for cues, regression in combos:
        y, score, spoof = left_out(rows, cues, regression)
        faced = [r for r in rows if r["cues"] is not None]
        figures = {}
        for g, member in groups.items():
            m = np.array([member(r) for r in faced])
            if not m.any():
                continue
            rep = pad_report(y[m], spoof[m].astype(float), 0.5)
            ranking = pad_report(y[m], score[m], float(np.median(score)))
            figures[g] = {"n_live": rep.n_live, "n_spoof": rep.n_spoof, "auc": ranking.auc, "apcer": rep.apcer,
                          "bpcer": rep.bpcer, "acer": rep.acer,
                          "errors": [r["name"] for r, e, k in zip(faced, spoof != y.astype(bool), m) if e and k]}
        out["+".join(cues) + (" (regression)" if len(cues) == 1 and regression else "")] = figures
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", help="video sources root (folders layout, one source a folder)")
    ap.add_argument("--nuaa", help="NUAA root: each capture session a source")
    ap.add_argument("--face-model", help="face ONNX file for the sources without a fold model (default: committed)")
    ap.add_argument("--nuaa-folds", help="DIR with face_loso_nuaa-NN.onnx and eye_trNN.onnx: NUAA scored out of session")
    ap.add_argument("--per-class", type=int, default=20, help="NUAA sequences per class and session (spread evenly)")
    ap.add_argument("--rows", help="JSON file of measured rows: read if it exists, else written")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows_path = Path(args.rows) if args.rows else None
    if rows_path and rows_path.is_file():
        rows = json.loads(rows_path.read_text())
    else:
        rows = []
        camera = CameraDefaults(eyes=True)  # the study measures the eye model too
        eye_shape = (INPUT_SIZE,)

        def analyzer(face: str, eye: str) -> OfflineAnalyzer:
            return OfflineAnalyzer(OnnxModel(face, input_shape=FACE_INPUT_SHAPE), OnnxModel(eye, input_shape=eye_shape),
                                   Policy(), camera)

        face, eye = str(args.face_model or artifact_path("face.onnx")), str(eye_model_path())
        if args.videos:
            shipped = analyzer(face, eye)
            for d in sorted(p for p in Path(args.videos).iterdir() if p.is_dir()):
                rows += measure(folders(args.videos, d.name).sequences, shipped, d.name)
        if args.nuaa:
            sessions = ("01", "02")
            for session in sessions:
                if args.nuaa_folds:
                    other = next(s for s in sessions if s != session)
                    folds = Path(args.nuaa_folds)
                    a = analyzer(str(folds / f"face_loso_nuaa-{session}.onnx"), str(folds / f"eye_tr{other}.onnx"))
                else:
                    a = analyzer(face, eye)
                seqs = nuaa(args.nuaa, f"session-{session}").sequences
                keep = []
                for label in ("live", "spoof"):
                    mine = [s for s in seqs if s.label == label]
                    step = max(1, len(mine) // args.per_class)
                    keep += mine[::step][:args.per_class]
                rows += measure(keep, a, f"nuaa{session}")
        if rows_path:
            rows_path.write_text(json.dumps(rows))
    result = study(rows)
    if args.json:
        print(json.dumps(result, default=float))
    else:
        for name, figures in result.items():
            print(f"{name:28s} " + "  ".join(
                f"{g} AUC {f['auc']:.3f} ACER {f['acer']:.3f} (APCER {f['apcer']:.3f} BPCER {f['bpcer']:.3f})"
                for g, f in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
