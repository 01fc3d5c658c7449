"""Audits of the eye model's data, reported by ``liveness train eye`` beside its figures.

- ``rate_baseline``: NUAA's sequences told apart by their frame spacing alone, the trap any
  feature that leaks frame timing falls into (why eye features use fixed-rate windows).
- ``seed_csv``: the original project's experiment on its own CSV, rerun with a split that
  shares no frame between training and test.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from sklearn.neighbors import KNeighborsClassifier

from liveness.defaults import EYE_WINDOW
from liveness.errors import LivenessError
from liveness.models import datasets
from liveness.models.eye_data import EyeTrack
from liveness.models.train_eye import eer_threshold, figures, folds

SEED_CLAIMED_ACCURACY = 0.933
"""Test accuracy the original project claims for its KNN on its own CSV."""


def rate_baseline(tracks: list[EyeTrack], gaps: dict[str, float]) -> dict[str, object]:
    """The NUAA trap measured: sequences told apart by their frame spacing alone (picture-number step).

    A threshold on the step, fitted on one session, scored on the other; a high figure here
    means any feature that leaks frame spacing (jitter between frames) can look good for the
    wrong reason, which is why every eye feature is computed on fixed-rate windows.
    """
    out = []
    for title, tr_idx, va_idx in folds(tracks):
        g_tr = np.array([gaps[tracks[i].name] for i in tr_idx])
        y_tr = np.array([tracks[i].spoof for i in tr_idx])
        g_va = np.array([gaps[tracks[i].name] for i in va_idx])
        y_va = np.array([tracks[i].spoof for i in va_idx])
        out.append({"fold": title, **figures(y_va, g_va, eer_threshold(y_tr, g_tr))})
    return {"folds": out, "acer": float(np.mean([f["acer"] for f in out])), "auc": float(np.mean([f["auc"] for f in out]))}


def picture_steps(dataset: datasets.Dataset) -> dict[str, float]:
    """Median picture-number step of each NUAA sequence: how sparsely its video was sampled."""
    return {s.name: float(np.median(np.diff([int(p.stem.split("_")[-1]) for p in s.frames]))) if len(s.frames) > 1
            else 0.0 for s in dataset.sequences}


def _seed_rows(root: Path) -> tuple[np.ndarray, np.ndarray]:
    path = root if root.is_file() else root / "eye_ratio_r_f.csv"
    if not path.is_file():
        raise LivenessError(f"{path}: seed CSV not found")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    x = np.array([[float(v) for v in r[: 2 * EYE_WINDOW]] for r in rows])
    y = np.array([int(r[2 * EYE_WINDOW].strip() == "fake") for r in rows])
    return x, y


def seed_runs(x: np.ndarray) -> np.ndarray:
    """Recording id of each seed-CSV row: consecutive rows that share 9 frames are one recording.

    Each row lists frames newest first, so a row's older 9 frames are the next row's newer 9.
    """
    overlap = np.all(np.isclose(x[1:, : 2 * (EYE_WINDOW - 1)], x[:-1, 2:]), axis=1)
    return np.concatenate([[0], np.cumsum(~overlap)])


def seed_split(runs: np.ndarray, test_fraction: float, seed: int, block: int = EYE_WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Train and test rows with no frame in common: blocks of consecutive rows go to one side,
    and training rows within ``EYE_WINDOW - 1`` rows of a test row of the same recording are dropped."""
    rng = np.random.default_rng(seed)
    pos = np.concatenate([np.arange((runs == r).sum()) for r in np.unique(runs)])
    blocks = runs * 10_000 + pos // block
    ids = np.unique(blocks)
    test_blocks = rng.choice(ids, size=max(1, round(test_fraction * len(ids))), replace=False)
    test = np.isin(blocks, test_blocks)
    near = np.zeros(len(runs), dtype=bool)
    for i in np.flatnonzero(test):
        near |= (runs == runs[i]) & (np.abs(np.arange(len(runs)) - i) <= EYE_WINDOW - 1)
    return np.flatnonzero(~test & ~near), np.flatnonzero(test)


def seed_csv(root: Path, seed: int) -> dict[str, object]:
    """The original's KNN (k=3) on its CSV: random row split (as published) versus a leak-free split."""
    x, y = _seed_rows(root)
    runs = seed_runs(x)
    rng = np.random.default_rng(seed)
    naive, honest = [], []
    for rep in range(20):
        perm = rng.permutation(len(y))
        te, tr = perm[: round(0.3 * len(y))], perm[round(0.3 * len(y)):]
        naive.append(float((KNeighborsClassifier(3).fit(x[tr], y[tr]).predict(x[te]) == y[te]).mean()))
        tr, te = seed_split(runs, 0.3, seed + rep)
        honest.append(float((KNeighborsClassifier(3).fit(x[tr], y[tr]).predict(x[te]) == y[te]).mean()))
    return {"rows": int(len(y)), "recordings": int(runs.max() + 1),
            "recording_sizes": np.bincount(runs).tolist(), "claimed_test_accuracy": SEED_CLAIMED_ACCURACY,
            "random_row_split_accuracy": float(np.mean(naive)), "leak_free_split_accuracy": float(np.mean(honest)),
            "leak_free_split_accuracy_std": float(np.std(honest)), "repeats": 20,
            "note": ("each class is one recording (rows 0-98 and 99 live, 100-199 fake), so no split can test on an "
                     "unseen recording; the leak-free split only keeps shared frames off both sides")}
