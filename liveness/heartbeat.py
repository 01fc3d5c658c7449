"""Heartbeats: each service process says in Redis that it is alive, whether it is ready, and
where its metrics are.

A beat rewrites the process's whole ``Heartbeat`` hash with a TTL and stamps its name in
``Keys.services``, in one MULTI/EXEC; the hash is emptied first (EXPIRE 0, which the services'
ACL allows), so whatever was at the key, of any type, is replaced. Beats come from the
process's own loop, not from a thread of their own: a loop that hangs stops beating, and its
heartbeat expires. A failed beat is retried later and never stops the service: its loop meets
the same Redis outage and waits it out.

The heartbeat is also the process's claim on its name: a beat is written only under WATCH, after
reading who beats there now. A live process of another host or pid under the same name (a second
ingest of one camera) makes the first beat raise ``NameTakenError``, so the newcomer refuses to
start, and makes a later beat raise it too, so a process that hung, was replaced and came back
stops. A heartbeat that expired, said ``stopped``, or names a dead pid of this host is free.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import time
from pathlib import Path
from typing import cast

import redis

from liveness.contract import Heartbeat, Keys, Role, ServiceState, is_id
from liveness.errors import NameTakenError, PoisonMessageError

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
        self.since_ts = self.started_ts
        self.ready_ts: float | None = None
        self.claim = secrets.token_hex(8)
        self._held = False
        self._next = 0.0
        self._failures = 0

    def beat(self, state: ServiceState | None = None, detail: str = "", for_s: float = 0.0) -> None:
        """Write the heartbeat if one is due or the state changed.

        ``for_s``: the process will not beat again for that long (a camera's reconnect wait, or
        the blocking open of a camera), so the heartbeat lives that much longer; always written.
        """
        now = time.monotonic()
        if (state is None or state == self.state) and now < self._next and not for_s:
            return
        wall = time.time()
        if state is not None and state != self.state:
            self.since_ts = wall
        self.state = state or self.state
        if self.state == "ready":
            self.ready_ts = wall
        life_s = math.ceil(TTL_S if self.state == "stopped" else TTL_S + for_s)
        hb = Heartbeat(self.name, self.role, self.state, self.host, self.pid, self.started_ts, wall, self.metrics_port,
                       detail, self.since_ts, self.ready_ts, wall + life_s, self.claim)
        key = self.keys.heartbeat(self.name)
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.watch(key)
                other = holder(pipe, key, self.name, self.host, self.claim)
                if other is not None:
                    self._refuse(other)
                self._held = True
                pipe.multi()
                replies = self._write(pipe, key, hb, life_s)
        except redis.WatchError:  # another process wrote this heartbeat meanwhile: see who at once
            self._next = 0.0
            return
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

    def _refuse(self, other: Heartbeat) -> None:
        if self.state == "stopped":  # leaving anyway: the heartbeat is the other's, leave it be
            raise _Left()
        held, self._held = self._held, False
        what = "took over" if held else "already beats under"
        raise NameTakenError(
            f"{self.name}: another process {what} this name under prefix {self.keys.prefix!r}: pid {other.pid} on "
            f"{other.host}, {other.state}, up since {time.strftime('%H:%M:%S', time.localtime(other.started_ts))}. "
            f"Two processes of one name would do the same work twice and look like one; stop the other first "
            f"(or give this one another name or prefix)")

    def _write(self, pipe: redis.client.Pipeline, key: str, hb: Heartbeat, life_s: int) -> list[object]:
        """The beat itself, queued on a MULTI pipeline and executed; the replies."""
        wall = hb.ts
        pipe.expire(key, 0)
        pipe.hset(key, mapping=hb.to_fields())
        pipe.expire(key, life_s)
        if self.state == "stopped":
            pipe.zrem(self.keys.services, self.name)
        else:
            pipe.zadd(self.keys.services, {self.name: wall})
            pipe.zremrangebyscore(self.keys.services, "-inf", wall - LISTED_S)
            pipe.zremrangebyscore(self.keys.services, wall + LISTED_S, "+inf")  # no beat comes from the future
        return cast(list[object], pipe.execute(raise_on_error=False))

    def stop(self) -> None:
        """A clean exit: the heartbeat says so for a while and the process leaves the list (unless
        another process holds the name: then it is left alone)."""
        self._next = 0.0
        try:
            self.beat("stopped")
        except _Left:
            pass


class _Left(Exception):
    """A stopping process found its name held by another: nothing to write."""


def holder(client: redis.Redis | redis.client.Pipeline, key: str, name: str, host: str,
           claim: str | None = None) -> Heartbeat | None:
    """The live process, other than the one of ``claim``, whose heartbeat ``name`` holds ``key``; or None.

    Free: no heartbeat (expired), a garbled one or another type at the key, one that names another
    process or no claim, a ``stopped`` one, and one of a dead pid of ``host`` (this machine: a
    crash just now, restarted before its heartbeat expired).
    """
    try:
        hb = read(client.hgetall(key))
    except redis.ResponseError:
        return None
    if hb is None or hb.name != name or hb.claim is None or hb.claim == claim or hb.state == "stopped":
        return None
    if hb.host == host and not pid_alive(hb.pid):
        return None
    return hb


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine runs under ``pid`` (a zombie has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no procfs: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])


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
