"""``liveness run``: the whole pipeline on one machine, as supervised processes.

Ingest for every camera, the face and eye worker pools and fusion each run in their own
process; a crashed one is restarted with backoff. With no config, it runs a demo: a
private Redis and a camera made at run time from a printed photo (plus the webcam when one
exists), and prints the decisions as they come.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import socket
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import redis

from liveness.app.demo_camera import write_clip
from liveness.app.localredis import PrivateRedis
from liveness.app.targets import TargetsWriter
from liveness.config import Settings, load_settings
from liveness.contract import Decision, Keys
from liveness.defaults import eye_model_path
from liveness.fusion.decisions import tail
from liveness.fusion.service import serve_fusion
from liveness.errors import NameTakenError
from liveness.evidence import load_policy
from liveness.heartbeat import Beacon, holder
from liveness.ingest.service import serve_camera
from liveness.metrics import serve
from liveness.redaction import redact_url
from liveness.redisconn import connect
from liveness.streams import consumer_name
from liveness.supervisor import ProcessSpec, Supervisor
from liveness.workers.eye import serve_eye_worker
from liveness.workers.face import serve_face_worker

log = logging.getLogger(__name__)


def demo_cameras(tmp: Path) -> list[dict[str, object]]:
    """The printed-photo demo camera, and the webcam when the machine has one."""
    clip = write_clip(tmp / "demo-print.avi")
    cams: list[dict[str, object]] = [{"id": "demo-print", "source": str(clip), "label": "spoof"}]
    if Path("/dev/video0").exists():
        cams.append({"id": "webcam", "source": 0})
    return cams


def demo_prefix(prefix: str) -> str:
    """The key prefix of the demo camera's run: the site's, marked as the demo's (at most 40 characters)."""
    return f"{prefix[:35]}-demo"


def effective_settings(config: str | None, stack: ExitStack, tmp: Path, *, preview: bool = False,
                       cameras: list[dict[str, object]] | None = None) -> tuple[Settings, bool]:
    """The config to run: the user's, or the demo's; with a private Redis unless one is configured
    (any password-less Redis on the default port could be anyone's: it would read the crops and
    could forge decisions); with a decision key made up for this run unless one is configured.

    Also says whether it runs the demo camera, a file that loops.
    """
    settings = load_settings(config)
    data = settings.model_dump(mode="json")
    demo_camera = cameras is None and not settings.cameras
    if cameras is not None:
        data["cameras"] = cameras
    elif demo_camera:
        # under a prefix of its own: the demo never shows in a site's decisions, accuracy or targets
        data["prefix"] = demo_prefix(settings.prefix)
        log.info("run: no cameras configured: running the demo camera under prefix %s", data["prefix"])
        data["cameras"] = demo_cameras(tmp)
    if preview:
        data["preview"]["enabled"] = True
    if "url" not in settings.redis.model_fields_set:
        local = PrivateRedis()
        stack.callback(local.close)
        data["redis"]["url"] = local.url
    if settings.fusion.decision_key is None:
        data["fusion"]["decision_key"] = secrets.token_urlsafe(32)
    return Settings.model_validate(data), demo_camera


def process_specs(settings: Settings, face_workers: int = 1, eye_workers: int = 1,
                  loop: bool = False) -> list[ProcessSpec]:
    """One process per camera and per worker, and fusion; each with its own metrics port.

    The validated settings go to every child as they are (pickled by the fork server).
    """
    base = settings.metrics.port
    host = socket.gethostname()
    specs: list[ProcessSpec] = []

    def port() -> int | None:
        return None if base == 0 else base + len(specs)

    def consumer(spec: str, name: str, target: Callable[..., None]) -> None:
        # the consumer and heartbeat name carries the host: two machines' runs share the groups
        name = f"{name}.{host}"
        specs.append(ProcessSpec(spec, target, (settings,), {"name": name, "metrics_port": port()}, heartbeat=name))

    consumer("fusion", "fusion-1", serve_fusion)
    for i in range(face_workers):
        consumer(f"face-worker-{i + 1}", f"face-{i + 1}", serve_face_worker)
    for i in range(eye_workers):
        consumer(f"eye-worker-{i + 1}", f"eye-{i + 1}", serve_eye_worker)
    for cam in settings.cameras:
        specs.append(ProcessSpec(f"ingest:{cam.id}", serve_camera, (settings, cam.id),
                                 {"loop": loop, "metrics_port": port()}, heartbeat=f"ingest:{cam.id}"))
    return specs


