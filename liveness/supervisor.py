"""Supervised processes: one per camera or worker, restarted with backoff when they crash or hang.

SIGINT/SIGTERM are passed on to every child, which drains (finishes and acknowledges its
batch) before it exits; children still alive after ``DRAIN_S`` are killed. Children are forked
from a fork server that has loaded what they all share (``PRELOAD``): a fresh, single-threaded
process, so forking is safe, and what it loaded is one copy in memory for every child.

No child outlives its supervisor: the fork server exits when the supervisor is gone (even
killed), and each child asks the kernel for SIGTERM when its parent, the fork server, dies
(``PR_SET_PDEATHSIG``). A child that hangs is restarted as one that crashed: given a Redis
client, the supervisor reads each child's heartbeat (``ProcessSpec.heartbeat``) and kills a
child whose heartbeat expired, which ``liveness status`` would list as silent.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from multiprocessing import forkserver
from typing import Any, Callable

import redis
from prometheus_client import Counter

from liveness.contract import Keys
from liveness.errors import LivenessError
from liveness.heartbeat import EVERY_S, TTL_S, out_of_memory, pid_alive, read
from liveness.redaction import redact_text

log = logging.getLogger(__name__)

RESTARTS = Counter("liveness_process_restarts_total", "Supervised processes restarted after exiting", ["process"])
HUNG = Counter("liveness_process_hung_total", "Supervised processes killed because their heartbeat expired", ["process"])

DRAIN_S = 15.0
"""Time children get to finish their batch after SIGTERM, seconds."""

BACKOFF_CAP_S = 30.0
"""Longest wait before restarting a crashed process, seconds."""

HEALTHY_S = 60.0
"""A process that ran this long resets its backoff."""

PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal a process gets when its parent dies (Linux)."""

PRELOAD = ["liveness.preload"]
"""Modules the fork server imports before it forks any child (see ``liveness.preload``)."""


@dataclass
class ProcessSpec:
    """What to run in a child process, and whether to restart it when it crashes (exits non-zero)."""

    name: str
    target: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    restart: bool = True
    heartbeat: str | None = None
    """The name the child beats under; a supervisor with Redis restarts it when that heartbeat expires."""
    process: mp.process.BaseProcess | None = field(default=None, repr=False)
    started: float = 0.0
    delay_s: float = 1.0
    restart_at: float | None = None
    beat_until: float | None = None
    """Monotonic time the child's last heartbeat seen expires; None before its first."""


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def _leave_fork_server_alone() -> None:
    """Close this child's copy of the fork server's "alive" pipe: the fork server exits when the
    pipe's last writer is gone, and only the supervisor should hold it, so that the fork server
    (and with it, through ``die_with_parent``, every child) ends when the supervisor ends."""
    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if isinstance(fd, int):
        os.close(fd)
        setattr(server, "_forkserver_alive_fd", None)


def _child(target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], name: str, level: int,
           environ: dict[str, str], cwd: str, supervisor: int) -> None:
    die_with_parent()
    _leave_fork_server_alone()
    if not pid_alive(supervisor):  # it died before we asked: nobody would ever stop us
        return
    # the fork server was started with the environment of the supervisor's first child: each
    # child gets the supervisor's environment and directory as they are now, as spawn would
    os.environ.clear()
    os.environ.update(environ)
    os.chdir(cwd)
    logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s [{name}] %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor sends SIGTERM; ^C is for it
    try:
        target(*args, **kwargs)
    except (LivenessError, redis.RedisError) as e:  # a clear line, not a traceback; the supervisor restarts us
        logging.getLogger(name).error("%s: %s: %s", name, type(e).__name__, redact_text(str(e)))
        sys.exit(2)


