"""``liveness train face``: train the face liveness network across capture sessions, export ONNX.

Protocol (why: frames of one video are near-duplicates and lighting differs per session):
train on one capture session, validate on another, and the reverse. The validation session
is split by subject into a calibration half (early stopping, threshold) and a test half
(the reported figures), so no reported figure was used to choose anything. Training leaves
out people seen with one label only (else their face itself can become the cue), and with
``--unseen-people`` a fold also leaves out the people it reports on.

Without ``--val-session`` the shipped model is then trained on every session for the
folds' median best epoch count, and its threshold is the one with the lowest ACER on the
folds' pooled calibration halves; with ``--val-session S`` the fold that validates on S
is shipped, with the threshold chosen on S's calibration half.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from liveness.config import CropSettings
from liveness.errors import LivenessError
from liveness.pad_metrics import det_curve, pad_report
from models.face_data import FaceCrops, face_crops

log = logging.getLogger(__name__)

MODEL_NAME = "face-resnet-dog"
"""Base name in ``liveness.name``; an ensemble of k networks is ``<name>-x<k>``."""
MODEL_VERSION = "4"


def _torch():  # type: ignore[no-untyped-def]
    try:
        import torch
    except ImportError:
        raise LivenessError("training needs torch: pip install -e '.[train]'") from None
    torch.set_num_threads(1)
    return torch


@dataclass
class FoldResult:
    """One trained fold, scored on the test half of its validation session.

    The validation session is split by subject: the calibration half picks the epoch and
    the threshold, the test half (other people, same unseen session) is what is reported.
    """

    train: str
    val: str
    seed: int
    best_epoch: int
    threshold: float
    """Lowest-ACER threshold on the calibration half."""
    labels: np.ndarray
    scores: np.ndarray
    sequence: np.ndarray
    cal_labels: np.ndarray
    cal_scores: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)

    def figures(self) -> dict[str, float]:
        rep = pad_report(self.labels, self.scores, self.threshold)
        at_half = pad_report(self.labels, self.scores, 0.5)
        seq_ids = np.unique(self.sequence)
        seq_scores = np.array([self.scores[self.sequence == s].mean() for s in seq_ids])
        seq_labels = np.array([self.labels[self.sequence == s][0] for s in seq_ids])
        seq = pad_report(seq_labels, seq_scores, self.threshold)
        return {"apcer": rep.apcer, "bpcer": rep.bpcer, "acer": rep.acer, "auc": rep.auc, "eer": rep.eer,
                "acer_at_0.5": at_half.acer, "seq_auc": seq.auc, "seq_acer": seq.acer}


def calibration_split(data: FaceCrops) -> np.ndarray:
    """True for the calibration half of a validation set: every other subject (else sequence)."""
    keys = data.subjects if len(np.unique(data.subjects)) >= 2 else data.sequence.astype(str)
    cal = set(sorted(set(keys.tolist()))[::2])
    return np.array([k in cal for k in keys.tolist()])


def session_groups(data: FaceCrops) -> np.ndarray:
    """Fold of every frame: its capture session, else (folders) alternate sequences."""
    if len(np.unique(data.sessions)) >= 2:
        return data.sessions
    return np.where(data.sequence % 2 == 0, "even", "odd")


def predict(model, x: np.ndarray, batch: int = 256) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Spoof probability of uint8 NHWC crops with a torch model (eval mode)."""
    torch = _torch()
    from models.face_net import to_input

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(torch.sigmoid(model(torch.from_numpy(to_input(x[i:i + batch])))).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def train_one(train: FaceCrops, val: FaceCrops | None, net_cfg, aug_cfg, seed: int, epochs: int,
              patience: int = 5, batch: int = 64, desc: str = "train"):  # type: ignore[no-untyped-def]
    """Train one network; with ``val``, keep the weights of the epoch with the lowest val EER.

    Returns ``(model, best_epoch, history)``.
    """
    torch = _torch()
    from models.face_augment import augment
    from models.face_net import FaceNet, FourierHead, to_input

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = FaceNet(net_cfg)
    fourier = FourierHead(net_cfg.widths[2]) if aug_cfg.fourier > 0 else None
    params = list(model.parameters()) + (list(fourier.parameters()) if fourier else [])
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=5e-4)
    steps = epochs * max(1, -(-len(train.labels) // batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    x_all = torch.from_numpy(to_input(train.crops))
    y_all = torch.from_numpy(train.labels.astype(np.float32))
    best, best_epoch, best_state, history, bad = float("inf"), epochs, None, [], 0
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch")
    for epoch in bar:
        model.train()
        order = torch.randperm(len(y_all), generator=g)
        total = 0.0
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            if len(idx) < 2:
                continue
            x, y = augment(x_all[idx], y_all[idx], aug_cfg, g)
            logit, mid = model.forward_with_map(x)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, y)
            if fourier is not None:
                loss = loss + aug_cfg.fourier * torch.nn.functional.mse_loss(fourier(mid), fourier.target(x))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        row = {"epoch": epoch, "loss": total / len(y_all)}
        if val is not None:
            rep = pad_report(val.labels, predict(model, val.crops), 0.5)
            row.update(val_auc=rep.auc, val_eer=rep.eer, val_acer=rep.acer)
            if rep.eer < best - 1e-6:
                best, best_epoch, bad = rep.eer, epoch, 0
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
        history.append(row)
        bar.set_postfix({k: round(v, 4) for k, v in row.items() if k != "epoch"})
        if val is not None and bad >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, best_epoch, history


def train_members(train: FaceCrops, val: FaceCrops | None, net_cfg, aug_cfg, seed: int, epochs: int,
                  members: int, desc: str):  # type: ignore[no-untyped-def]
    """``members`` networks (seeds ``seed``, ``seed + 1000``, ...), averaged when more than one.

    Returns ``(model, median best epoch, history of the first member)``.
    """
    from models.face_net import Ensemble

    trained = [train_one(train, val, net_cfg, aug_cfg, seed + 1000 * i, epochs, desc=f"{desc} member {i}")
               for i in range(members)]
    best = int(statistics.median(t[1] for t in trained))
    if members == 1:
        return trained[0][0], best, trained[0][2]
    return Ensemble([t[0] for t in trained]).eval(), best, trained[0][2]


def best_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Threshold with the lowest ACER, midway between neighbouring scores (robust to ties)."""
    thresholds, apcer, bpcer = det_curve(labels, scores)
    i = int(np.argmin(apcer + bpcer))
    lo = thresholds[i - 1] if i > 0 else thresholds[i] - 1e-3
    hi = thresholds[i] if np.isfinite(thresholds[i]) else lo + 1e-3
    return float((lo + hi) / 2.0)


def export_onnx(model, path: Path, threshold: float, meta: dict[str, str], check: np.ndarray,
                crop_scale: float = 2.0, name: str = MODEL_NAME) -> float:  # type: ignore[no-untyped-def]
    """Write the model (sigmoid included, dynamic batch) and check onnxruntime agrees with torch.

    Returns the largest absolute difference on ``check`` (uint8 NHWC crops).
    """
    torch = _torch()
    import onnx
    import onnxruntime as ort

    from models.face_net import INPUT_SIZE, SpoofProbability, input_format, to_input

    wrapped = SpoofProbability(model).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(wrapped, (dummy,), str(tmp), input_names=["crops"], output_names=["spoof"],
                      dynamic_axes={"crops": {0: "batch"}, "spoof": {0: "batch"}}, opset_version=17,
                      dynamo=False)
    proto = onnx.load(str(tmp))
    props = {"liveness.threshold": f"{threshold:.6f}", "liveness.name": name,
             "liveness.version": MODEL_VERSION, "liveness.input": input_format(crop_scale), **meta}
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    x = to_input(check)
    got = sess.run(None, {"crops": x})[0]
    with torch.no_grad():
        want = wrapped(torch.from_numpy(x)).numpy()
    diff = float(np.abs(got - want).max()) if len(x) else 0.0
    if got.shape != want.shape or diff > 1e-4:
        tmp.unlink()
        raise LivenessError(f"ONNX export disagrees with torch: shape {got.shape} vs {want.shape}, max diff {diff:.2e}")
    tmp.replace(path)
    return diff


def _paired(data: FaceCrops, keep_unpaired: bool) -> FaceCrops:
    """The training crops without people seen only live or only as attacks (unless kept)."""
    if keep_unpaired:
        return data
    mask = data.paired_subjects()
    if not mask.all():
        dropped = sorted(set(data.subjects[~mask].tolist()))
        log.info("train face: %d crops of %s left out (seen with one label only)", int((~mask).sum()),
                 ", ".join(dropped))
    kept = data.subset(mask)
    if len(set(kept.labels.tolist())) < 2:
        raise LivenessError("train face: no person in the training data is seen both live and as an attack "
                            "(folders: name entries <subject>__…); pass --keep-unpaired to train on them anyway")
    return kept


def _summary(results: list[FoldResult]) -> dict[str, dict[str, float]]:
    """Mean and spread (population std, min, max) of each figure over every fold and seed."""
    figs = [r.figures() for r in results]
    out = {}
    for key in figs[0]:
        vals = [f[key] for f in figs]
        out[key] = {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals), "min": min(vals), "max": max(vals)}
    return out


def run(args: argparse.Namespace) -> int:
    from models.face_augment import AugmentConfig
    from models.face_net import NetConfig

    t0 = time.time()
    split = "all" if args.dataset == "nuaa" else None
    crop = CropSettings(scale=args.crop_scale)
    data = face_crops(args.dataset, args.root, split, crop, limit=args.limit)
    data = data.subset(data.has_face)
    groups = session_groups(data)
    names = sorted(set(groups.tolist()))
    if len(names) < 2:
        raise LivenessError("cross-session training needs at least two sessions (or two sequences)")
    if args.val_session and args.val_session not in names:
        raise LivenessError(f"--val-session {args.val_session!r} not in the data (sessions: {', '.join(names)})")
    net_cfg = NetConfig(norm=args.norm, dog=not args.no_dog, mixstyle=args.mixstyle)
    aug_cfg = AugmentConfig(photometric=not args.no_photometric, synthetic=args.synthetic, erase=args.erase,
                            fourier=args.fourier)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    vals = [args.val_session] if args.val_session else names
    results: list[FoldResult] = []
    shipped = None
    for seed in seeds:
        for val_name in vals:
            tr, va = data.subset(groups != val_name), data.subset(groups == val_name)
            cal_mask = calibration_split(va)
            cal, test = va.subset(cal_mask), va.subset(~cal_mask)
            if args.unseen_people:
                tr = tr.subset(~np.isin(tr.subjects, sorted(set(test.subjects.tolist()) - {""})))
                log.info("train face: fold %s trains on %s", val_name, ", ".join(sorted(set(tr.subjects.tolist()))))
            tr = _paired(tr, args.keep_unpaired)
            model, best_epoch, history = train_members(tr, cal, net_cfg, aug_cfg, seed, args.epochs, args.members,
                                                       desc=f"seed {seed} val {val_name}")
            cal_scores = predict(model, cal.crops)
            results.append(FoldResult("+".join(sorted(set(groups[groups != val_name]))), val_name, seed,
                                      best_epoch, best_threshold(cal.labels, cal_scores), test.labels,
                                      predict(model, test.crops), test.sequence, cal.labels, cal_scores, history))
            log.info("train face: seed %d val %s: %s", seed, val_name, results[-1].figures())
            if seed == args.seed and args.val_session:
                shipped = model
    summary = _summary(results)
    report = {"crop_scale": crop.scale, "net": net_cfg.to_dict(), "members": args.members,
              "paired_subjects": not args.keep_unpaired, "unseen_people": args.unseen_people,
              "augment": aug_cfg.to_dict(), "seeds": seeds, "epochs": args.epochs,
              "folds": [{"train": r.train, "val": r.val, "seed": r.seed, "best_epoch": r.best_epoch, **r.figures()}
                        for r in results], "summary": summary}
    mine = [r for r in results if r.seed == args.seed] or results[: len(vals)]
    threshold = best_threshold(np.concatenate([r.cal_labels for r in mine]),
                               np.concatenate([r.cal_scores for r in mine]))
    if not args.no_export:
        if shipped is None:
            epochs = int(statistics.median(r.best_epoch for r in mine))
            final = _paired(data, args.keep_unpaired)
            shipped, _, _ = train_members(final, None, net_cfg, aug_cfg, args.seed, epochs, args.members,
                                          desc="final, all sessions")
        rng = np.random.default_rng(args.seed)
        check = data.crops[rng.choice(len(data.labels), size=min(16, len(data.labels)), replace=False)]
        meta = {"liveness.net": json.dumps({**net_cfg.to_dict(), "members": args.members}),
                "liveness.augment": json.dumps(aug_cfg.to_dict()),
                "liveness.trained_on": f"{args.dataset} sessions {'+'.join(names)}",
                "liveness.seed": str(args.seed), "liveness.paired_subjects": str(not args.keep_unpaired).lower()}
        name = MODEL_NAME if args.members == 1 else f"{MODEL_NAME}-x{args.members}"
        diff = export_onnx(shipped, Path(args.out), threshold, meta, check, crop.scale, name)
        report.update(out=args.out, threshold=threshold, onnx_max_diff=diff)
        log.info("train face: wrote %s (threshold %.4f, onnx vs torch max diff %.1e)", args.out, threshold, diff)
    report["seconds"] = round(time.time() - t0, 1)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"summary": summary, "threshold": threshold, "out": None if args.no_export else args.out,
                      "seconds": report["seconds"]}))
    return 0
