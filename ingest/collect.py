"""``liveness collect``: record one labelled entry from a configured camera, for evaluation and training.

It is the only command that writes faces to disk, and only when an operator runs it. The entry
is ``OUT/<label>/<name>/`` (name: the camera id unless given), the folders layout
``liveness evaluate --dataset folders`` and ``liveness train`` read: numbered frames, or the
face crops ingest would publish (``--crops``), and ``eyes.csv``, the eye ratios of every recorded
frame (empty where no face was found). The camera is read by ingest's own capture code, at the
rate the folders reader assumes for frames without timestamps, so eye windows keep their timing.
A camera lost mid-way keeps what was recorded.
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2

from liveness.config import CameraSettings, load_settings
from liveness.defaults import SEQUENCE_FPS
from liveness.errors import LivenessError
from liveness.face import FacePipeline
from liveness.ingest.capture import FileReader, LatestFrameReader, describe, is_live, open_capture
from liveness.lifecycle import stop_on_signals
from liveness.pacing import FramePacer

log = logging.getLogger(__name__)

EYES_FILE = "eyes.csv"
"""Sidecar of an entry: ``frame,time_s,left,right``, one row per recorded frame."""

JPEG_QUALITY = 95
"""Recorded frames are evaluated and trained on later: little loss on top of the camera's own."""

RECORD_FPS = SEQUENCE_FPS
"""Frames per second recorded: what ``--dataset folders`` assumes when it reads a folder of frames."""

RATE_TOLERANCE = 0.1
"""Relative shortfall of the recorded rate beyond which the entry's eye timing is reported as off."""

ENTRY_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$")


@dataclass
class Collected:
    """What one collect wrote: frames recorded, frames with a face, and the span they cover."""

    entry: Path
    frames: int = 0
    faces: int = 0
    seconds: float = 0.0
    lost: bool = False


def entry_folder(out: Path, label: str, name: str) -> Path:
    """The entry to write, refused (before anything is written) where it would overwrite."""
    if not ENTRY_NAME.match(name):
        raise LivenessError(f"entry name {name!r}: letters, digits, '_', '-' and '.' only, not first (at most 100)")
    entry = out / label / name
    for path in (out, out / label):
        if path.exists() and not path.is_dir():
            raise LivenessError(f"{path}: exists and is not a folder; nothing written")
    if entry.exists() and (not entry.is_dir() or any(entry.iterdir())):
        raise LivenessError(f"{entry}: exists and is not empty; nothing written (choose another --out or --name)")
    return entry


def collect(camera: CameraSettings, entry: Path, crops: bool, seconds: float | None,
            stop: threading.Event) -> Collected:
    """Record from ``camera`` into ``entry`` until ``seconds`` of frames, the end of a file, a lost
    camera or ``stop``. SourceError, and nothing written, when the camera cannot be opened."""
    pipeline = FacePipeline(camera.detect, camera.crop)
    pacer = FramePacer(RECORD_FPS)
    cap = open_capture(camera)
    live = is_live(camera.source)
    reader = LatestFrameReader(cap, camera.id) if live else FileReader(cap, fast=False)
    log.info("collect %s: recording from %s into %s", camera.id, describe(camera.source), entry)
    done = Collected(entry)
    entry.mkdir(parents=True, exist_ok=True)
    start: float | None = None
    last_frame = time.monotonic()
    try:
        with open(entry / EYES_FILE, "w", newline="") as f:
            eyes = csv.writer(f)
            eyes.writerow(["frame", "time_s", "left", "right"])
            while not stop.is_set():
                frame = reader.get(timeout_s=0.5)
                if frame is None:
                    if reader.failed or time.monotonic() - last_frame > camera.read_timeout_s:
                        done.lost = live
                        break
                    continue
                last_frame = time.monotonic()
                ts = frame.index / reader.fps if isinstance(reader, FileReader) else frame.capture_ts  # a file: not live
                if not pacer.take(ts):
                    continue
                start = ts if start is None else start
                if seconds is not None and ts - start >= seconds:
                    break
                faces = pipeline.analyze(frame.image)
                name = entry / f"{done.frames:06d}.jpg"
                if crops:
                    image = pipeline.crop(frame.image, faces[0].box) if faces else None
                else:
                    image = frame.image
                if image is not None and not cv2.imwrite(str(name), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                    raise LivenessError(f"{name}: cannot write (disk full?); the frames before it are kept")
                ratios = [f"{faces[0].left:.4f}", f"{faces[0].right:.4f}"] if faces else ["", ""]
                eyes.writerow([done.frames, f"{ts - start:.3f}", *ratios])
                f.flush()  # a lost camera or a kill leaves a sidecar that matches the frames on disk
                done.frames += 1
                done.faces += bool(faces)
                done.seconds = ts - start
    finally:
        reader.close()
    return done


def run(args: argparse.Namespace) -> int:
    if args.seconds is not None and not args.seconds > 0:
        raise LivenessError(f"--seconds {args.seconds:g}: must be a positive number of seconds")
    settings = load_settings(args.config)
    camera = settings.camera(args.camera)
    entry = entry_folder(Path(args.out), args.label, args.name or camera.id)
    done = collect(camera, entry, args.crops, args.seconds, stop_on_signals())
    recorded = f"{done.frames} frames ({done.seconds:.1f} s), {done.faces} with a face"
    if done.lost:
        print(f"collect {camera.id}: camera lost after {recorded}; what was recorded is kept in {entry}")
        return 1
    print(f"collect {camera.id}: {recorded}; {'face crops' if args.crops else 'frames'} and {EYES_FILE} in {entry}")
    if not done.faces:
        log.warning("collect %s: no face in any frame", camera.id)
    fps = (done.frames - 1) / done.seconds if done.frames > 1 and done.seconds > 0 else RECORD_FPS
    if fps < RECORD_FPS * (1 - RATE_TOLERANCE):
        log.warning("collect %s: %.1f frames per second recorded, not %g (camera or machine too slow): evaluation "
                    "replays the entry %.1f times too fast (%s has the true times)", camera.id, fps, RECORD_FPS,
                    RECORD_FPS / fps, EYES_FILE)
    return 0
