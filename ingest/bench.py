"""``liveness bench ingest``: full ingest against decoding alone, on one clip, in one run.

Decoding is the floor no ingest can beat, so the figure is their ratio (``ratio``), which
holds on a noisy machine where absolute frame rates do not. One more ingest round runs under
cProfile, timed in process CPU, to split a frame's CPU into its stages (``cpu_ms``).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import cv2

from liveness.config import CameraSettings, CameraTuning, load_settings
from liveness.errors import LivenessError
from liveness.redisconn import connect

from liveness.ingest.service import IngestService

ROUNDS = 3
"""Decode-then-ingest rounds; the figures are their medians."""

STAGES = {
    "decode": ("capture.py", "get"),
    "detect": ("face.py", "detections"),
    "follow": ("tracking.py", "_follow"),
    "landmarks": ("face.py", "face"),
    "crop_jpeg": ("face.py", "crop_jpeg"),
    "publish": ("publisher.py", "flush"),
}
"""Stage -> the function whose cumulative CPU time it is (file name, function name): reading and
decoding a frame, the face detector, following a face between detection rounds, landmarks and
eye ratios of one face (only with the eye path on), cutting and encoding the crop, writing the
messages to Redis. The rest of a frame's CPU is ``other``."""

DEFAULT_SEQUENCE = Path(__file__).resolve().parents[1].parent / "shared/data/nuaa-train/ClientRaw/0001"


def make_clip(dest: Path, frames_dir: Path = DEFAULT_SEQUENCE, fps: int = 15) -> Path:
    """A 640x480 H.264 clip of one NUAA live sequence (ffmpeg), for when no --source is given."""
    if shutil.which("ffmpeg") is None:
        raise LivenessError("bench ingest: no --source given and ffmpeg is not installed to make a clip")
    frames = sorted(frames_dir.glob("*_00_00_01_*.jpg"), key=lambda p: int(p.stem.split("_")[-1]))
    if not frames:
        raise LivenessError(f"bench ingest: no --source given and no NUAA frames in {frames_dir}")
    listing = dest / "frames"
    listing.mkdir()
    for i, f in enumerate(frames):
        (listing / f"{i:05d}.jpg").symlink_to(f)
    clip = dest / "clip.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-framerate", str(fps), "-i", str(listing / "%05d.jpg"),
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", str(fps), str(clip)], check=True)
    return clip


def decode_fps(source: str, frames: int) -> float:
    """Frames per second of decoding alone, looping the clip until ``frames`` were read."""
    n = 0
    t0 = time.perf_counter()
    while n < frames:
        cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise LivenessError(f"bench ingest: cannot open {source}")
        while n < frames:
            ok, _ = cap.read()
            if not ok:
                break
            n += 1
        cap.release()
    return n / (time.perf_counter() - t0)


def ingest_fps(source: str, frames: int, config: str | None,
               profile: cProfile.Profile | None = None) -> tuple[float, int]:
    """Video frames per second through the full ingest (detect, follow, crops, publish; landmarks with the eye path on), one
    thread, and how many of the ``frames`` it processed.

    The camera defaults of the config apply, ``max_fps`` included: frames above it are
    decoded and dropped, as on a real camera. ``profile``, if given, runs while frames are read.
    """
    settings = load_settings(config)
    settings.prefix = f"bench-{uuid.uuid4().hex[:8]}"
    camera = CameraSettings(id="bench", source=source,  # every camera default of the config (eyes included)
                            **settings.ingest.model_dump(include=set(CameraTuning.model_fields)))
    service = IngestService(settings, camera, fast=True, loop=True, max_frames=frames, stop=threading.Event())
    client = connect(settings.redis)
    try:
        if profile is None:
            service.start()
        else:
            profile.runcall(service.start)
        elapsed = time.perf_counter() - service.reader.started  # models loaded, Redis connected
    finally:
        for key in client.scan_iter(f"{settings.prefix}:*"):
            client.delete(key)
    return service.reader.frames_read / elapsed, service.frames


def stage_cpu_ms(source: str, frames: int, config: str | None) -> dict[str, float]:
    """CPU milliseconds of each ingest stage (``STAGES``), ``other`` and ``total``, per frame of
    a camera that sends ``max_fps``: decoding per frame read, the rest per frame processed.

    cProfile's clock is the process's CPU time, so a stage counts what it computed, not the
    time it waited for a core on a loaded machine. The profiler adds its own overhead, most of
    it to ``other`` (the stages are mostly calls into C).
    """
    ingest_fps(source, 15, config)  # models load once per process: not in the profiled round
    profile = cProfile.Profile(time.process_time, builtins=False)
    _, processed = ingest_fps(source, frames, config, profile)
    if not processed:
        raise LivenessError(f"bench ingest: no frame of {source} was processed")
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]  # the documented dict, untyped
    cumulative: dict[tuple[str, str], float] = {}
    for (filename, _, name), (_, _, _, ct, _) in stats.items():
        key = (Path(filename).name, name)
        cumulative[key] = cumulative.get(key, 0.0) + ct
    out = {stage: 1000.0 * cumulative.get(where, 0.0) / processed for stage, where in STAGES.items()}
    out["decode"] *= processed / frames
    rest = cumulative[("camera.py", "run")] - cumulative.get(STAGES["decode"], 0.0)
    out["total"] = out["decode"] + 1000.0 * rest / processed
    out["other"] = out["total"] - sum(out[stage] for stage in STAGES)
    return {k: round(v, 3) for k, v in out.items()}


def bench_ingest(args: argparse.Namespace) -> dict[str, object]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        source = args.source or str(make_clip(Path(tmp)))
        decode_fps(source, 30)  # warm the page cache and codec
        rounds = [(decode_fps(source, args.frames), ingest_fps(source, args.frames, args.config)[0])
                  for _ in range(ROUNDS)]  # interleaved, so both see the same background load
        dec = statistics.median(d for d, _ in rounds)
        ing = statistics.median(i for _, i in rounds)
        ratio = statistics.median(i / d for d, i in rounds)
        stages = stage_cpu_ms(source, args.frames, args.config)
        fps = load_settings(args.config).ingest.max_fps
        cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG)
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        cap.release()
    return {"bench": "ingest", "frames": args.frames, "rounds": ROUNDS, "width": size[0], "height": size[1],
            "decode_fps": round(dec, 1), "ingest_fps": round(ing, 1), "ratio": round(ratio, 3),
            "cpu_ms": stages, "max_fps": fps, "cores_per_camera": round(stages["total"] * fps / 1000.0, 4)}
