"""How every service process starts: stop on SIGTERM/SIGINT, serve metrics, wait for Redis."""

from __future__ import annotations

import signal
import threading

import redis

from liveness.config import Settings
from liveness.metrics import serve
from liveness.redisconn import connect, wait_until_up


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: loops finish their batch and return."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def start(settings: Settings, name: str, metrics_port: int | None = None) -> tuple[redis.Redis, threading.Event] | None:
    """The Redis client and stop event of a service; None if it was stopped while Redis was down."""
    stop = stop_on_signals()
    serve(settings.metrics, name, metrics_port)
    client = connect(settings.redis)
    if not wait_until_up(client, name, settings.redis.url, stop):
        return None
    return client, stop
