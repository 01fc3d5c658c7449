"""``liveness status``: every service process of an installation, as its own heartbeat tells it.

Lists each process (on any machine) that beats into the configured Redis and prefix: its role,
state, host, pid and metrics port, and those that stopped beating without a clean exit, and
says when Redis is out of memory (no process can beat then). Exit
status 0 when at least one process beats and none went silent, else 1: usable as a probe.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

from liveness.config import load_settings
from liveness.contract import Keys
from liveness.heartbeat import TTL_S, heartbeats, out_of_memory
from liveness.redisconn import connect


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    client = connect(settings.redis)
    keys = Keys(settings.prefix)
    alive, silent = heartbeats(client, keys)
    oom = out_of_memory(client, keys)
    why = "Redis out of memory: no process can write" if oom else "crashed, hung or cut off"
    now = time.time()
    if args.json:
        print(json.dumps({"services": [{**asdict(hb), "age_s": round(now - hb.ts, 3)} for hb in alive],
                          "silent": silent, "redis_out_of_memory": oom}))
    elif not alive and not silent:
        print(f"no service beats under prefix {settings.prefix!r}")
    else:
        print(f"{'name':<34} {'role':<11} {'state':<9} {'host':<20} {'pid':>7} {'metrics':>7} {'up':>8}  detail")
        for hb in alive:
            port = str(hb.metrics_port) if hb.metrics_port else "-"
            print(f"{hb.name:<34} {hb.role:<11} {hb.state:<9} {hb.host[:20]:<20} {hb.pid:>7} {port:>7} "
                  f"{_duration(now - hb.started_ts):>8}  {hb.detail}")
        for name in silent:
            print(f"{name:<34} {'?':<11} {'silent':<9} (no heartbeat for over {TTL_S:.0f} s: {why})")
    if oom and not args.json:
        print("Redis out of memory (maxmemory reached): every write is refused; raise maxmemory or free memory")
    return 0 if alive and not silent and not oom else 1


def _duration(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
