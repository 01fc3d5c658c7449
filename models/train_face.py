"""``liveness train face``: fit the face model's head, leaving whole sources out to measure it.

A source is one capture session of NUAA or one webcam room: its own people, light and
camera. Every figure is measured on a source the model did not see: for each source in turn
the head and the threshold are fitted on all the others and the left-out one is scored.
The shipped model is then fitted on every source with the same recipe. The pretrained pair
with its authors' fixed rule is reported beside it, as the baseline to beat.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from liveness.config import CropSettings
from liveness.errors import LivenessError
from liveness.models.datasets import DatasetError
from liveness.models.face_data import FaceCrops, face_crops
from liveness.pad_metrics import error_rates, pad_report

log = logging.getLogger(__name__)

C = 1000.0
"""Inverse regularisation of the head, chosen on the left-out sources (0.01-10000 tried)."""

CROP = CropSettings()
"""The views as ingest cuts them by default: the face box made taller, as the pretrained networks'
authors cut theirs (chosen on the left-out sources against the box as the detector finds it)."""

VERSION = "5"


@dataclass
class Source:
    """One source's frames: embeddings, labels, which frames had a face, and the pair's own live probability."""

    name: str
    data: FaceCrops
    emb: np.ndarray
    pair_live: np.ndarray


def sources(nuaa: str | None, folders: str | None, limit: int | None = None) -> list[tuple[str, str, str]]:
    """``(name, kind, split)`` of every source: each NUAA capture session, each room folder."""
    out: list[tuple[str, str, str]] = []
    if nuaa:
        sessions = sorted({p.stem.split("_")[3] for p in Path(nuaa).glob("ClientRaw/*/*.jpg") if p.stem.count("_") == 4})
        if not sessions:
            raise DatasetError(f"{nuaa}: no NUAA frames under ClientRaw/")
        out += [(f"nuaa-{s}", "nuaa", f"session-{s}") for s in sessions]
    if folders:
        rooms = sorted(p.name for p in Path(folders).iterdir() if (p / "live").is_dir() and (p / "spoof").is_dir())
        if not rooms:
            raise DatasetError(f"{folders}: no source folders with live/ and spoof/")
        out += [(room, "folders", room) for room in rooms]
    if len(out) < 3:
        raise LivenessError(f"leave-one-source-out needs at least 3 sources, got {len(out)}")
    return out


def load_sources(nuaa: str | None, folders: str | None, pretrained: str | None, limit: int | None) -> list[Source]:
    """Crops of every source through the shared face pipeline (cached), and their embeddings."""
    from liveness.models.face_model import PRETRAINED, embeddings, pretrained_pair

    nets = pretrained_pair(pretrained or PRETRAINED)
    out = []
    for name, kind, split in sources(nuaa, folders):
        root = nuaa if kind == "nuaa" else folders
        data = face_crops(kind, root, split, CROP, limit)  # type: ignore[arg-type]
        emb = embeddings(nets, data.crops)
        live = np.stack([_softmax(emb[:, 128 * i:128 * (i + 1)] @ net.prob.weight.detach().numpy().T)[:, 1]
                         for i, net in enumerate(nets)], 1).mean(1)
        out.append(Source(name, data, emb, live))
        log.info("train face: %s, %d frames", name, len(data.labels))
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def fit_head(train: list[Source]) -> tuple[np.ndarray, float]:
    """Logistic regression on the embeddings; each source and each class weighs the same."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([s.emb for s in train])
    y = np.concatenate([s.data.labels for s in train])
    w = np.concatenate([np.where(s.data.labels == 1, 1.0 / max(1, (s.data.labels == 1).sum()),
                                 1.0 / max(1, (s.data.labels == 0).sum())) for s in train])
    keep = np.concatenate([s.data.has_face for s in train])
    if len(np.unique(y[keep])) < 2:
        raise LivenessError("train face: the training sources need both live faces and attacks")
    clf = LogisticRegression(C=C, max_iter=5000).fit(x[keep], y[keep], sample_weight=w[keep] * keep.sum() / w[keep].sum())
    return clf.coef_[0], float(clf.intercept_[0])


def head_scores(source: Source, weight: np.ndarray, bias: float) -> np.ndarray:
    """Spoof probability of every frame; a frame without a face is rejected (1.0)."""
    z = np.clip(source.emb @ weight + bias, -60.0, 60.0)
    return np.where(source.data.has_face, 1.0 / (1.0 + np.exp(-z)), 1.0)


