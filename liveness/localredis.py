"""A private Redis for the main job on a machine where none is configured."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time

import redis

from liveness.errors import LivenessError

log = logging.getLogger(__name__)


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """``redis-server`` on a free loopback port, keeping nothing on disk; stopped on exit."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise LivenessError("no Redis configured and redis-server is not installed "
                                "(Debian/Ubuntu: apt-get install redis-server)")
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="liveness-redis-")
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self._dir.name, "--maxmemory", "512mb", "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                log.info("private Redis on 127.0.0.1:%d", self.port)
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        self.close()
        raise LivenessError("the private redis-server did not start")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(10)
        self._dir.cleanup()


def answers(url: str) -> bool:
    """True when a Redis answers at ``url`` within a second."""
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False
