"""``liveness train fusion``: choose fusion's policy on sources the models did not see.

The same sources as ``liveness train face``: each NUAA capture session (prints), each webcam
room and each video collection (screen replays). Every sequence is scored by a face model
fitted without its source (a fold model, written to ``--fold-models``), so every score is out
of source. A policy is chosen on all sources but one and reported on that one, each in turn;
the shipped policy is chosen on all of them. The objective: the lowest mean over the two attack
types of each type's mean ACER (prints weigh as much as screens, however many sources each
has), then the fewest attacks accepted, then the quickest live decision.

Sequences: NUAA's are videos (one per subject, glasses, position and session). A webcam room
holds 150 frames per class spread evenly over one recording, so consecutive frames are
seconds apart: they are cut into slow sequences of ``ROOM_CHUNK`` frames, played at 10 fps.
Their eye windows would sample lids seconds apart, which says nothing of a blink, so rooms
carry face evidence only; eye evidence is weighed on NUAA, with eye models trained on the
other capture session (``DIR/eye_trNN.onnx`` from ``liveness train eye --train-session NN``),
and on the video collections (continuous videos, one sequence each; eye model of session 01).
A collection's videos are its calibration halves: every other video of the collection.

Calibration (``liveness label --recent``) only ever makes a camera stricter: its neutral
point is its live faces' median plus the margin, but never above the uncalibrated one
(``liveness.evidence.face_neutral``). So it cannot accept more attacks than the uncalibrated
policy, whatever its labels; the report shows both on every source (half of each source's
live sequences calibrate, the other half and the attacks are reported, then the reverse).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
from pathlib import Path
from typing import Any

from liveness.errors import LivenessError
from liveness.evidence import LLR_CLIP, Policy
from liveness.models.datasets import Sequence, folders, nuaa
from liveness.models.evaluate_fused import SequenceResult, analyze, report, subject_half_baselines
from liveness.models.train_face import balanced, sources

log = logging.getLogger(__name__)

ROOM_CHUNK = 15
"""Frames of a webcam room per slow sequence (1.5 s at 10 fps)."""

ROOM_FPS = 10.0

GRID: dict[str, list[float]] = {
    "face_threshold": [0.5, 0.65, 0.8, 0.9, 0.95, 0.98],
    "face_weight": [0.25, 0.5],
    "face_cap": [4, 12],
    "eye_weight": [0.0, 1.0, 2.0],
    "spoof_at": [1.5, 3.0],
    "live_at": [2.0, 4.0],
}
"""Policies tried: every combination (288), with ``FIXED``; the rest of ``Policy`` keeps its defaults."""

FIXED: dict[str, float] = {"moment_at": LLR_CLIP}
"""Set, not searched. A track whose face evidence stands at its ceiling on three crops in a row is
spoof, whatever the rest says: no live sequence of the sources comes within 1.4 of it, and a replay that
looks live on most frames may betray itself on a few. Leaving a source out cannot choose it: only
one source's replay needs it, and there a lower ``spoof_at`` had decided spoof before its mean
drifted live (``models/artifacts/fusion.md``)."""

MARGINS = [3.0, 5.0, 8.0, 12.0]
"""Calibrated cameras' neutral point above their live median (log-odds), chosen once the rest is."""


def room_sequences(root: str, room: str) -> list[Sequence]:
    """A room's frames of each class, in recording order, cut into slow sequences."""
    out = []
    for label in ("live", "spoof"):
        frames = [p for s in folders(root, room).sequences if s.label == label for p in s.frames]
        for k in range(0, len(frames) - ROOM_CHUNK + 1, ROOM_CHUNK):
            out.append(Sequence(f"{room}-{label}-{k // ROOM_CHUNK:02d}", label, frames[k:k + ROOM_CHUNK],
                                fps=ROOM_FPS, subject=f"{room}-{'ab'[(k // ROOM_CHUNK) % 2]}", session=room))
    return out


