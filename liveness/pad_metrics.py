"""ISO/IEC 30107-3 presentation-attack-detection metrics, attacks as the positive class.

Shared by ``liveness evaluate`` and the fusion service, so every figure we quote is computed
one way. Labels: 1 = attack (spoof), 0 = bona fide (live). Scores: higher = more likely an
attack; a sample is classified as an attack when ``score >= threshold``. Callers turn a
rejection (no face found) into score 1.0, so it counts as "classified attack". Pure numpy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class PadReport:
    """The figures of one evaluation; rates are fractions in [0, 1] (NaN when undefined)."""

    n_live: int
    n_spoof: int
    threshold: float
    apcer: float
    """Attacks classified as live / attacks."""
    bpcer: float
    """Live classified as attacks / live."""
    acer: float
    accuracy: float
    auc: float
    """Probability that a random attack scores above a random live sample (ties count half)."""
    eer: float
    bpcer_at_apcer_1: float
    """Lowest BPCER of any threshold whose APCER is at most 1%."""
    bpcer_at_apcer_10: float

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready: NaN becomes None, since JSON has no NaN."""
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(self).items()}


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(np.int64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in length")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (live) or 1 (attack)")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return labels, scores


def error_rates(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """``(APCER, BPCER)`` at one threshold."""
    labels, scores = _check(labels, scores)
    attack = scores >= threshold
    spoof, live = labels == 1, labels == 0
    apcer = float(np.mean(~attack[spoof])) if spoof.any() else float("nan")
    bpcer = float(np.mean(attack[live])) if live.any() else float("nan")
    return apcer, bpcer


def det_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds, APCER, BPCER)`` at every distinct score and at +inf, thresholds ascending.

    APCER rises and BPCER falls along the arrays; both labels must be present.
    """
    labels, scores = _check(labels, scores)
    spoof, live = np.sort(scores[labels == 1]), np.sort(scores[labels == 0])
    if not len(spoof) or not len(live):
        raise ValueError("the DET curve needs both live and attack samples")
    thresholds = np.append(np.unique(scores), np.inf)
    apcer = np.searchsorted(spoof, thresholds, side="left") / len(spoof)
    bpcer = 1.0 - np.searchsorted(live, thresholds, side="left") / len(live)
    return thresholds, apcer, bpcer


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve from mid-ranks (Mann-Whitney U), exact with ties."""
    labels, scores = _check(labels, scores)
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    # Mid-rank of each run of tied scores (1-based).
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mid = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(mid, counts)
    u = ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def eer(labels: np.ndarray, scores: np.ndarray) -> float:
    """Equal error rate: where APCER and BPCER cross, linearly interpolated between thresholds."""
    _, apcer, bpcer = det_curve(labels, scores)
    diff = apcer - bpcer  # non-decreasing: -1 .. +1
    i = int(np.argmax(diff >= 0))
    if diff[i] == 0 or i == 0:
        return float((apcer[i] + bpcer[i]) / 2.0)
    alpha = -diff[i - 1] / (diff[i] - diff[i - 1])
    return float(apcer[i - 1] + alpha * (apcer[i] - apcer[i - 1]))


def bpcer_at_apcer(labels: np.ndarray, scores: np.ndarray, max_apcer: float) -> float:
    """Lowest BPCER over the thresholds whose APCER is at most ``max_apcer`` (BPCER-x)."""
    _, apcer, bpcer = det_curve(labels, scores)
    ok = apcer <= max_apcer + 1e-12
    return float(bpcer[ok].min())


def pad_report(labels: np.ndarray, scores: np.ndarray, threshold: float) -> PadReport:
    """Every figure at once; curve figures are NaN when one class is missing."""
    labels, scores = _check(labels, scores)
    apcer, bpcer = error_rates(labels, scores, threshold)
    both = bool((labels == 1).any() and (labels == 0).any())
    nan = float("nan")
    accuracy = float(np.mean((scores >= threshold) == (labels == 1))) if len(labels) else nan
    return PadReport(
        n_live=int((labels == 0).sum()), n_spoof=int((labels == 1).sum()), threshold=float(threshold),
        apcer=apcer, bpcer=bpcer, acer=(apcer + bpcer) / 2.0 if both else nan, accuracy=accuracy,
        auc=auc(labels, scores) if both else nan, eer=eer(labels, scores) if both else nan,
        bpcer_at_apcer_1=bpcer_at_apcer(labels, scores, 0.01) if both else nan,
        bpcer_at_apcer_10=bpcer_at_apcer(labels, scores, 0.10) if both else nan,
    )
