"""How every service process starts (stop on SIGTERM/SIGINT, serve metrics, wait for Redis, beat)
and how the threads of one process end together (``Crew``)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable

import redis

from liveness.config import Settings
from liveness.contract import Keys, Role
from liveness.heartbeat import Beacon
from liveness.metrics import serve
from liveness.redisconn import connect, wait_until_up

log = logging.getLogger(__name__)


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


class Crew:
    """Threads of one process that end together.

    When one returns or raises, ``stop`` is set so the others finish too, and ``wait()`` raises
    the exception that ended one. Why: a process whose consumer thread died beside a live
    metrics loop looks healthy, and no supervisor restarts it.
    """

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self._members: list[tuple[threading.Thread, Callable[[], None] | None]] = []
        self._errors: list[BaseException] = []

    def start(self, name: str, target: Callable[[], object], close: Callable[[], None] | None = None) -> None:
        """Run ``target`` in a thread; ``close`` asks it to return once ``stop`` is set (None: it watches ``stop``)."""
        thread = threading.Thread(target=self._guard, args=(name, target), name=name, daemon=True)
        self._members.append((thread, close))
        thread.start()

    def _guard(self, name: str, target: Callable[[], object]) -> None:
        try:
            target()
        except BaseException as e:  # noqa: BLE001 - raised again by wait(), in the main thread
            log.error("%s: ended by %s; stopping the process", name, type(e).__name__)
            self._errors.append(e)
        finally:
            self.stop.set()

    def wait(self, join_s: float = 30.0) -> None:
        """Until ``stop`` is set; then let the threads finish, in start order, and raise what ended one, if anything."""
        while not self.stop.wait(1.0):
            pass
        deadline = time.monotonic() + join_s
        for thread, close in self._members:
            if close is not None:
                close()
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._errors:
            raise self._errors[0]
