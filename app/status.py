"""``liveness status``: every service process of an installation, as its own heartbeat tells it.

Lists each process (on any machine) that beats into the configured Redis and prefix: its role,
state, host, pid and metrics port, and those that stopped beating without a clean exit, and
says when Redis is out of memory (no process can beat then). Exit status 0 when at least one
process beats, none went silent, Redis takes writes and every configured camera delivers (it
opened once, and was not lost for longer than ``--camera-grace``); else 1: usable as a probe.

``--self [NAME]`` judges one process (or, without NAME, every process beating from this
machine: a pod) instead: a Kubernetes liveness probe (its heartbeat lives) or, with ``--ready``,
a readiness probe (it says ready).
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from dataclasses import asdict

import redis

from liveness.config import Settings, load_settings
from liveness.contract import Heartbeat, Keys
from liveness.heartbeat import TTL_S, heartbeats, out_of_memory
from liveness.redisconn import connect


def camera_problems(settings: Settings, alive: list[Heartbeat], silent: list[str], grace_s: float,
                    now: float) -> dict[str, str]:
    """Configured camera id -> why it does not deliver frames: no ingest beats for it (none runs,
    or it stopped), its ingest went silent, it never opened, or it has been lost for longer than
    ``grace_s``."""
    beats = {hb.name: hb for hb in alive}
    problems = {}
    for cam in settings.cameras:
        name = f"ingest:{cam.id}"
        hb = beats.get(name)
        if hb is None:
            problems[cam.id] = f"{name} went silent" if name in silent else f"no {name} beats"
        elif hb.ready_ts is None:
            problems[cam.id] = f"never opened ({hb.state}{': ' + hb.detail if hb.detail else ''})"
        elif hb.state != "ready" and now - (hb.since_ts or hb.ts) > grace_s:
            problems[cam.id] = f"lost for {now - (hb.since_ts or hb.ts):.0f} s ({hb.detail or hb.state})"
    return problems


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    client = connect(settings.redis)
    if args.self is not None:
        return judge_self(client, Keys(settings.prefix), args.self, args.ready)
    keys = Keys(settings.prefix)
    alive, silent = heartbeats(client, keys)
    oom = out_of_memory(client, keys)
    why = "Redis out of memory: no process can write" if oom else "crashed, hung or cut off"
    now = time.time()
    problems = camera_problems(settings, alive, silent, args.camera_grace, now)
    if args.json:
        print(json.dumps({"services": [{**asdict(hb), "age_s": round(now - hb.ts, 3)} for hb in alive],
                          "silent": silent, "redis_out_of_memory": oom, "cameras": problems}))
    elif not alive and not silent:
        print(f"no service beats under prefix {settings.prefix!r}")
    else:
        print(f"{'name':<34} {'role':<11} {'state':<9} {'host':<20} {'pid':>7} {'metrics':>7} {'up':>8}  detail")
        for hb in alive:
            print(_row(hb, now))
        for name in silent:
            print(f"{name:<34} {'?':<11} {'silent':<9} (no heartbeat for over {TTL_S:.0f} s: {why})")
    if not args.json:
        if oom:
            print("Redis out of memory (maxmemory reached): every write is refused; raise maxmemory or free memory")
        for cam, problem in problems.items():
            print(f"camera {cam}: {problem}")
    return 0 if alive and not silent and not oom and not problems else 1


def judge_self(client: redis.Redis, keys: Keys, name: str, ready: bool) -> int:
    """Exit status of a probe: 0 when the process ``name`` (every process of this host if empty)
    beats, and with ``ready`` says ready. Without ``ready``, a Redis unreachable or out of memory
    passes: no process can beat then, and a restart would not bring Redis back."""
    try:
        alive, _ = heartbeats(client, keys)
        cause = "out of memory" if out_of_memory(client, keys) else ""
    except (redis.ConnectionError, redis.TimeoutError) as e:
        alive, cause = [], f"unreachable ({type(e).__name__})"
    if cause:
        print(f"Redis {cause}: {'not ready' if ready else 'not judged'}")
        return 1 if ready else 0
    host = socket.gethostname()
    mine = [hb for hb in alive if (hb.name == name if name else hb.host == host)]
    now = time.time()
    for hb in mine:
        print(_row(hb, now))
    if not mine:
        print(f"no heartbeat of {name or 'a process of ' + host} under prefix {keys.prefix!r}")
        return 1
    return 0 if not ready or all(hb.state == "ready" for hb in mine) else 1


def _row(hb: Heartbeat, now: float) -> str:
    port = str(hb.metrics_port) if hb.metrics_port else "-"
    return (f"{hb.name:<34} {hb.role:<11} {hb.state:<9} {hb.host[:20]:<20} {hb.pid:>7} {port:>7} "
            f"{_duration(now - hb.started_ts):>8}  {hb.detail}")


def _duration(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