def video_sequences(root: str, source: str) -> list[Sequence]:
    """A collection's videos, one sequence each; each video is its own subject, so calibration halves alternate."""
    seqs = folders(root, source).sequences
    for i, seq in enumerate(seqs):
        seq.session, seq.subject = source, f"{source}-{i:02d}"
    return seqs


def score_sources(nuaa_root: str | None, folders_root: str | None, videos_root: str | None, folds: Path,
                  workers: int) -> tuple[dict[str, list[SequenceResult]], dict[str, str]]:
    """Every source's sequences through the offline pipeline with that source's fold models, and each
    source's attack type."""
    out: dict[str, list[SequenceResult]] = {}
    attack: dict[str, str] = {}
    for spec in sources(nuaa_root, folders_root, videos_root):
        name, kind, split = spec.name, spec.kind, spec.split
        face = folds / f"face_loso_{name}.onnx"
        if kind == "nuaa":
            session = split.removeprefix("session-")
            others = [p for p in sorted(folds.glob("eye_tr*.onnx")) if p.stem != f"eye_tr{session}"]
            if not others:
                raise LivenessError(f"{folds}: no eye model trained without session {session} (eye_trNN.onnx)")
            eye, seqs = others[0], nuaa(spec.root, split).sequences
        elif spec.video_rate:
            eye, seqs = folds / "eye_tr01.onnx", video_sequences(spec.root, split)
        else:
            eye, seqs = folds / "eye_tr01.onnx", room_sequences(spec.root, split)
        if not face.is_file() or not eye.is_file():
            raise LivenessError(f"{folds}: fold model {face.name} or {eye.name} missing (liveness train face "
                                "--fold-models DIR; liveness train eye --train-session NN)")
        results = analyze(seqs, str(face), str(eye), Policy(), workers=workers)
        if kind == "folders" and not spec.video_rate:
            for r in results:
                if r.track is not None:
                    r.track.events = [e for e in r.track.events if e.kind == "face"]
        out[name], attack[name] = results, spec.attack
        log.info("train fusion: %s, %d sequences", name, len(results))
    return out, attack


def figures(scored: dict[str, list[SequenceResult]], policy: Policy, calibrated: bool = False) -> dict[str, dict[str, Any]]:
    """Per source: APCER, BPCER, ACER, attacks accepted, undecided, median time to a live decision."""
    out = {}
    for name, results in scored.items():
        rep = report(results, policy, baselines=subject_half_baselines(results, policy) if calibrated else None)[0]
        out[name] = {k: rep[k] for k in ("n_live", "n_spoof", "apcer", "bpcer", "undecided",
                                          "time_to_decision_live_median_s")}
        # a source of one class (a collection of live videos only) counts that class's error rate
        out[name]["acer"] = statistics.fmean(rep[k] for k in ("apcer", "bpcer") if rep[k] is not None)
        out[name]["attacks_accepted"] = round((rep["apcer"] or 0.0) * rep["n_spoof"])
    return out


def cost(per_source: dict[str, dict[str, Any]], attack: dict[str, str]) -> tuple[float, float, float]:
    """Type-balanced mean ACER (``attack``: each source's attack type), then mean APCER, then the median
    time to a live decision."""
    acer = balanced({s: f["acer"] for s, f in per_source.items()}, attack)[0]
    apcer = statistics.fmean(f["apcer"] or 0.0 for f in per_source.values())
    ttd = [f["time_to_decision_live_median_s"] for f in per_source.values() if f["time_to_decision_live_median_s"]]
    return round(acer, 6), round(apcer, 6), statistics.median(ttd) if ttd else 99.0


def grid() -> list[Policy]:
    keys = list(GRID)
    return [Policy(**dict(zip(keys, values)), **FIXED) for values in itertools.product(*(GRID[k] for k in keys))]