def eye_pool(settings: Settings, asked: int | None) -> int:
    """Eye workers to start: ``asked``, else one where a camera sends eye windows (``eyes``) and none
    where none does. Notes the eye path turned on under a policy that weighs it 0: it costs
    landmarks on every frame and a worker, and changes no decision. ModelError, before anything
    starts, where eye workers would start without an eye model (opt-in: ``eye_model_path``)."""
    eyes = [cam.id for cam in settings.cameras if cam.eyes]
    if eyes and load_policy(settings.fusion).eye_weight == 0:
        log.warning("run: cameras %s send eye windows (eyes: true), but the fusion policy weighs the eye "
                    "model 0: they change no decision (models/artifacts/eye.md)", ", ".join(eyes))
    if eyes and asked == 0:
        log.warning("run: cameras %s send eye windows, but no eye worker is started: they wait unscored "
                    "in the eye stream (bounded by streams.maxlen)", ", ".join(eyes))
    workers = asked if asked is not None else int(bool(eyes))
    if workers:
        eye_model_path(settings.eye_worker.model)
    return workers


def refuse_if_running(client: redis.Redis, keys: Keys, specs: list[ProcessSpec]) -> None:
    """Raise NameTakenError when live processes of another installation beat under the names this
    run would start (its cameras' ingests above all: every face would be decided twice)."""
    try:
        taken = [hb for spec in specs if spec.heartbeat
                 if (hb := holder(client, keys.heartbeat(spec.heartbeat), spec.heartbeat, socket.gethostname()))]
    except (redis.ConnectionError, redis.TimeoutError):
        return  # Redis not up yet: the children wait for it, and each refuses a name another holds
    if taken:
        running = "; ".join(f"{hb.name} (pid {hb.pid} on {hb.host}, {hb.state})" for hb in taken)
        raise NameTakenError(f"another installation runs under prefix {keys.prefix!r} in this Redis: {running}. "
                             "Stop it first, or give this one its own prefix")


def print_decisions(settings: Settings, stop: threading.Event) -> None:
    """Tail the decisions stream to the terminal."""
    client = connect(settings.redis)
    key = settings.fusion.key()
    for batch in tail(client, Keys(settings.prefix).stream(Decision), "$", follow=True, stop=stop, key=key):
        for _, d in batch:
            latency = d.decided_ts - d.last_capture_ts
            forged = "  FORGED (fails fusion's signature)" if key is not None and not d.authentic(key) else ""
            print(f"{time.strftime('%H:%M:%S')}  {d.camera:<14} {d.track:<22} {d.verdict.upper():<6} "
                  f"confidence {d.confidence:.2f}  face {d.face_evidence:+.1f} eye {d.eye_evidence:+.1f}  "
                  f"{d.frames} frames  latency {latency * 1000:.0f} ms{forged}", flush=True)


def run(args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="liveness-run-")))
        settings, demo_camera = effective_settings(args.config, stack, tmp, preview=args.preview)
        eye_workers = eye_pool(settings, args.eye_workers)
        specs = process_specs(settings, args.face_workers, eye_workers, loop=args.loop or demo_camera)
        client = connect(settings.redis)
        keys = Keys(settings.prefix)
        refuse_if_running(client, keys, specs)
        log.info("run: Redis %s, prefix %s, %d camera(s), %d face and %d eye worker(s)",
                 redact_url(settings.redis.url), settings.prefix, len(settings.cameras), args.face_workers,
                 eye_workers)
        port = None
        if settings.metrics.port:
            for spec in specs:
                log.info("run: %-22s metrics on :%d/metrics", spec.name, spec.kwargs["metrics_port"])
            port = serve(settings.metrics, "run: supervisor", settings.metrics.port + len(specs))
        beacon = Beacon(client, keys, consumer_name("run"), "supervisor", port)
        if settings.preview.enabled:
            for i, cam in enumerate(settings.cameras):
                print(f"preview {cam.id}: http://{settings.preview.host}:{settings.preview.port + i}/", flush=True)
        stop = threading.Event()
        stack.callback(stop.set)
        threading.Thread(target=print_decisions, args=(settings, stop), daemon=True).start()
        deadline = None if args.duration is None else time.monotonic() + args.duration

        targets = None
        if settings.metrics.targets_file:
            targets = TargetsWriter(client, keys, settings.metrics, Path(settings.metrics.targets_file))

        def until() -> bool:
            beacon.beat("ready")  # from the supervisor's own loop: a supervisor that hangs goes silent
            if targets is not None:
                targets.due()
            return deadline is not None and time.monotonic() >= deadline

        code = Supervisor(specs, client, keys).run(until=until)
        beacon.stop()
        if targets is not None:  # its processes stopped: none left for Prometheus to find down
            targets.due(force=True)
        return code
