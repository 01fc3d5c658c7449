"""How every service process starts: stop on SIGTERM/SIGINT, serve metrics, wait for Redis, beat."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass

import redis

from liveness.config import Settings
from liveness.contract import Keys, Role
from liveness.heartbeat import Beacon
from liveness.metrics import serve
from liveness.redisconn import connect, wait_until_up


@dataclass
class Service:
    """What a started service process holds: its Redis client, its stop event and its heartbeat."""

    client: redis.Redis
    stop: threading.Event
    beacon: Beacon


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: loops finish their batch and return."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def start(settings: Settings, name: str, role: Role, metrics_port: int | None = None) -> Service | None:
    """A service's Redis client, stop event and heartbeat (beating ``starting``); None if it was
    stopped while Redis was down."""
    stop = stop_on_signals()
    port = serve(settings.metrics, name, metrics_port)
    client = connect(settings.redis)
    if not wait_until_up(client, name, settings.redis.url, stop):
        return None
    beacon = Beacon(client, Keys(settings.prefix), name, role, port)
    beacon.beat()
    return Service(client, stop, beacon)