def choose_margin(scored: dict[str, list[SequenceResult]], policy: Policy, sources: list[str],
                  attack: dict[str, str]) -> Policy:
    """``policy`` with the margin that serves calibrated cameras of ``sources`` best."""
    tried = [policy.model_copy(update={"face_margin": m}) for m in MARGINS]
    return min(tried, key=lambda p: cost(figures({s: scored[s] for s in sources}, p, calibrated=True), attack))


def choose(table: list[dict[str, dict[str, Any]]], sources: list[str], attack: dict[str, str]) -> int:
    """Index of the best policy on ``sources``, from every policy's per-source figures."""
    return min(range(len(table)), key=lambda i: cost({s: table[i][s] for s in sources}, attack))


def _summary(per_source: dict[str, dict[str, Any]], attack: dict[str, str]) -> dict[str, Any]:
    worst = max(per_source, key=lambda s: per_source[s]["acer"])
    mean, per_type = balanced({s: f["acer"] for s, f in per_source.items()}, attack)
    return {"mean_acer": statistics.fmean(f["acer"] for f in per_source.values()), "worst_acer": per_source[worst]["acer"],
            "worst_source": worst, "attacks_accepted": sum(f["attacks_accepted"] for f in per_source.values()),
            "balanced_acer": mean, "per_type": per_type, "per_source": per_source}


def run(args: argparse.Namespace) -> int:
    folds = Path(args.fold_models)
    scored, attack = score_sources(args.nuaa, args.folders, args.videos, folds, args.workers)
    policies = grid()
    table = [figures(scored, p) for p in policies]
    held_out: dict[str, dict[str, Any]] = {}
    held_out_calibrated: dict[str, dict[str, Any]] = {}
    for held in scored:
        others = [s for s in scored if s != held]
        policy = policies[choose(table, others, attack)]
        held_out[held] = table[policies.index(policy)][held]
        policy = choose_margin(scored, policy, others, attack)
        held_out_calibrated[held] = figures({held: scored[held]}, policy, calibrated=True)[held]
        log.info("train fusion: %s left out: ACER %.4f", held, held_out[held]["acer"])
    final = choose_margin(scored, policies[choose(table, list(scored), attack)], list(scored), attack)
    uncal, cal = figures(scored, final), figures(scored, final, calibrated=True)
    never_more = all(cal[s]["attacks_accepted"] <= uncal[s]["attacks_accepted"] for s in scored)
    result = {"protocol": "leave-one-source-out", "unit": "sequence", "room_chunk_frames": ROOM_CHUNK,
              "held_out": _summary(held_out, attack), "held_out_calibrated": _summary(held_out_calibrated, attack),
              "shipped_policy": final.model_dump(), "shipped_on_sources": _summary(uncal, attack),
              "shipped_on_sources_calibrated": _summary(cal, attack),
              "calibration_never_accepts_more_attacks": never_more,
              "time_to_live_decision_median_s": cost(uncal, attack)[2]}
    Path(args.out).write_text(json.dumps(final.model_dump(), indent=2) + "\n")
    if args.report:
        Path(args.report).write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(json.dumps(result, default=float) if args.json else _human(result))
    return 0


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"  # a source of one class has no rate of the other


def _human(result: dict[str, Any]) -> str:
    lines = []
    for key in ("held_out", "held_out_calibrated", "shipped_on_sources", "shipped_on_sources_calibrated"):
        s = result[key]
        lines.append(f"{key}: mean ACER {s['mean_acer']:.4f}, worst {s['worst_acer']:.4f} ({s['worst_source']}), "
                     f"attacks accepted {s['attacks_accepted']}")
        lines += [f"  {name:>16}  ACER {f['acer']:.4f}  APCER {_rate(f['apcer'])}  BPCER {_rate(f['bpcer'])}  "
                  f"undecided {f['undecided']}  live in {f['time_to_decision_live_median_s']} s"
                  for name, f in s["per_source"].items()]
    lines.append(f"shipped policy: {json.dumps(result['shipped_policy'])}")
    return "\n".join(lines)
