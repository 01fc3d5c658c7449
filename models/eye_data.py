"""Per-frame eye ratios and landmarks of labelled sequences, through the ingest face pipeline.

Landmarks on every frame are the slow part of eye training, so each dataset's tracks are
cached as one ``.npz`` under ``.cache/eye/`` (gitignored; plain arrays, no pickles) keyed by
the frame files it was built from. A frame without a face is left out, as ingest would
publish nothing for it; the largest face of a frame is the sequence's face. ``sequence_figures``
turns a sequence's window scores into one decision, for ``liveness evaluate --model eye``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liveness.config import DetectSettings
from liveness.face import FacePipeline
from liveness.models.datasets import Dataset, Sequence
from liveness.pad_metrics import error_rates

log = logging.getLogger(__name__)

CACHE_DIR = Path(".cache/eye")


@dataclass
class EyeTrack:
    """One sequence as ingest would see it: the timestamps and eye ratios of its face frames."""

    name: str
    label: str
    session: str | None
    subject: str | None
    ts: np.ndarray
    left: np.ndarray
    right: np.ndarray
    landmarks: np.ndarray

    @property
    def spoof(self) -> int:
        return int(self.label == "spoof")

    def at_fps(self, fps: float) -> "EyeTrack":
        """The same span of time as seen by a camera at ``fps``: every k-th frame below the
        nominal rate, linearly interpolated frames in between above it (a blink keeps its
        duration in seconds; only the number of frames per second changes)."""
        nominal = 1.0 / float(np.median(np.diff(self.ts)))
        k = max(1, round(nominal / fps)) if fps < nominal else max(1, round(fps / nominal))
        if fps < nominal:
            sel = np.arange(0, len(self.ts), k)
            return EyeTrack(self.name, self.label, self.session, self.subject, self.ts[sel], self.left[sel],
                            self.right[sel], self.landmarks[sel])
        pos = np.arange((len(self.ts) - 1) * k + 1) / k
        lo = np.minimum(pos.astype(int), len(self.ts) - 2)
        f = (pos - lo)[:, None]

        def mix(a: np.ndarray) -> np.ndarray:
            return a[lo] * (1 - f.reshape((-1,) + (1,) * (a.ndim - 1))) + a[lo + 1] * f.reshape((-1,) + (1,) * (a.ndim - 1))

        return EyeTrack(self.name, self.label, self.session, self.subject, mix(self.ts), mix(self.left),
                        mix(self.right), mix(self.landmarks).astype(np.float32))


def _key(dataset: Dataset) -> str:
    h = hashlib.sha1(DetectSettings().model_dump_json().encode())
    for s in dataset.sequences:
        h.update(f"{s.name}|{s.label}|{s.video}|{s.fps}|".encode())
        h.update("|".join(str(p) for p in s.frames).encode())
    return h.hexdigest()[:16]


def _extract(seq: Sequence, pipeline: FacePipeline) -> tuple[list[float], list[tuple[float, float]], list[np.ndarray]]:
    ts, ratios, marks = [], [], []
    for t, frame in seq.read():
        faces = pipeline.analyze(frame)
        if faces:
            ts.append(t)
            ratios.append((faces[0].left, faces[0].right))
            marks.append(faces[0].landmarks)
    return ts, ratios, marks


def eye_tracks(dataset: Dataset, cache_dir: Path = CACHE_DIR) -> list[EyeTrack]:
    """Eye tracks of every sequence with at least two face frames, from the cache when present."""
    path = cache_dir / f"{_key(dataset)}.npz"
    if not path.is_file():
        pipeline = FacePipeline()
        seq_ids, ts, ratios, marks = [], [], [], []
        for i, seq in enumerate(dataset.sequences):
            t, r, m = _extract(seq, pipeline)
            log.info("eye data: %s: %d of %d frames with a face", seq.name, len(t), max(len(seq), 0))
            seq_ids += [i] * len(t)
            ts += t
            ratios += r
            marks += m
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, seq=np.array(seq_ids, dtype=np.int32), ts=np.array(ts, dtype=np.float64),
                            ratios=np.array(ratios, dtype=np.float64).reshape(-1, 2),
                            landmarks=np.array(marks, dtype=np.float32).reshape(-1, 68, 2))
        tmp.rename(path)
    data = np.load(path, allow_pickle=False)
    tracks = []
    for i, seq in enumerate(dataset.sequences):
        sel = data["seq"] == i
        if sel.sum() < 2:
            log.warning("eye data: %s has fewer than 2 face frames, left out", seq.name)
            continue
        r = data["ratios"][sel]
        tracks.append(EyeTrack(seq.name, seq.label, seq.session, seq.subject, data["ts"][sel], r[:, 0], r[:, 1],
                               data["landmarks"][sel]))
    return tracks


def sequence_figures(labels: list[int], window_scores: list[np.ndarray], metadata: dict[str, str],
                     window_threshold: float) -> dict[str, object]:
    """APCER/BPCER/ACER with one decision per sequence, by the model's own sequence rule.

    A model exported here carries its rule (``liveness.sequence_quantile`` of the window scores,
    attack at ``liveness.sequence_threshold``); another model is judged by the mean of its window
    scores at its window threshold. A sequence without a window is undecided, which is never an
    acceptance: a rejected live face, a refused attack.
    """
    if "liveness.sequence_quantile" in metadata and "liveness.sequence_threshold" in metadata:
        q, threshold = float(metadata["liveness.sequence_quantile"]), float(metadata["liveness.sequence_threshold"])
        aggregate, rule = (lambda v: float(np.quantile(v, q))), f"quantile {q:g}"
    else:
        threshold, aggregate, rule = window_threshold, (lambda v: float(np.mean(v))), "mean"
    scores = [aggregate(w) if len(w) else np.inf for w in window_scores]
    apcer, bpcer = error_rates(np.array(labels), np.array(scores), threshold)
    rates = {"sequence_apcer": apcer, "sequence_bpcer": bpcer, "sequence_acer": (apcer + bpcer) / 2}
    return {**{k: None if np.isnan(v) else v for k, v in rates.items()},  # JSON has no NaN
            "sequence_threshold": threshold, "sequence_rule": rule, "sequence_n_live": len(labels) - sum(labels),
            "sequence_n_spoof": sum(labels), "sequence_no_window": sum(not len(w) for w in window_scores)}
