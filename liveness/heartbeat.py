"""Heartbeats: each service process says in Redis that it is alive, whether it is ready, and
where its metrics are.

A beat rewrites the process's whole ``Heartbeat`` hash with a TTL and stamps its name in
``Keys.services``, in one MULTI/EXEC; the hash is emptied first (EXPIRE 0, which the services'
ACL allows), so whatever was at the key, of any type, is replaced. Beats come from the
process's own loop, not from a thread of their own: a loop that hangs stops beating, and its
heartbeat expires. A failed beat is retried later and never stops the service: its loop meets
the same Redis outage and waits it out.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from typing import cast

import redis

from liveness.contract import Heartbeat, Keys, Role, ServiceState, is_id
from liveness.errors import PoisonMessageError

log = logging.getLogger(__name__)

EVERY_S = 1.0
"""Time between two beats of a process in the same state, seconds."""

TTL_S = 10.0
"""Life of a heartbeat not renewed, seconds: ten missed beats, so a long batch is no death."""

LISTED_S = 600.0
"""How long a process that stopped beating without saying so stays in ``Keys.services``, seconds."""


class Beacon:
    """The heartbeat of one process; ``beat()`` from its loop as often as it likes."""

    def __init__(self, client: redis.Redis, keys: Keys, name: str, role: Role, metrics_port: int | None = None) -> None:
        self.redis = client
        self.keys = keys
        self.name = name
        self.role = role
        self.metrics_port = metrics_port
        self.state: ServiceState = "starting"
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_ts = time.time()
        self._next = 0.0
        self._failures = 0

    def beat(self, state: ServiceState | None = None, detail: str = "", for_s: float = 0.0) -> None:
        """Write the heartbeat if one is due or the state changed.

        ``for_s``: the process will not beat again for that long (a camera's reconnect wait), so
        the heartbeat lives that much longer.
        """
        now = time.monotonic()
        if (state is None or state == self.state) and now < self._next:
            return
        self.state = state or self.state
        wall = time.time()
        hb = Heartbeat(self.name, self.role, self.state, self.host, self.pid, self.started_ts, wall, self.metrics_port,
                       detail)
        key = self.keys.heartbeat(self.name)
        pipe = self.redis.pipeline(transaction=True)
        pipe.expire(key, 0)
        pipe.hset(key, mapping=hb.to_fields())
        if self.state == "stopped":
            pipe.expire(key, math.ceil(TTL_S))
            pipe.zrem(self.keys.services, self.name)
        else:
            pipe.expire(key, math.ceil(TTL_S + for_s))
            pipe.zadd(self.keys.services, {self.name: wall})
            pipe.zremrangebyscore(self.keys.services, "-inf", wall - LISTED_S)
            pipe.zremrangebyscore(self.keys.services, wall + LISTED_S, "+inf")  # no beat comes from the future
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis.RedisError as e:
            self._failures += 1
            self._next = now + min(EVERY_S * 2 ** self._failures, 30.0)
            if isinstance(e, redis.OutOfMemoryError):
                log.warning("%s: heartbeat not written: Redis out of memory (maxmemory reached)", self.name)
            elif isinstance(e, redis.ResponseError):  # refused (e.g. an ACL without these commands): say so
                log.warning("%s: heartbeat refused by Redis: %s", self.name, e)
            else:
                log.debug("%s: heartbeat not written (%s)", self.name, type(e).__name__)
            return
        self._failures = 0
        self._next = now + EVERY_S
        if any(isinstance(r, redis.ResponseError) for r in replies):
            # only the services set can refuse (the hash was emptied first): another type is at its key
            log.warning("%s: %s is not a sorted set; reset", self.name, self.keys.services)
            self.redis.expire(self.keys.services, 0)
            self._next = now

    def stop(self) -> None:
        """A clean exit: the heartbeat says so for a while and the process leaves the list."""
        self._next = 0.0
        self.beat("stopped")


def out_of_memory(client: redis.Redis, keys: Keys) -> bool:
    """Whether Redis refuses writes for want of memory (maxmemory): then no process can beat, and
    a silent one may be well. Asked with a write that changes nothing (ZADD XX of a name no
    process has), which every service's Redis user may run."""
    try:
        client.zadd(keys.services, {"": 0}, xx=True)
    except redis.OutOfMemoryError:
        return True
    except redis.RedisError:
        pass
    return False


def heartbeats(client: redis.Redis, keys: Keys) -> tuple[list[Heartbeat], list[str]]:
    """The heartbeats of the listed processes, and the names of those listed that stopped beating
    (crashed, hung or cut off from Redis) without saying so. Members that cannot be a service's
    name are not listed."""
    try:
        members = cast(list[bytes], client.zrange(keys.services, 0, -1))
    except redis.ResponseError:  # not a sorted set: the next beat resets it
        members = []
    names = [name for name in (m.decode("utf-8", "replace") for m in members) if is_id(name)]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.heartbeat(name))
    alive: list[Heartbeat] = []
    silent: list[str] = []
    for name, fields in zip(names, pipe.execute(raise_on_error=False)):
        hb = read(fields)
        if hb is None:
            silent.append(name)
        else:
            alive.append(hb)
    return alive, silent


def read(fields: object) -> Heartbeat | None:
    """A heartbeat hash as HGETALL returns it; None if absent (expired), of another type or garbled."""
    if not isinstance(fields, dict) or not fields:
        return None
    try:
        return Heartbeat.from_fields(fields)
    except PoisonMessageError:
        return None