def pick_threshold(scored: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The threshold with the lowest mean ACER over the sources given (each source weighs the same)."""
    pooled = np.concatenate([s for s, _ in scored])
    candidates = np.unique(np.quantile(pooled, np.linspace(0.0, 1.0, 801)))

    def mean_acer(t: float) -> float:
        return float(np.mean([sum(error_rates(y, s, t)) / 2 for s, y in scored]))

    return float(min(candidates, key=lambda t: (mean_acer(t), abs(t - 0.5))))


def source_report(source: Source, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    rep = pad_report(source.data.labels, scores, threshold).to_dict()
    row = {"source": source.name, **{k: rep[k] for k in ("n_live", "n_spoof", "apcer", "bpcer", "acer", "auc")}}
    row["threshold"] = threshold
    row["no_face_live"] = int((~source.data.has_face & (source.data.labels == 0)).sum())
    row["no_face_spoof"] = int((~source.data.has_face & (source.data.labels == 1)).sum())
    return row


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    worst = max(rows, key=lambda r: r["acer"])
    return {"mean_acer": float(np.mean([r["acer"] for r in rows])), "mean_apcer": float(np.mean([r["apcer"] for r in rows])),
            "mean_bpcer": float(np.mean([r["bpcer"] for r in rows])), "worst_acer": worst["acer"],
            "worst_source": worst["source"], "per_source": rows}


def leave_one_source_out(all_sources: list[Source]) -> dict[str, Any]:
    """The model's figures with each source left out in turn, and the pretrained pair's fixed rule."""
    rows, baseline = [], []
    for held in all_sources:
        train = [s for s in all_sources if s is not held]
        weight, bias = fit_head(train)
        threshold = pick_threshold([(head_scores(s, weight, bias), s.data.labels) for s in train])
        rows.append(source_report(held, head_scores(held, weight, bias), threshold))
        pair = np.where(held.data.has_face, 1.0 - held.pair_live, 1.0)
        baseline.append(source_report(held, pair, 0.5))
        log.info("train face: %s left out: ACER %.4f (pair as is %.4f)", held.name, rows[-1]["acer"], baseline[-1]["acer"])
    return {"protocol": "leave-one-source-out", "unit": "frame", "model": summary(rows), "pretrained_pair": summary(baseline)}


def write_fold_models(all_sources: list[Source], folder: Path, pretrained: str | None) -> list[str]:
    """``face_loso_<source>.onnx``: each source's model fitted without it, for ``liveness train fusion``."""
    from liveness.models.face_model import PRETRAINED, FaceModel, export_onnx, pretrained_pair

    paths = []
    for held in all_sources:
        train = [s for s in all_sources if s is not held]
        weight, bias = fit_head(train)
        threshold = pick_threshold([(head_scores(s, weight, bias), s.data.labels) for s in train])
        path = folder / f"face_loso_{held.name}.onnx"
        check = held.data.crops[held.data.has_face][:8].astype(np.float32)
        export_onnx(FaceModel(pretrained_pair(pretrained or PRETRAINED), weight, bias), path,
                    {"liveness.name": "face", "liveness.version": f"{VERSION}-without-{held.name}",
                     "liveness.threshold": repr(threshold), "liveness.views": json.dumps(list(CROP.views))}, check)
        paths.append(str(path))
    return paths


def run(args: argparse.Namespace) -> int:
    if not (args.nuaa or args.folders):
        raise LivenessError("train face: give --nuaa ROOT and/or --folders ROOT")
    all_sources = load_sources(args.nuaa, args.folders, args.pretrained, args.limit)
    report = leave_one_source_out(all_sources)
    weight, bias = fit_head(all_sources)
    threshold = pick_threshold([(head_scores(s, weight, bias), s.data.labels) for s in all_sources])
    report.update({"version": VERSION, "threshold": threshold, "c": C, "crop": CROP.model_dump(mode="json"),
                   "sources": [s.name for s in all_sources]})
    if not args.no_export:
        from liveness.models.face_model import FaceModel, export_onnx, pretrained_pair

        model = FaceModel(pretrained_pair(args.pretrained) if args.pretrained else pretrained_pair(), weight, bias)
        check = np.concatenate([s.data.crops[s.data.has_face][:8] for s in all_sources]).astype(np.float32)
        meta = {"liveness.name": "face", "liveness.version": VERSION, "liveness.threshold": repr(threshold),
                "liveness.input": "BGR 0..255, (N, 80, 160, 3): the 2.7x and 4.0x views side by side",
                "liveness.views": json.dumps(list(CROP.views)),
                "liveness.crop": CROP.model_dump_json(),
                "liveness.sources": ",".join(s.name for s in all_sources),
                "liveness.loso_mean_acer": f"{report['model']['mean_acer']:.4f}"}
        report["export_max_diff"] = export_onnx(model, args.out, meta, check)
        report["out"] = str(args.out)
    if args.fold_models:
        report["fold_models"] = write_fold_models(all_sources, Path(args.fold_models), args.pretrained)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=1))
    print(json.dumps(report) if args.json else _human(report))
    return 0


def _human(report: dict[str, Any]) -> str:
    lines = []
    for who in ("model", "pretrained_pair"):
        s = report[who]
        lines.append(f"{who}: mean ACER {s['mean_acer']:.4f}, worst {s['worst_acer']:.4f} ({s['worst_source']})")
        lines += [f"  {r['source']:>16}  ACER {r['acer']:.4f}  APCER {r['apcer']:.4f}  BPCER {r['bpcer']:.4f}  "
                  f"no face {r['no_face_live']}/{r['no_face_spoof']}" for r in s["per_source"]]
    lines.append(f"shipped threshold {report['threshold']:.4f}" + (f" -> {report['out']}" if "out" in report else ""))
    return "\n".join(lines)
