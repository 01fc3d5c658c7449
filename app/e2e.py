"""``liveness bench e2e``: N real cameras over RTSP through the whole pipeline on this machine.

NUAA sequences are replayed as RTSP cameras (GStreamer), the pipeline runs as ``liveness run``
runs it (a private Redis unless one is configured), and after a warm-up the run is measured
for ``--duration`` seconds: frames ingested and shed, decisions, capture-to-decision latency,
time to decision, messages lost, and CPU seconds per process.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import redis

from liveness.app.localredis import PrivateRedis, free_port
from liveness.app.replay import Replay, interleave
from liveness.app.run import eye_pool, process_specs
from liveness.config import Settings, load_settings
from liveness.contract import Decision, EyeSample, EyeScore, FaceCrop, FaceScore, Keys
from liveness.errors import LivenessError
from liveness.heartbeat import heartbeats
from liveness.redisconn import connect
from liveness.streams import RawEntry, settled
from liveness.supervisor import ProcessSpec, Supervisor

if TYPE_CHECKING:
    from liveness.models.datasets import Sequence

log = logging.getLogger(__name__)

NUAA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nuaa-train"
WARMUP_S = 15.0
"""Time after every process beats ready, for tracks to start and queues to fill, before measuring, seconds."""

DRAIN_S = 30.0
"""Longest wait after the cameras stop for every group to read and acknowledge all, before counting losses, seconds."""


def _scrape(port: int) -> dict[str, float]:
    """Sum of each metric family's samples on one /metrics endpoint."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        family = name.split("{", 1)[0]
        out[family] = out.get(family, 0.0) + float(value)
    return out


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_e2e(args: argparse.Namespace) -> dict[str, object]:
    root = Path(args.root or NUAA_ROOT)
    if not root.is_dir():
        raise LivenessError(f"bench e2e: NUAA data not found at {root}")
    from liveness.models.datasets import nuaa

    sequences = interleave(nuaa(root, "all").sequences)
    cams = [sequences[i % len(sequences)] for i in range(args.cameras)]
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="liveness-bench-")))
        settings = load_settings(args.config)
        data = settings.model_dump(mode="json")
        if args.config is None:
            local = PrivateRedis()
            stack.callback(local.close)
            data["redis"]["url"] = local.url
        data["prefix"] = f"bench-{os.getpid()}"
        data["metrics"] = {"port": data["metrics"]["port"] or 9400, "host": "127.0.0.1"}
        data["ingest"]["max_fps"] = args.fps
        replay = Replay([_renamed(s, i) for i, s in enumerate(cams)], free_port(), args.fps, tmp / "frames")
        stack.callback(replay.close)
        data["cameras"] = replay.cameras
        settings = Settings.model_validate(data)
        args.eye_workers = eye_pool(settings, args.eye_workers)  # as liveness run; the report gives the number
        specs = process_specs(settings, args.face_workers, args.eye_workers, loop=True)
        supervisor = Supervisor(specs)
        client = connect(settings.redis)
        keys = Keys(settings.prefix)
        marks = _Marks()

        def until() -> bool:
            now = time.monotonic()
            if marks.ready is None and _all_ready(client, keys, specs):
                marks.ready = now
            if marks.ready is not None and marks.start is None and now - marks.ready >= WARMUP_S:
                marks.start = time.time()
                marks.metrics = _totals(client, keys)
                marks.cpu = _cpu_all(specs)
            return marks.ready is not None and now - marks.ready >= WARMUP_S + args.duration

        supervisor.run(until=until, stop_after=False)
        end_wall = time.time()
        after = _totals(client, keys)
        cpu = _cpu_all(specs)
        supervisor.stop("ingest:")
        _wait_drained(client, keys)
        drained = _totals(client, keys)
        supervisor.stop()
        if marks.start is None:
            raise LivenessError("bench e2e: stopped before the warm-up ended")
        entries = cast(list[RawEntry], client.xrange(keys.stream(Decision), min=f"{int(marks.start * 1000)}-0",
                                                      max=f"{int(end_wall * 1000)}-0"))
        decisions = [Decision.from_fields(f) for _, f in entries]
    before = marks.metrics
    latency = np.array([d.decided_ts - d.last_capture_ts for d in decisions]) if decisions else np.array([np.nan])
    ttd = [d.decided_ts - d.first_capture_ts for d in decisions if d.frames and _first(d, decisions)]
    frames = after.get("liveness_frames_processed_total", 0) - before.get("liveness_frames_processed_total", 0)
    shed = after.get("liveness_frames_shed_total", 0) - before.get("liveness_frames_shed_total", 0)
    skipped = after.get("liveness_frames_skipped_total", 0) - before.get("liveness_frames_skipped_total", 0)
    crops = after.get("liveness_crops_published_total", 0) - before.get("liveness_crops_published_total", 0)
    cpu_s = {name: cpu[name] - marks.cpu.get(name, 0.0) for name in cpu}
    by_role = {role: sum(v for name, v in cpu_s.items() if _role(name) == role) for role in ROLES}
    return {
        "bench": "e2e", "cameras": args.cameras, "fps": args.fps, "duration_s": args.duration,
        "face_workers": args.face_workers, "eye_workers": args.eye_workers,
        "frames": int(frames), "frames_per_s": round(frames / args.duration, 1), "shed": int(shed),
        "skipped": int(skipped), "decisions": len(decisions), "lost": _lost(after, drained),
        "latency_p50_s": _pct(latency, 50), "latency_p95_s": _pct(latency, 95), "latency_p99_s": _pct(latency, 99),
        "time_to_decision_median_s": round(float(np.median(ttd)), 3) if ttd else None,
        "cpu_s": {name: round(v, 1) for name, v in cpu_s.items()},
        "cpu_cores": os.cpu_count(),
        "cores_used": round(sum(cpu_s.values()) / args.duration, 3),
        "cores_per_camera": {role: round(v / args.duration / args.cameras, 4) for role, v in by_role.items()},
        "crops": int(crops),
        "face_cpu_ms_per_crop": round(1000.0 * by_role["face"] / crops, 2) if crops else None,
    }


