"""A private Redis for the main job on a machine where none is configured."""

from __future__ import annotations

import logging
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from liveness.errors import LivenessError
from liveness.supervisor import die_with_parent

log = logging.getLogger(__name__)


def no_retry() -> Retry:
    """For pings whose caller decides what comes next: redis-py would retry a refusal for seconds."""
    return Retry(NoBackoff(), 0)


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """``redis-server`` on a free loopback port, keeping nothing on disk; stopped on exit.

    It wants a password made up at start: any local user can reach a loopback port. The password
    reaches redis-server in a config file only we can read (never on its command line, which
    ``ps`` shows) and the children in ``url``, which must not be logged unredacted.
    """

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise LivenessError("no Redis configured and redis-server is not installed "
                                "(Debian/Ubuntu: apt-get install redis-server)")
        self.port = free_port()
        password = secrets.token_urlsafe(32)
        self._dir = tempfile.TemporaryDirectory(prefix="liveness-redis-")
        config = Path(self._dir.name) / "redis.conf"
        config.touch(mode=0o600)
        config.write_text(f"port {self.port}\nbind 127.0.0.1\nrequirepass {password}\nsave \"\"\nappendonly no\n"
                          f"dir {self._dir.name}\nmaxmemory 512mb\nmaxmemory-policy noeviction\n")
        # SIGTERM when we die, even killed: no Redis left behind holding crops (before any thread starts)
        self._proc = subprocess.Popen([binary, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      preexec_fn=die_with_parent)
        self.url = f"redis://:{password}@127.0.0.1:{self.port}/0"
        client = redis.Redis.from_url(self.url, retry=no_retry())
        for _ in range(100):
            try:
                client.ping()
                log.info("private Redis on 127.0.0.1:%d, with a password", self.port)
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

