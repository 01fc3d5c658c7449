"""``liveness train face``: choose the face model, leaving whole sources out to measure it.

A source is one capture session of NUAA, one webcam room or one collection of videos: its own
people, light and camera. Every figure is measured on a source the model did not see: for each
source in turn every candidate (head, threshold) is fitted on all the others and the left-out
one is scored. Beside every candidate stands the pretrained pair as its authors use it (the
mean of the two softmaxes, live when it favours live), on every source.

Sources are grouped by attack type: NUAA's sessions are prints, the rooms and the video
collections are screen replays. The two types weigh the same in every choice, however many
sources each has: eight rooms must not outvote two print sessions. A candidate that is worse
than the pair as is by more than ``TOLERANCE`` ACER on any left-out source is rejected, whatever
it gains on the mean; of the others, the one with the lowest mean of the two types' mean ACERs
is shipped, fitted on every source with the same recipe.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from liveness.config import CropSettings
from liveness.errors import LivenessError
from liveness.models.datasets import DatasetError
from liveness.models.face_data import FaceCrops, face_crops
from liveness.pad_metrics import error_rates, pad_report

log = logging.getLogger(__name__)

C = 1000.0
"""Inverse regularisation of the heads, chosen on the left-out sources (0.01-10000 tried)."""

CROP = CropSettings()
"""The views as ingest cuts them by default: the face box made taller, as the pretrained networks'
authors cut theirs (chosen on the left-out sources against the box as the detector finds it)."""

VERSION = "6"

TOLERANCE = 0.01
"""How much worse than the pair as is (ACER) a candidate may be on any left-out source."""

VIDEO_RATE = 5.0
"""Frames per second sampled from continuous videos: neighbouring frames are near-duplicates."""

ATTACKS = ("print", "screen")


@dataclass(frozen=True)
class SourceSpec:
    """Where one source's frames are and which attack type it holds."""

    name: str
    kind: str
    root: str
    split: str
    attack: str
    video_rate: float | None = None


@dataclass
class Source:
    """One source's frames: embeddings, labels, which frames had a face, and the pair's own spoof score."""

    spec: SourceSpec
    data: FaceCrops
    emb: np.ndarray
    pair: np.ndarray
    """Spoof score of the pair as is (1 - mean live probability); 1.0 where no face was found."""

    @property
    def name(self) -> str:
        return self.spec.name


def _folder_sources(root: str, attack: str, video_rate: float | None) -> list[SourceSpec]:
    names = sorted(p.name for p in Path(root).iterdir() if p.is_dir() and ((p / "live").is_dir() or (p / "spoof").is_dir()))
    if not names:
        raise DatasetError(f"{root}: no source folders with live/ or spoof/")
    return [SourceSpec(n, "folders", root, n, attack, video_rate) for n in names]


def sources(nuaa: str | None, folders: str | None, videos: str | None = None) -> list[SourceSpec]:
    """Every source: each NUAA capture session (prints), each room folder and each video collection (screens)."""
    out: list[SourceSpec] = []
    if nuaa:
        sessions = sorted({p.stem.split("_")[3] for p in Path(nuaa).glob("ClientRaw/*/*.jpg") if p.stem.count("_") == 4})
        if not sessions:
            raise DatasetError(f"{nuaa}: no NUAA frames under ClientRaw/")
        out += [SourceSpec(f"nuaa-{s}", "nuaa", nuaa, f"session-{s}", "print") for s in sessions]
    if folders:
        out += _folder_sources(folders, "screen", None)
    if videos:
        out += _folder_sources(videos, "screen", VIDEO_RATE)
    if len(out) < 3:
        raise LivenessError(f"leave-one-source-out needs at least 3 sources, got {len(out)}")
    return out


def load_sources(specs: list[SourceSpec], pretrained: str | None, limit: int | None) -> list[Source]:
    """Crops of every source through the shared face pipeline (cached), their embeddings and the pair's score."""
    import torch

    from liveness.models.face_model import PRETRAINED, FaceModel, embeddings, pretrained_pair

    nets = pretrained_pair(pretrained or PRETRAINED)
    pair = FaceModel(nets).eval()
    out = []
    for spec in specs:
        data = face_crops(spec.kind, spec.root, spec.split, CROP, limit, video_rate=spec.video_rate)
        emb = embeddings(nets, data.crops)
        with torch.no_grad():
            spoof = pair.pair_spoof(torch.from_numpy(emb)).numpy()[:, 0]
        out.append(Source(spec, data, emb, np.where(data.has_face, spoof, 1.0)))
        log.info("train face: %s, %d frames", spec.name, len(data.labels))
    return out


