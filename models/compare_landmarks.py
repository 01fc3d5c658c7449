"""The face mesh against dlib's 68-point model, on the same faces: the figures of ``face_mesh.md``.

Every frame of NUAA (sessions 01 and 02) and of the video sources goes through BlazeFace once;
both landmark models then run in the same box, as ingest would run either. Reported per
source: how far the two models' eye points and face boxes lie apart, the open-eye ratio,
its jitter between frames, the lid dips (blinks) each model sees and how many of the other's
it sees too, each model's cost per face, and the eye model on each model's ratios: trained
and validated across NUAA's sessions, and scored on the video sources (never trained on).

    python -m liveness.models.compare_landmarks --nuaa ../shared/data/nuaa-train \
        --videos ../shared/data/video-sources --json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

from liveness.defaults import artifact_path, eye_model_path
from liveness.eyes import CLOSED_FRACTION, OPEN_LEVEL_FRAMES
from liveness.face import FacePipeline, eye_ratios, iou
from liveness.landmarks import Dlib68, FaceMesh, Landmarker, mesh_to_68
from liveness.models import datasets
from liveness.models.eye_data import EyeTrack
from liveness.models.eye_onnx import INPUT, OUTPUT
from liveness.models.train_eye import (DEFAULT_MODEL, SEQUENCE_QUANTILE, build_windows, fit, sequence_scores, spoof_scores,
                                       track_windows, validate)
from liveness.pad_metrics import auc


def face_box(pts: np.ndarray) -> tuple[int, int, int, int]:
    """Detector-style square box ``(x, y, w, h)`` of a face, from its landmarks: how two landmark
    models' faces are compared by their boxes.

    The detector's box is about 1.07 times the landmarks' extent and sits slightly higher
    (measured on NUAA and the webcam rooms, where BlazeFace's and dlib's boxes agree within
    2 % of their size).
    """
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    cx, cy = (lo + hi) / 2.0
    size = float(max(hi - lo))
    side = 1.07 * size
    cx, cy = cx + 0.03 * size, cy - 0.08 * size
    return int(cx - side / 2), int(cy - side / 2), int(side), int(side)


log = logging.getLogger(__name__)

CACHE_DIR = Path(".cache/landmarks")
MODELS = ("dlib68", "face_mesh")
EYE_POINTS = slice(36, 48)
MATCH_S = 0.2
"""Two models see the same blink when their dips lie this close in time."""


def extract(dataset: datasets.Dataset, cache_dir: Path = CACHE_DIR) -> dict[str, np.ndarray]:
    """Per face frame: sequence, time, box, dlib's 68 points and the mesh's 468; cached."""
    h = hashlib.sha1(b"v1")
    for s in dataset.sequences:
        h.update(f"{s.name}|{s.video}|{len(s.frames)}|".encode())
    path = cache_dir / f"{h.hexdigest()[:16]}.npz"
    if path.is_file():
        return dict(np.load(path, allow_pickle=False))
    pipe, dlib68, mesh = FacePipeline(), Dlib68(), FaceMesh()
    out: dict[str, list[object]] = {k: [] for k in ("seq", "ts", "box", "dlib68", "face_mesh_full")}
    for i, seq in enumerate(dataset.sequences):
        for ts, frame in seq.read():
            boxes = pipe.detect(frame)
            if not boxes:
                continue
            out["seq"].append(i)
            out["ts"].append(ts)
            out["box"].append(boxes[0])
            out["dlib68"].append(dlib68(frame, boxes[0]))
            out["face_mesh_full"].append(mesh.mesh(frame, boxes[0]).astype(np.float32))
        log.info("landmarks: %s done", seq.name)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **{k: np.array(v) for k, v in out.items()})  # type: ignore[arg-type]
    tmp.rename(path)
    return dict(np.load(path, allow_pickle=False))


def cost(dataset: datasets.Dataset, faces: int = 100, repeats: int = 3) -> dict[str, float]:
    """Median CPU time (ms, this thread: a shared machine's waits left out) of one landmark call per model,
    on the first ``faces`` faces of every 5th frame, each model in turn on each face."""
    pipe = FacePipeline()
    models: dict[str, Landmarker] = {"dlib68": Dlib68(), "face_mesh": FaceMesh()}
    found: list[tuple[np.ndarray, tuple[int, int, int, int]]] = []
    for seq in dataset.sequences[::4]:
        for k, (_, frame) in enumerate(seq.read()):
            boxes = pipe.detect(frame) if k % 5 == 0 else []
            if boxes:
                found.append((frame, boxes[0]))
        if len(found) >= faces:
            break
    times: dict[str, list[float]] = {m: [] for m in models}
    for _ in range(repeats):
        for frame, box in found[:faces]:
            for name, model in models.items():
                t0 = time.thread_time()
                model(frame, box)
                times[name].append((time.thread_time() - t0) * 1e3)
    return {m: float(np.median(v)) for m, v in times.items()}


def tracks(dataset: datasets.Dataset, data: dict[str, np.ndarray], model: str) -> list[EyeTrack]:
    out = []
    for i, seq in enumerate(dataset.sequences):
        sel = data["seq"] == i
        if sel.sum() < 2:
            continue
        pts = data["dlib68"][sel] if model == "dlib68" else mesh_to_68(data["face_mesh_full"][sel])
        ratios = np.array([eye_ratios(p) for p in pts])
        out.append(EyeTrack(seq.name, seq.label, seq.session, seq.subject, data["ts"][sel], ratios[:, 0],
                            ratios[:, 1], pts.astype(np.float32)))
    return out


def dips(track: EyeTrack) -> tuple[list[float], list[float], float, float]:
    """Times and depths of lid dips (mean ratio below CLOSED_FRACTION of the running open level),
    the open level, and the jitter: median frame-to-frame change of the ratio over the open level."""
    mean = (track.left + track.right) / 2.0
    level = np.array([np.median(mean[max(0, k - OPEN_LEVEL_FRAMES + 1):k + 1]) for k in range(len(mean))])
    rel = mean / np.maximum(level, 1e-6)
    below = rel < CLOSED_FRACTION
    times, depths = [], []
    k = 0
    while k < len(rel):
        if below[k]:
            j = k
            while j < len(rel) and below[j]:
                j += 1
            m = k + int(np.argmin(rel[k:j]))
            times.append(float(track.ts[m]))
            depths.append(float(1.0 - rel[m]))
            k = j
        else:
            k += 1
    return times, depths, float(np.median(mean)), float(np.median(np.abs(np.diff(rel))))


def source_figures(dataset: datasets.Dataset, data: dict[str, np.ndarray]) -> dict[str, dict[str, object]]:
    """Per source (session): point and box agreement, open level, jitter, dips and their overlap."""
    by_model = {m: tracks(dataset, data, m) for m in MODELS}
    sources = sorted({t.session or "-" for t in by_model["dlib68"]})
    out: dict[str, dict[str, object]] = {}
    for src in sources:
        idx = [i for i, s in enumerate(dataset.sequences) if (s.session or "-") == src]
        sel = np.isin(data["seq"], idx)
        a, b = data["dlib68"][sel], mesh_to_68(data["face_mesh_full"][sel])
        iod = np.linalg.norm(a[:, 45] - a[:, 36], axis=1)
        eye_err = np.linalg.norm(a[:, EYE_POINTS] - b[:, EYE_POINTS], axis=2).mean(axis=1) / iod
        boxes = [(face_box(p), face_box(q)) for p, q in zip(a, b)]
        fig: dict[str, object] = {
            "frames": int(sel.sum()),
            "eye_point_error_iod": float(np.median(eye_err)),
            "face_box_iou": float(np.median([iou(p, q) for p, q in boxes])),
            "face_box_size_ratio": float(np.median([q[2] / max(p[2], 1) for p, q in boxes])),
        }
        events: dict[str, dict[str, list[float]]] = {}
        for m in MODELS:
            ts = [t for t in by_model[m] if (t.session or "-") == src]
            d = {t.name: dips(t) for t in ts}
            events[m] = {n: v[0] for n, v in d.items()}
            for label in ("live", "spoof"):
                sub = [(t, d[t.name]) for t in ts if t.label == label]
                if not sub:
                    continue
                secs = sum(float(t.ts[-1] - t.ts[0]) for t, _ in sub)
                fig[f"{m} {label}"] = {
                    "sequences": len(sub),
                    "open_ratio": float(np.median([v[2] for _, v in sub])),
                    "jitter": float(np.median([v[3] for _, v in sub])),
                    "dips_per_min": 60.0 * sum(len(v[0]) for _, v in sub) / max(secs, 1e-6),
                    "dip_depth": float(np.median([x for _, v in sub for x in v[1]])) if any(v[1] for _, v in sub) else 0.0,
                }
        both = [(events["dlib68"][n], events["face_mesh"].get(n, [])) for n in events["dlib68"]]
        seen = sum(any(abs(t - u) <= MATCH_S for u in mesh) for dl, mesh in both for t in dl)
        fig["dlib_dips_seen_by_mesh"] = f"{seen} of {sum(len(dl) for dl, _ in both)}"
        seen = sum(any(abs(t - u) <= MATCH_S for u in dl) for dl, mesh in both for t in mesh)
        fig["mesh_dips_seen_by_dlib"] = f"{seen} of {sum(len(mesh) for _, mesh in both)}"
        out[src] = fig
    return out


def video_eye_auc(score: Callable[[np.ndarray], np.ndarray], video_tracks: list[EyeTrack]) -> dict[str, float]:
    """Per-video AUC of the eye score (quantile of window scores) over the video sources, and the share scored."""
    labels, scores = [], []
    for t in video_tracks:
        x = track_windows(t)
        if len(x):
            labels.append(t.spoof)
            scores.append(float(np.quantile(score(x), SEQUENCE_QUANTILE)))
    return {"videos": len(labels), "auc": auc(np.array(labels), np.array(scores))}


def run(args: argparse.Namespace) -> dict[str, object]:
    nuaa = datasets.load("nuaa", args.nuaa, "all")
    videos = datasets.load("folders", args.videos)
    nd, vd = extract(nuaa), extract(videos)
    report: dict[str, object] = {
        "cpu_ms_per_face": cost(nuaa),
        "nuaa": source_figures(nuaa, nd),
        "videos": source_figures(videos, vd),
    }
    shipped = ort.InferenceSession(str(eye_model_path()), providers=["CPUExecutionProvider"])
    eye: dict[str, object] = {}
    nuaa_tracks = {m: [t for t in tracks(nuaa, nd, m) if t.session in ("01", "02")] for m in MODELS}
    for m in MODELS:
        vt = tracks(videos, vd, m)
        val = validate(DEFAULT_MODEL, args.seed, nuaa_tracks[m])
        pipe = fit(DEFAULT_MODEL, args.seed, *_xy(nuaa_tracks[m]))
        eye[m] = {"nuaa_cross_session": {k: v for k, v in val.summary.items() if "mean_logit" not in k},
                  "nuaa_cross_session_trained_on_dlib68": cross_session_transfer(nuaa_tracks["dlib68"], nuaa_tracks[m], args.seed),
                  "videos_shipped_eye_onnx": video_eye_auc(lambda x: shipped.run([OUTPUT], {INPUT: x})[0], vt),
                  "videos_retrained_on_nuaa": video_eye_auc(lambda x: spoof_scores(pipe, DEFAULT_MODEL, x), vt)}
    report["eye_model"] = eye
    return report


def cross_session_transfer(train: list[EyeTrack], score: list[EyeTrack], seed: int) -> dict[str, float]:
    """Window and sequence AUC, mean of both folds, of a model fitted on one session's ``train`` tracks
    and scored on the other session's ``score`` tracks: the shipped eye model's case, fitted on dlib's ratios."""
    out = []
    for a, b in (("01", "02"), ("02", "01")):
        pipe = fit(DEFAULT_MODEL, seed, *_xy([t for t in train if t.session == a]))
        va = [t for t in score if t.session == b]
        w = build_windows(va)
        s = spoof_scores(pipe, DEFAULT_MODEL, w.x)
        ids, seq = sequence_scores(s, w.seq)
        out.append((auc(w.y, s), auc(np.array([va[i].spoof for i in ids]), seq)))
    window, sequence = np.mean(out, axis=0)
    return {"window_auc": float(window), "sequence_auc": float(sequence)}


def _xy(ts: list[EyeTrack]) -> tuple[np.ndarray, np.ndarray]:
    xs = [track_windows(t) for t in ts]
    return np.concatenate(xs), np.concatenate([np.full(len(x), t.spoof) for x, t in zip(xs, ts)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nuaa", required=True, help="NUAA Photo Imposter root")
    parser.add_argument("--videos", required=True, help="video sources root (folders layout, one folder per source)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run(args)
    print(json.dumps(report, indent=None if args.json else 2, default=float))


if __name__ == "__main__":
    main()
