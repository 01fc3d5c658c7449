"""``liveness run``: the whole pipeline on one machine, as supervised processes.

Ingest for every camera, the face and eye worker pools and fusion each run in their own
process; a crashed one is restarted with backoff. With no config, it runs a demo: a
private Redis and a camera made at run time from a printed photo (plus the webcam when one
exists), and prints the decisions as they come.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import yaml

from fusion import service as fusion_service
from ingest.service import run_camera
from liveness.config import Settings, load_settings
from liveness.contract import Decision, Keys
from liveness.demo import write_clip
from liveness.errors import PoisonMessageError
from liveness.localredis import PrivateRedis, answers
from liveness.metrics import serve
from liveness.redaction import redact_url
from liveness.redisconn import connect
from liveness.supervisor import ProcessSpec, Supervisor
from workers import eye as eye_worker
from workers import face as face_worker

log = logging.getLogger(__name__)

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def demo_cameras(tmp: Path) -> list[dict[str, object]]:
    """The printed-photo demo camera, and the webcam when the machine has one."""
    clip = write_clip(tmp / "demo-print.avi")
    cams: list[dict[str, object]] = [{"id": "demo-print", "source": str(clip), "label": "spoof"}]
    if Path("/dev/video0").exists():
        cams.append({"id": "webcam", "source": 0})
    return cams


def effective_settings(args: argparse.Namespace, stack: ExitStack, tmp: Path) -> Settings:
    """The config to run: the user's, or the demo's; with a private Redis when none answers."""
    settings = load_settings(args.config)
    data = settings.model_dump(mode="json")
    if not settings.cameras:
        log.info("run: no cameras configured: running the demo camera")
        data["cameras"] = demo_cameras(tmp)
        args.loop = True
    if args.preview:
        data["preview"]["enabled"] = True
    configured = args.config is not None and settings.redis.url != DEFAULT_REDIS or "LIVENESS_REDIS__URL" in os.environ
    if not configured and not answers(settings.redis.url):
        local = PrivateRedis()
        stack.callback(local.close)
        data["redis"]["url"] = local.url
    return Settings.model_validate(data)


def write_config(settings: Settings, tmp: Path) -> Path:
    """The effective config, readable only by us (it may hold a Redis password), for the children."""
    path = tmp / "config.yaml"
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    return path


def process_specs(args: argparse.Namespace, settings: Settings, config: Path) -> list[ProcessSpec]:
    """One process per camera and per worker, and fusion; each with its own metrics port."""
    base = settings.metrics.port
    specs: list[ProcessSpec] = []

    def port() -> int | None:
        return None if base == 0 else base + len(specs)

    def ns(name: str) -> argparse.Namespace:
        return argparse.Namespace(config=str(config), name=name, model=None, threads=None, batch_size=None,
                                  metrics_port=port())

    specs.append(ProcessSpec("fusion", fusion_service.run, (ns("fusion-1"),)))
    for i in range(args.face_workers):
        specs.append(ProcessSpec(f"face-worker-{i + 1}", face_worker.run, (ns(f"face-{i + 1}"),)))
    for i in range(args.eye_workers):
        specs.append(ProcessSpec(f"eye-worker-{i + 1}", eye_worker.run, (ns(f"eye-{i + 1}"),)))
    for cam in settings.cameras:
        specs.append(ProcessSpec(f"ingest:{cam.id}", run_camera,
                                 (settings, cam.id, False, args.loop, None, port())))
    return specs


def print_decisions(settings: Settings, stop: threading.Event) -> None:
    """Tail the decisions stream to the terminal."""
    client = connect(settings.redis)
    stream = Keys(settings.prefix).stream(Decision)
    last = "$"
    while not stop.is_set():
        try:
            reply = client.xread({stream: last}, count=100, block=500)
        except Exception as e:  # noqa: BLE001 - the display must survive a Redis restart
            log.warning("run: decisions display paused (%s)", type(e).__name__)
            stop.wait(1.0)
            continue
        for entry_id, fields in reply[0][1] if reply else []:
            last = entry_id
            try:
                d = Decision.from_fields(fields)
            except PoisonMessageError:
                continue
            latency = d.decided_ts - d.last_capture_ts
            print(f"{time.strftime('%H:%M:%S')}  {d.camera:<14} {d.track:<22} {d.verdict.upper():<6} "
                  f"confidence {d.confidence:.2f}  face {d.face_evidence:+.1f} eye {d.eye_evidence:+.1f}  "
                  f"{d.frames} frames  latency {latency * 1000:.0f} ms", flush=True)


def run(args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="liveness-run-")))
        settings = effective_settings(args, stack, tmp)
        config = write_config(settings, tmp)
        specs = process_specs(args, settings, config)
        log.info("run: Redis %s, prefix %s, %d camera(s), %d face and %d eye worker(s)",
                 redact_url(settings.redis.url), settings.prefix, len(settings.cameras), args.face_workers,
                 args.eye_workers)
        if settings.metrics.port:
            for i, spec in enumerate(specs):
                log.info("run: %-22s metrics on :%d/metrics", spec.name, settings.metrics.port + i)
            serve(settings.metrics, "run: supervisor", settings.metrics.port + len(specs))
        if settings.preview.enabled:
            for i, cam in enumerate(settings.cameras):
                print(f"preview {cam.id}: http://{settings.preview.host}:{settings.preview.port + i}/", flush=True)
        stop = threading.Event()
        stack.callback(stop.set)
        threading.Thread(target=print_decisions, args=(settings, stop), daemon=True).start()
        deadline = None if args.duration is None else time.monotonic() + args.duration
        return Supervisor(specs).run(until=None if deadline is None else lambda: time.monotonic() >= deadline)
    return 0