@dataclass(frozen=True)
class Fitted:
    """A candidate fitted on some sources: its head (none: the pair's own score), whether the head can only
    raise the pair's score, and its threshold."""

    weight: np.ndarray | None
    bias: float
    monotone: bool
    threshold: float

    def scores(self, source: Source) -> np.ndarray:
        """Spoof score of every frame; a frame without a face is rejected (1.0)."""
        if self.weight is None:
            return source.pair
        z = np.clip(source.emb @ self.weight + self.bias, -60.0, 60.0)
        head = np.where(source.data.has_face, 1.0 / (1.0 + np.exp(-z)), 1.0)
        return np.maximum(head, source.pair) if self.monotone else head


def _weights(train: list[Source]) -> np.ndarray:
    """Each attack type, each of its sources and each class weigh the same."""
    per_type = {a: sum(s.spec.attack == a for s in train) for a in ATTACKS}
    parts = []
    for s in train:
        y = s.data.labels
        w = np.where(y == 1, 1.0 / max(1, (y == 1).sum()), 1.0 / max(1, (y == 0).sum()))
        parts.append(w / per_type[s.spec.attack])
    return np.concatenate(parts)


def fit_head(train: list[Source]) -> tuple[np.ndarray, float]:
    """Logistic regression on the embeddings of the frames with a face."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([s.emb for s in train])
    y = np.concatenate([s.data.labels for s in train])
    w = _weights(train)
    keep = np.concatenate([s.data.has_face for s in train])
    if len(np.unique(y[keep])) < 2:
        raise LivenessError("train face: the training sources need both live faces and attacks")
    clf = LogisticRegression(C=C, max_iter=5000).fit(x[keep], y[keep], sample_weight=w[keep] * keep.sum() / w[keep].sum())
    return clf.coef_[0], float(clf.intercept_[0])


def source_acer(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """ACER of one source; a source of one class (live videos only, say) counts that class's error rate."""
    return float(np.nanmean(error_rates(labels, scores, threshold)))


def balanced(values: dict[str, float], attack: dict[str, str]) -> tuple[float, dict[str, float]]:
    """The mean over attack types of each type's mean over its sources, and the per-type means."""
    per_type = {a: float(np.mean([v for n, v in values.items() if attack[n] == a]))
                for a in ATTACKS if any(attack[n] == a for n in values)}
    return float(np.mean(list(per_type.values()))), per_type


def pick_threshold(train: list[Source], scores: list[np.ndarray]) -> float:
    """The threshold with the lowest type-balanced mean ACER over the sources given."""
    attack = {s.name: s.spec.attack for s in train}
    candidates = np.unique(np.append(np.quantile(np.concatenate(scores), np.linspace(0.0, 1.0, 801)), 0.5))

    def cost(t: float) -> float:
        return balanced({s.name: source_acer(s.data.labels, p, t) for s, p in zip(train, scores)}, attack)[0]

    return float(min(candidates, key=lambda t: (cost(t), abs(t - 0.5))))


def _pair_as_is(train: list[Source]) -> Fitted:
    return Fitted(None, 0.0, False, 0.5)


def _pair_threshold(train: list[Source]) -> Fitted:
    return Fitted(None, 0.0, False, pick_threshold(train, [s.pair for s in train]))


def _head(train: list[Source], monotone: bool) -> Fitted:
    weight, bias = fit_head(train)
    draft = Fitted(weight, bias, monotone, 0.5)
    return Fitted(weight, bias, monotone, pick_threshold(train, [draft.scores(s) for s in train]))


CANDIDATES: dict[str, Callable[[list[Source]], Fitted]] = {
    "pair as is": _pair_as_is,
    "pair, threshold fitted": _pair_threshold,
    "head on the embeddings": lambda train: _head(train, monotone=False),
    "pair raised by a head": lambda train: _head(train, monotone=True),
}
"""Name -> fit on the training sources. The first is the baseline every other is compared with;
on a tie the earlier (simpler) one wins."""