ROLES = ("ingest", "face", "eye", "fusion")
"""What the CPU of a run is split by, in ``cores_per_camera``."""


def _role(process: str) -> str:
    """The role of a supervised process by its name (``app/run.py``: ingest:<camera>, face-worker-1, ...)."""
    return next((role for role in ROLES if process.startswith(role)), "other")


@dataclass
class _Marks:
    """What the run records when the warm-up ends."""

    ready: float | None = None
    """Monotonic time at which every process first beat ready."""
    start: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)


def _renamed(seq: Sequence, i: int) -> Sequence:
    """A copy of a sequence with a camera-unique name (sequences repeat when N is large)."""
    from dataclasses import replace

    return replace(seq, name=f"cam{i:02d}-{seq.label}")


def _all_ready(client: redis.Redis, keys: Keys, specs: list[ProcessSpec]) -> bool:
    """Every supervised process beats ready: models loaded, groups read, cameras open."""
    alive, _ = heartbeats(client, keys)
    return sum(hb.state == "ready" for hb in alive) >= len(specs)


def _totals(client: redis.Redis, keys: Keys) -> dict[str, float]:
    """Each metric family summed over every process that beats, at the metrics port its heartbeat gives."""
    total: dict[str, float] = {}
    alive, _ = heartbeats(client, keys)
    for hb in alive:
        if hb.metrics_port:
            for k, v in _scrape(hb.metrics_port).items():
                total[k] = total.get(k, 0.0) + v
    return total


def _wait_drained(client: redis.Redis, keys: Keys) -> None:
    """Until every group has read and acknowledged its streams, at most ``DRAIN_S``."""
    streams = [keys.stream(m) for m in (FaceCrop, EyeSample, FaceScore, EyeScore)]
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline:
        if all(settled(client, stream) for stream in streams):
            return
        time.sleep(0.2)
    log.warning("bench e2e: queues not drained after %.0f s; losses counted as they are", DRAIN_S)


def _cpu_all(specs: list[ProcessSpec]) -> dict[str, float]:
    out = {}
    for spec in specs:
        if spec.process is not None and spec.process.pid and spec.process.is_alive():
            try:
                out[spec.name] = _cpu_s(spec.process.pid)
            except OSError:
                continue
    return out


def _lost(published: dict[str, float], scored: dict[str, float]) -> int:
    """Crops and eye windows published but neither scored nor dead-lettered, once the queues drained.

    ``published`` is the ingest processes' totals, read just before they stopped; ``scored``
    the workers' totals after the drain.
    """
    sent = published.get("liveness_crops_published_total", 0) + published.get("liveness_windows_published_total", 0)
    done = scored.get("liveness_scored_total", 0) + scored.get("liveness_messages_dead_lettered_total", 0)
    return int(max(0.0, sent - done))


def _first(d: Decision, decisions: list[Decision]) -> bool:
    return next(x for x in decisions if x.track == d.track) is d


def _pct(values: np.ndarray, q: float) -> float | None:
    return None if np.isnan(values).all() else round(float(np.nanpercentile(values, q)), 4)
