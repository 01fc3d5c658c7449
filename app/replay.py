"""``liveness replay``: a labelled dataset served as RTSP cameras, one per sequence or video.

Each sequence becomes a looping real-time H.264 stream from GStreamer's RTSP server (run by
the system Python, which has the ``gi`` bindings), and a camera config with every camera's
ground-truth label is written, so an installation (or a test) can be run against it.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from liveness.errors import LivenessError
from liveness.video import video_fps

if TYPE_CHECKING:  # imported where used: the datasets module loads what serving does not need
    from liveness.models.datasets import Sequence

log = logging.getLogger(__name__)

SYSTEM_PYTHON = os.environ.get("LIVENESS_SYSTEM_PYTHON", "/usr/bin/python3")
"""A Python with GStreamer's ``gi`` bindings (Debian: python3-gi, gir1.2-gst-rtsp-server-1.0)."""

SERVER = Path(__file__).with_name("rtsp_server.py")

KEYFRAME_EVERY_S = 1.0
"""Seconds between keyframes of the replayed streams (what a camera's GOP would be)."""


def mount_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[:60]


def stage_frames(sequence: Sequence, dest: Path, fps: float) -> tuple[str, float]:
    """The sequence encoded once to H.264, one access unit per file, numbered from 0; and its rate.

    The RTSP server loops these files without re-encoding, so serving N cameras costs almost
    nothing: a real camera encodes on its own hardware, and a benchmark on this machine should
    measure the pipeline, not the camera simulator. Image sequences play at ``fps``; a video at its
    own rate, upright (phones record rotation as metadata) and at constant rate. An odd width or
    height loses its last column or row (4:2:0 needs even sizes), nothing is resampled. Frame 0 is a
    keyframe and every keyframe repeats SPS/PPS, so the loop restarts cleanly and a client can join
    at any keyframe. Quality is constant (CRF), not a bitrate, so large frames are not smeared;
    no B-frames, so the server can stamp each unit in file order.
    """
    if shutil.which("ffmpeg") is None:
        raise LivenessError("replay: needs ffmpeg to encode the cameras (apt-get install ffmpeg)")
    dest.mkdir(parents=True)
    if sequence.video is None:
        for i, frame in enumerate(sequence.frames):
            (dest / f"{i:05d}.jpg").symlink_to(frame.resolve())
        source = ["-framerate", f"{fps}", "-start_number", "0", "-i", str(dest / "%05d.jpg")]
        rate = fps
    else:
        source = ["-i", str(sequence.video)]
        rate = video_fps(sequence.video)
    subprocess.run(["ffmpeg", "-loglevel", "error", *source, "-vf", f"fps={rate},crop=trunc(iw/2)*2:trunc(ih/2)*2:0:0",
                    "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
                    "-g", str(max(1, round(rate * KEYFRAME_EVERY_S))), "-bf", "0", "-crf", "18",
                    "-x264-params", "repeat-headers=1", "-f", "image2", "-start_number", "0", str(dest / "%05d.h264")],
                   check=True)
    return str(dest / "%05d.h264"), rate


class Replay:
    """The RTSP server process and the camera list it serves."""

    def __init__(self, sequences: list[Sequence], port: int, fps: float, workdir: Path,
                 host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.cameras: list[dict[str, object]] = []
        mounts = []
        for seq in sequences:
            name = mount_name(seq.name)
            pattern, rate = stage_frames(seq, workdir / name, fps)
            mounts.append(f"{name}={pattern}@{rate}")
            self.cameras.append({"id": name, "source": f"rtsp://{host}:{port}/{name}", "label": seq.label})
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), "--port", str(port), "--address", host, *mounts],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if "ready" not in line:
            self.close()
            raise LivenessError(f"replay: the RTSP server did not start: {line.strip() or 'no output'} "
                                "(needs the system python3 with GStreamer's gi bindings)")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def interleave(sequences: list[Sequence]) -> list[Sequence]:
    """Alternate live and spoof sequences, so ``--limit`` serves both labels."""
    live = [s for s in sequences if s.label == "live"]
    spoof = [s for s in sequences if s.label == "spoof"]
    out = []
    for i in range(max(len(live), len(spoof))):
        out += [group[i] for group in (live, spoof) if i < len(group)]
    return out


def write_config(cameras: list[dict[str, object]], path: Path, base: Path | None) -> None:
    """A camera config for the replayed cameras, merged into ``base`` when given."""
    data = yaml.safe_load(base.read_text()) if base else {}
    data = data or {}
    data["cameras"] = cameras
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def run(args: argparse.Namespace) -> int:
    from liveness.models.datasets import load

    dataset = load(args.dataset, args.root, args.split)
    sequences = interleave(dataset.sequences)
    sequences = sequences[: args.limit] if args.limit else sequences
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="liveness-replay-")))
        replay = Replay(sequences, args.port, args.fps, workdir)
        stack.callback(replay.close)
        write_config(replay.cameras, Path(args.write_config), Path(args.base_config) if args.base_config else None)
        log.info("replay: %d cameras on rtsp://127.0.0.1:%d/, config in %s", len(replay.cameras), args.port,
                 args.write_config)
        print(f"replay: serving {len(replay.cameras)} cameras; config written to {args.write_config}", flush=True)
        while not stop.wait(0.5):
            if replay.proc.poll() is not None:
                raise LivenessError(f"replay: the RTSP server exited with {replay.proc.returncode}")
    return 0