class Supervisor:
    """Starts the specs, restarts crashed or hung ones with backoff, stops them all on a signal.

    ``client`` and ``keys``: where the children beat; without them, hung children are not detected.
    """

    def __init__(self, specs: list[ProcessSpec], client: redis.Redis | None = None, keys: Keys | None = None) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate process names: {names}")
        self.specs = specs
        self.redis = client
        self.keys = keys or Keys()
        self.host = socket.gethostname()
        self._next_watch = 0.0
        self._redis_lost = False
        self._stopping = False
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(PRELOAD)

    def _start(self, spec: ProcessSpec) -> None:
        level = logging.getLogger().level
        spec.process = self._ctx.Process(target=_child, name=spec.name, daemon=False,
                                         args=(spec.target, spec.args, spec.kwargs, spec.name, level,
                                               dict(os.environ), os.getcwd(), os.getpid()))
        spec.process.start()
        spec.started = time.monotonic()
        spec.restart_at = None
        spec.beat_until = None
        log.info("supervisor: started %s (pid %s)", spec.name, spec.process.pid)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if not self._stopping:
            log.info("supervisor: %s, draining", signal.Signals(signum).name)
        self._stopping = True

    def run(self, until: Callable[[], bool] | None = None, stop_after: bool = True) -> int:
        """Run until every non-restarting child is done, a signal arrives, or ``until()`` is true.

        With ``stop_after=False`` the children are left running for the caller to ``stop()``.
        """
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        for spec in self.specs:
            self._start(spec)
        worst = 0
        while not self._stopping and not (until and until()):
            now = time.monotonic()
            self._kill_hung(now)
            running = 0
            for spec in self.specs:
                proc = spec.process
                assert proc is not None
                if proc.is_alive():
                    running += 1
                    continue
                if spec.restart_at is None:
                    code = proc.exitcode or 0
                    if not spec.restart or code == 0:  # a clean exit (a file camera's end) is done
                        worst = max(worst, abs(code))
                        continue
                    if now - spec.started > HEALTHY_S:
                        spec.delay_s = 1.0
                    log.warning("supervisor: %s exited with %s; restarting in %.0f s", spec.name, code, spec.delay_s)
                    spec.restart_at = now + spec.delay_s
                    spec.delay_s = min(spec.delay_s * 2, BACKOFF_CAP_S)
                    running += 1
                elif now >= spec.restart_at:
                    RESTARTS.labels(spec.name).inc()
                    self._start(spec)
                    running += 1
                else:
                    running += 1
            if running == 0:
                break
            time.sleep(0.2)
        if stop_after or self._stopping:
            self.stop()
        return worst

    def _kill_hung(self, now: float) -> None:
        """Kill each child whose heartbeat expired (SIGKILL: a stopped process takes no SIGTERM), so
        the loop restarts it as a crashed one. Its heartbeat must be its own (pid and host), and a
        supervisor that cannot tell judges nobody: not while Redis is unreachable or out of memory
        (no process can beat then), and after that each child gets a heartbeat's life to beat again."""
        if self.redis is None or now < self._next_watch:
            return
        self._next_watch = now + EVERY_S
        watched = [s for s in self.specs if s.heartbeat and s.process is not None and s.process.is_alive()]
        pipe = self.redis.pipeline(transaction=False)
        for spec in watched:
            pipe.hgetall(self.keys.heartbeat(spec.heartbeat or ""))
        try:
            replies = pipe.execute(raise_on_error=False)
            wall = time.time()
            overdue = []
            for spec, fields in zip(watched, replies):
                assert spec.process is not None
                hb = read(fields)
                if self._redis_lost and spec.beat_until is not None:
                    spec.beat_until = max(spec.beat_until, now + TTL_S)
                if hb is not None and hb.pid == spec.process.pid and hb.host == self.host:
                    # a clean exit drains, however long: not a hang
                    spec.beat_until = None if hb.state == "stopped" else now + (hb.expires_ts or hb.ts + TTL_S) - wall
                elif spec.beat_until is not None and now > spec.beat_until:
                    overdue.append(spec)
            if overdue and out_of_memory(self.redis, self.keys):
                if not self._redis_lost:
                    log.warning("supervisor: Redis out of memory: %s not beating, not judged (no process can write)",
                                ", ".join(s.name for s in overdue))
                self._redis_lost = True
                return
        except redis.RedisError:
            self._redis_lost = True
            return
        self._redis_lost = False
        for spec in overdue:
            assert spec.process is not None
            log.warning("supervisor: %s (pid %s) stopped beating: no heartbeat for over %.0f s; killing it",
                        spec.name, spec.process.pid, TTL_S)
            HUNG.labels(spec.name).inc()
            spec.process.kill()
            spec.beat_until = None

    def stop(self, prefix: str = "") -> None:
        """SIGTERM the children (those whose name starts with ``prefix``), let them drain, kill the rest."""
        alive = [s.process for s in self.specs
                 if s.name.startswith(prefix) and s.process is not None and s.process.is_alive()]
        for proc in alive:
            proc.terminate()
        deadline = time.monotonic() + DRAIN_S
        for proc in alive:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("supervisor: %s did not drain in %.0f s, killing", proc.name, DRAIN_S)
                proc.kill()
                proc.join(2.0)