def source_report(source: Source, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    rep = pad_report(source.data.labels, scores, threshold).to_dict()
    row = {"source": source.name, "attack": source.spec.attack,
           **{k: rep[k] for k in ("n_live", "n_spoof", "apcer", "bpcer", "auc")}}
    row["acer"] = source_acer(source.data.labels, scores, threshold)
    row["threshold"] = threshold
    row["no_face_live"] = int((~source.data.has_face & (source.data.labels == 0)).sum())
    row["no_face_spoof"] = int((~source.data.has_face & (source.data.labels == 1)).sum())
    return row


def video_scores(source: Source, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, scores)`` per video: one decision per video from the mean of its frames' face scores."""
    seq = source.data.sequence
    ids = np.unique(seq)
    return (np.array([source.data.labels[seq == i][0] for i in ids]), np.array([scores[seq == i].mean() for i in ids]))


def summary(rows: list[dict[str, Any]], videos: list[tuple[np.ndarray, np.ndarray, float]]) -> dict[str, Any]:
    """Means, worst source, per-type means and (for video sources) the pooled per-video figure."""
    worst = max(rows, key=lambda r: r["acer"])
    mean, per_type = balanced({r["source"]: r["acer"] for r in rows}, {r["source"]: r["attack"] for r in rows})
    out = {"mean_acer": float(np.mean([r["acer"] for r in rows])),
           "mean_apcer": float(np.nanmean([np.nan if r["apcer"] is None else r["apcer"] for r in rows])),
           "mean_bpcer": float(np.nanmean([np.nan if r["bpcer"] is None else r["bpcer"] for r in rows])),
           "worst_acer": worst["acer"], "worst_source": worst["source"], "balanced_acer": mean,
           "per_type": per_type, "per_source": rows}
    if videos:
        decided = np.concatenate([s >= t for _, s, t in videos])
        labels = np.concatenate([y for y, _, _ in videos])
        apcer, bpcer = float(np.mean(~decided[labels == 1])), float(np.mean(decided[labels == 0]))
        out["per_video"] = {"n_live": int((labels == 0).sum()), "n_spoof": int((labels == 1).sum()),
                            "apcer": apcer, "bpcer": bpcer, "acer": (apcer + bpcer) / 2}
    return out


def leave_one_source_out(all_sources: list[Source]) -> dict[str, Any]:
    """Every candidate with each source left out in turn, beside the pair as is; the choice by the rules."""
    results: dict[str, dict[str, Any]] = {}
    for name, fit in CANDIDATES.items():
        rows, videos = [], []
        for held in all_sources:
            fitted = fit([s for s in all_sources if s is not held])
            scores = fitted.scores(held)
            rows.append(source_report(held, scores, fitted.threshold))
            rows[-1]["pair_acer"] = source_acer(held.data.labels, held.pair, 0.5)
            if held.spec.video_rate:
                labels, per_video = video_scores(held, scores)
                videos.append((labels, per_video, fitted.threshold))
                rows[-1]["video_acer"] = source_acer(labels, per_video, fitted.threshold)
        res = summary(rows, videos)
        excess = max(rows, key=lambda r: r["acer"] - r["pair_acer"])
        res["worst_vs_pair"] = excess["acer"] - excess["pair_acer"]
        res["worst_vs_pair_source"] = excess["source"]
        res["rejected"] = res["worst_vs_pair"] > TOLERANCE + 1e-9
        results[name] = res
        log.info("train face: %s: balanced ACER %.4f (print %.4f, screen %.4f), worst vs the pair %+.4f on %s%s",
                 name, res["balanced_acer"], res["per_type"].get("print", float("nan")),
                 res["per_type"].get("screen", float("nan")), res["worst_vs_pair"], res["worst_vs_pair_source"],
                 ", rejected" if res["rejected"] else "")
    kept = [n for n in CANDIDATES if not results[n]["rejected"]]
    chosen = min(kept, key=lambda n: (round(results[n]["balanced_acer"], 9), list(CANDIDATES).index(n)))
    baseline = next(iter(CANDIDATES))
    return {"protocol": "leave-one-source-out", "unit": "frame", "model": results[chosen],
            "pretrained_pair": results[baseline], "chosen": chosen, "candidates": results, "tolerance": TOLERANCE}


def _metadata(threshold: float, version: str, specs: list[SourceSpec], chosen: str) -> dict[str, str]:
    return {"liveness.name": "face", "liveness.version": version, "liveness.threshold": repr(threshold),
            "liveness.input": "BGR 0..255, (N, 80, 160, 3): the 2.7x and 4.0x views side by side",
            "liveness.views": json.dumps(list(CROP.views)), "liveness.crop": CROP.model_dump_json(),
            "liveness.sources": ",".join(s.name for s in specs), "liveness.recipe": chosen}


def export(fitted: Fitted, path: Path, meta: dict[str, str], check: np.ndarray, pretrained: str | None) -> float:
    from liveness.models.face_model import PRETRAINED, FaceModel, export_onnx, pretrained_pair

    model = FaceModel(pretrained_pair(pretrained or PRETRAINED), fitted.weight, fitted.bias, fitted.monotone)
    return export_onnx(model, path, meta, check)


def write_fold_models(all_sources: list[Source], chosen: str, folder: Path, pretrained: str | None) -> list[str]:
    """``face_loso_<source>.onnx``: the chosen recipe fitted without each source, for ``liveness train fusion``."""
    paths = []
    for held in all_sources:
        train = [s for s in all_sources if s is not held]
        fitted = CANDIDATES[chosen](train)
        path = folder / f"face_loso_{held.name}.onnx"
        check = held.data.crops[held.data.has_face][:8].astype(np.float32)
        meta = _metadata(fitted.threshold, f"{VERSION}-without-{held.name}", [s.spec for s in train], chosen)
        export(fitted, path, meta, check, pretrained)
        paths.append(str(path))
    return paths


def run(args: argparse.Namespace) -> int:
    if not (args.nuaa or args.folders or args.videos):
        raise LivenessError("train face: give --nuaa ROOT, --folders ROOT and/or --videos ROOT")
    specs = sources(args.nuaa, args.folders, args.videos)
    all_sources = load_sources(specs, args.pretrained, args.limit)
    report = leave_one_source_out(all_sources)
    chosen = report["chosen"]
    fitted = CANDIDATES[chosen](all_sources)
    report.update({"version": VERSION, "threshold": fitted.threshold, "c": C, "crop": CROP.model_dump(mode="json"),
                   "sources": [s.name for s in all_sources],
                   "attack_types": {s.name: s.spec.attack for s in all_sources}})
    if not args.no_export:
        check = np.concatenate([s.data.crops[s.data.has_face][:8] for s in all_sources]).astype(np.float32)
        meta = _metadata(fitted.threshold, VERSION, specs, chosen)
        meta["liveness.loso_balanced_acer"] = f"{report['model']['balanced_acer']:.4f}"
        report["export_max_diff"] = export(fitted, Path(args.out), meta, check, args.pretrained)
        report["out"] = str(args.out)
    if args.fold_models:
        report["fold_models"] = write_fold_models(all_sources, chosen, Path(args.fold_models), args.pretrained)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=1))
    print(json.dumps(report) if args.json else _human(report))
    return 0


def _human(report: dict[str, Any]) -> str:
    lines = []
    for name, s in report["candidates"].items():
        types = ", ".join(f"{a} {v:.4f}" for a, v in s["per_type"].items())
        lines.append(f"{name}: balanced ACER {s['balanced_acer']:.4f} ({types}); worst vs the pair as is "
                     f"{s['worst_vs_pair']:+.4f} ({s['worst_vs_pair_source']}){', rejected' if s['rejected'] else ''}"
                     + (f"; per video ACER {s['per_video']['acer']:.4f}" if "per_video" in s else ""))
        lines += [f"  {r['source']:>16}  ACER {r['acer']:.4f} (pair as is {r['pair_acer']:.4f})  "
                  f"no face {r['no_face_live']}/{r['no_face_spoof']}" for r in s["per_source"]]
    lines.append(f"chosen: {report['chosen']}, shipped threshold {report['threshold']:.4f}"
                 + (f" -> {report['out']}" if "out" in report else ""))
    return "\n".join(lines)
