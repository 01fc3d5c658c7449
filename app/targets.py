"""Prometheus targets from the heartbeats: every process that beats, where it serves its metrics.

Written as a file_sd JSON file (``deploy/prometheus/prometheus-local.yml`` reads
``deploy/prometheus/targets/*.json``), so Prometheus scrapes exactly the processes that run,
whatever ports they took and on whichever machine, and none that do not: a target is down only
while a process that beat went silent. ``liveness run`` keeps the file of ``metrics.targets_file``
current; ``liveness targets`` writes it for an installation without ``run``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import redis

from liveness.config import MetricsSettings, load_settings
from liveness.contract import Heartbeat, Keys
from liveness.heartbeat import heartbeats
from liveness.lifecycle import stop_on_signals
from liveness.redisconn import connect

EVERY_S = 2.0
"""Time between two writes of the targets file, seconds."""


def target_groups(alive: list[Heartbeat], metrics: MetricsSettings, prefix: str) -> list[dict[str, Any]]:
    """One file_sd group per process with a metrics port: this machine's at the configured metrics
    address (loopback when it listens on every address), another machine's at its host name."""
    here = socket.gethostname()
    local = "127.0.0.1" if _any_address(metrics.host) else metrics.host
    return [{"targets": [f"{local if hb.host == here else hb.host}:{hb.metrics_port}"],
             "labels": {"name": hb.name, "role": hb.role, "host": hb.host, "prefix": prefix}}
            for hb in sorted(alive, key=lambda hb: hb.name) if hb.metrics_port]


def write_targets(client: redis.Redis, keys: Keys, metrics: MetricsSettings, path: Path) -> int:
    """Rewrite ``path`` atomically (Prometheus never reads half a file) with the processes beating
    now; returns how many it lists."""
    groups = target_groups(heartbeats(client, keys)[0], metrics, keys.prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(groups, indent=1) + "\n")
    os.replace(tmp, path)
    return len(groups)


def _any_address(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return host == ""


class TargetsWriter:
    """Keeps a targets file current from a loop that calls ``due()``; Redis outages skip a round."""

    def __init__(self, client: redis.Redis, keys: Keys, metrics: MetricsSettings, path: Path,
                 every_s: float = EVERY_S) -> None:
        self.client, self.keys, self.metrics, self.path, self.every_s = client, keys, metrics, path, every_s
        self._next = 0.0

    def due(self, force: bool = False) -> None:
        """Rewrite the file if ``every_s`` passed since the last time (or ``force``)."""
        now = time.monotonic()
        if now < self._next and not force:
            return
        self._next = now + self.every_s
        try:
            write_targets(self.client, self.keys, self.metrics, self.path)
        except (redis.ConnectionError, redis.TimeoutError):
            pass  # the file keeps the last processes known; the next round writes them afresh


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    client = connect(settings.redis)
    keys = Keys(settings.prefix)
    path = Path(args.out)
    if args.every is None:
        print(f"{write_targets(client, keys, settings.metrics, path)} target(s) written to {path}")
        return 0
    stop = stop_on_signals()
    writer = TargetsWriter(client, keys, settings.metrics, path, args.every)
    while not stop.is_set():
        writer.due()
        stop.wait(min(args.every, 1.0))
    return 0
