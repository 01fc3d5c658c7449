"""The ``liveness`` command: one subcommand per service or tool.

Arguments are declared here, in one place; each subcommand runs ``run(args)`` of its module,
imported only when chosen so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Callable

from liveness import __version__
from liveness.errors import LivenessError
from liveness.redaction import redact_text

Adder = Callable[[argparse.ArgumentParser], None]


def _config(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--config", "-c", required=required and not os.environ.get("LIVENESS_CONFIG"), metavar="FILE",
                   default=os.environ.get("LIVENESS_CONFIG"),
                   help="YAML config (default: $LIVENESS_CONFIG, else built-in defaults)")


def _ingest(p: argparse.ArgumentParser) -> None:
    _config(p, required=True)
    p.add_argument("--camera", action="append", metavar="ID",
                   help="camera id to run (repeatable); default: every camera, one process each")
    p.add_argument("--fast", action="store_true", help="play video files as fast as possible")
    p.add_argument("--loop", action="store_true", help="restart video files at their end")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames (files)")


def _collect(p: argparse.ArgumentParser) -> None:
    _config(p, required=True)
    p.add_argument("--camera", required=True, metavar="ID", help="a camera of the config")
    p.add_argument("--label", required=True, choices=["live", "spoof"], help="what the camera sees while recording")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="dataset root: writes DIR/LABEL/NAME/, which must not exist or be empty")
    p.add_argument("--name", help="entry folder name (default: the camera id; SUBJECT__... names the subject)")
    p.add_argument("--seconds", type=float, help="stop after S seconds of frames (default: until ^C)")
    p.add_argument("--crops", action="store_true", help="write the face crops ingest publishes, not whole frames")


def _worker(p: argparse.ArgumentParser) -> None:
    _config(p)
    p.add_argument("--name", help="consumer name (default: host-pid)")
    p.add_argument("--model", help="ONNX model file (default: the committed artifact)")
    p.add_argument("--threads", type=int, help="onnxruntime threads")
    p.add_argument("--batch-size", type=int, help="most messages per batch")


def _fusion(p: argparse.ArgumentParser) -> None:
    _config(p)
    p.add_argument("--name", help="consumer name (default: host-pid)")


def _decisions(p: argparse.ArgumentParser) -> None:
    _config(p)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--follow", "-f", action="store_true", help="wait for new decisions")
    p.add_argument("--from-start", action="store_true", help="with --follow: print the past ones first")
    p.add_argument("--count", "-n", type=int, help="stop after N decisions")
    p.add_argument("--timeout", type=float, help="stop after S seconds")


def _status(p: argparse.ArgumentParser) -> None:
    _config(p)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--camera-grace", type=float, default=30.0, metavar="S",
                   help="a configured camera lost for longer than S seconds fails the status (default 30)")
    p.add_argument("--self", nargs="?", const="", metavar="NAME",
                   help="a probe: only the process NAME (without NAME: every process of this host, a pod); "
                        "exit 0 while its heartbeat lives")
    p.add_argument("--ready", action="store_true", help="with --self: exit 0 only if it says ready")


def _targets(p: argparse.ArgumentParser) -> None:
    _config(p)
    p.add_argument("--out", required=True, metavar="FILE.json", help="Prometheus file_sd file to write")
    p.add_argument("--every", type=float, metavar="S", help="keep rewriting it every S seconds (default: once)")


def _label(p: argparse.ArgumentParser) -> None:
    _config(p)
    p.add_argument("--camera", required=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--track", help="the track id (from `liveness decisions`)")
    which.add_argument("--recent", type=float, metavar="SECONDS",
                       help="every track the camera scored in the last SECONDS (commissioning: only live people "
                            "in view)")
    p.add_argument("label", choices=["live", "spoof"])


def _run(p: argparse.ArgumentParser) -> None:
    _config(p)
    p.add_argument("--face-workers", type=int, default=1, help="face worker processes")
    p.add_argument("--eye-workers", type=int, default=None, help=(
        "eye worker processes (default: 1 where a camera sends eye windows, ingest.eyes; else none)"))
    p.add_argument("--loop", action="store_true", help="loop video-file cameras")
    p.add_argument("--duration", type=float, help="stop after S seconds (default: until ^C)")
    p.add_argument("--preview", action="store_true", help="serve annotated frames as MJPEG on loopback")


def _replay(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=["nuaa", "folders"], required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--split", default=None, help="nuaa: train, all, session-01, ...; folders: a subfolder")
    p.add_argument("--port", type=int, default=8554, help="RTSP port")
    p.add_argument("--fps", type=float, default=15.0, help="frame rate of image sequences")
    p.add_argument("--limit", type=int, help="serve at most N sequences")
    p.add_argument("--loop", action="store_true", default=True, help="loop every sequence (always on)")
    p.add_argument("--write-config", required=True, metavar="FILE", help="camera config to write")
    p.add_argument("--base-config", metavar="FILE", help="merge the cameras into this config")


def _analyze(p: argparse.ArgumentParser) -> None:
    _config(p)
    p.add_argument("files", nargs="+", metavar="FILE", help="video clips (paths the jobs workers can read)")
    p.add_argument("--wait", action="store_true", help="wait and print each result as JSON")
    p.add_argument("--timeout", type=float, default=3600, help="with --wait: give up after S seconds")


def _jobs_worker(p: argparse.ArgumentParser) -> None:
    _config(p)
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")


def _demo(p: argparse.ArgumentParser) -> None:
    _config(p)
    p.add_argument("--dataset", choices=["nuaa", "folders"], required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--split", default=None)
    p.add_argument("--limit", type=int, default=6, help="cameras (sequences) to replay")
    p.add_argument("--port", type=int, default=8554, help="RTSP port of the replay")
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--face-workers", type=int, default=1)
    p.add_argument("--eye-workers", type=int, default=None, help="default: 1 where a camera has ingest.eyes, else none")


def _train_face(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nuaa", metavar="ROOT", help="NUAA root: each capture session is one source")
    p.add_argument("--folders", metavar="ROOT", help="folders root: each subfolder with live/ and spoof/ is one source")
    p.add_argument("--videos", metavar="ROOT", help="folders root of continuous videos: each subfolder is one source, "
                   "sampled at 5 frames a second")
    p.add_argument("--pretrained", metavar="DIR", help="MiniFASNet .safetensors (default ../shared/pretrained/minifasnet)")
    p.add_argument("--out", default="models/artifacts/face.onnx", help="ONNX file to write")
    p.add_argument("--limit", type=int, default=None, help="at most N frames per source (smoke runs)")
    p.add_argument("--no-export", action="store_true", help="leave-one-source-out figures only")
    p.add_argument("--fold-models", metavar="DIR", help="also write each source's model fitted without it "
                   "(face_loso_<source>.onnx, for train fusion)")
    p.add_argument("--report", metavar="FILE.json", help="write the figures here too")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")


def _train_eye(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=["nuaa", "folders", "seed-csv"], default="nuaa")
    p.add_argument("--root", required=True, help="dataset root (seed-csv: its folder or CSV file)")
    p.add_argument("--out", default="models/artifacts/eye.onnx", help="ONNX file to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="classifier (default: the best on validation)")
    p.add_argument("--train-session", help="nuaa: fit the exported model on this session only (a fold model)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _train_fusion(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nuaa", metavar="ROOT", help="NUAA root: each capture session is one source")
    p.add_argument("--folders", metavar="ROOT", help="folders root: each subfolder with live/ and spoof/ is one source")
    p.add_argument("--videos", metavar="ROOT", help="folders root of continuous videos: each subfolder is one source")
    p.add_argument("--fold-models", required=True, metavar="DIR",
                   help="face_loso_<source>.onnx (train face --fold-models) and eye_trNN.onnx (train eye --train-session)")
    p.add_argument("--out", default="models/artifacts/fusion.json", help="policy file to write")
    p.add_argument("--report", metavar="FILE.json", help="write the figures here too")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--workers", type=int, default=1, help="parallel processes")


def _evaluate(p: argparse.ArgumentParser) -> None:
    _config(p)  # fused: the fusion policy, its threshold overrides and the rule, as live fusion uses them
    p.add_argument("--model", choices=["face", "eye", "fused"], required=True)
    p.add_argument("--dataset", choices=["nuaa", "folders"], required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--split", default=None,
                   help="nuaa: train, test (the official protocol), all, session-01, ...; folders: a subfolder")
    p.add_argument("--json", action="store_true", help="last line of stdout is one JSON object")
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.add_argument("--plot", metavar="FILE.png", help="draw the DET curve")
    p.add_argument("--face-model", help="face ONNX file (default: committed)")
    p.add_argument("--eye-model", help=(
        "eye ONNX file (default: eye_worker.model, else a checkout's models/artifacts/eye.onnx; not shipped, "
        "research use only); fused uses it only with ingest.eyes"))
    p.add_argument("--calibrate", choices=["none", "subjects"], default="none",
                   help="fused: calibrate each session (camera) with the live sequences of half its subjects, "
                        "report the other half, both ways")


def _bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["ingest", "face", "eye", "e2e"])
    p.add_argument("--source", help="ingest: video file to decode and ingest")
    p.add_argument("--frames", type=int, default=600, help="ingest: frames to measure")
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--model", help="face/eye: ONNX file (default: the committed artifact)")
    p.add_argument("--face-workers", type=int, default=1, help="e2e: face worker processes")
    p.add_argument("--eye-workers", type=int, default=None,
                   help="e2e: eye worker processes (default: 1 where ingest.eyes is on, else none)")
    p.add_argument("--root", help="e2e: NUAA root (default ../shared/data/nuaa-train)")
    _config(p)


COMMANDS: dict[str, tuple[str, str, Adder]] = {
    "run": ("liveness.app.run", "run everything: cameras, worker pools, fusion (demo without --config)", _run),
    "demo": ("liveness.app.demo", "a labelled dataset through the whole pipeline, as a live table", _demo),
    "ingest": ("liveness.ingest.service", "read cameras, publish faces and eye ratios to Redis", _ingest),
    "collect": ("liveness.ingest.collect", "record a labelled entry from a camera: frames or face crops, and eye ratios "
                "(the only command that writes faces to disk; exit 1 when the camera is lost mid-way)", _collect),
    "face-worker": ("liveness.workers.face", "score face crops with the face model", _worker),
    "eye-worker": ("liveness.workers.eye", "score eye windows with the eye model", _worker),
    "fusion": ("liveness.fusion.service", "join scores per track and decide live/spoof", _fusion),
    "replay": ("liveness.app.replay", "serve a labelled dataset as RTSP cameras, write their config", _replay),
    "analyze": ("liveness.workers.jobs:run_analyze", "queue clips for analysis (rq jobs)", _analyze),
    "jobs-worker": ("liveness.workers.jobs:run_worker", "run queued clip jobs", _jobs_worker),
    "jobs": ("liveness.workers.jobs:run_list", "list clip jobs and their results", _config),
    "decisions": ("liveness.fusion.decisions", "print decisions (JSON lines with --json)", _decisions),
    "status": ("liveness.app.status", "every service process, from its heartbeat: state, host, metrics port "
               "(exit 1 if one went silent or a configured camera does not deliver)", _status),
    "targets": ("liveness.app.targets", "Prometheus file_sd targets from the heartbeats: every process that beats, "
                "where it serves its metrics", _targets),
    "label": ("liveness.fusion.label", "operator feedback: the ground truth of a track", _label),
    "train-face": ("liveness.models.train_face", "choose the face model leaving each source out in turn, and export it (extra 'train')", _train_face),
    "train-eye": ("liveness.models.train_eye", "train and export the eye model", _train_eye),
    "train-fusion": ("liveness.models.calibrate_fusion", "choose the fusion policy, leaving each source out in turn", _train_fusion),
    "evaluate": ("liveness.models.evaluate", "ISO/IEC 30107-3 report of a model on a labelled dataset", _evaluate),
    "bench": ("liveness.app.bench", "benchmarks with JSON output", _bench),
}
"""name -> (module with run(args), help, argument adder). ``train face`` maps to ``train-face``."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liveness", description="Face liveness pipeline for multi-camera installations.")
    parser.add_argument("--version", action="version", version=f"liveness {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser("train", help="train and export a model").add_subparsers(dest="command", required=True)
    for name, (module, help_text, adder) in COMMANDS.items():
        if name.startswith("train-"):
            p = train.add_parser(name.removeprefix("train-"), help=help_text, description=help_text)
        else:
            p = sub.add_parser(name, help=help_text, description=help_text)
        adder(p)
        p.set_defaults(module=module, command=name)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; ^C at any moment (imports take seconds on a busy machine) ends it quietly."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        return 130


def _main(argv: list[str]) -> int:
    import redis  # here, not at the top: ^C during this slow import is ^C in main

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module_name, _, func = args.module.partition(":")
    try:
        module = importlib.import_module(module_name)
        return int(getattr(module, func or "run")(args) or 0)
    except LivenessError as e:
        print(f"liveness {args.command}: error: {redact_text(str(e))}", file=sys.stderr)
        return 2
    except redis.RedisError as e:  # e.g. refused credentials or commands: a clear line, not a traceback
        print(f"liveness {args.command}: Redis error: {type(e).__name__}: {redact_text(str(e))}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
