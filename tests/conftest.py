"""Shared fixtures: real Redis under a private key prefix, a real RTSP server, NUAA frames."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIVENESS_SHARED", ROOT.parent / "shared"))
NUAA = SHARED / "data" / "nuaa-train"
REDIS_URL = os.environ.get("LIVENESS_TEST_REDIS", "redis://127.0.0.1:6379/0")
SYSTEM_PYTHON = os.environ.get("LIVENESS_SYSTEM_PYTHON", "/usr/bin/python3")
SLOW = os.environ.get("LIVENESS_SLOW") == "1"
"""Run the tests marked ``slow`` (minutes each, e.g. the 10-minute soak); the default run stays short."""

ALLOWED_SKIPS = ("slow",)
"""The markers whose tests may be skipped: ``slow`` (opt-in with LIVENESS_SLOW=1). Any other skip, a
missing tool or package included, fails the run: a test that did not run proved nothing."""

_skips: dict[str, list[str]] = {"allowed": [], "unexpected": []}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``slow`` tests unless LIVENESS_SLOW=1: each has a short counterpart in the default run."""
    if SLOW:
        return
    skip = pytest.mark.skip(reason="slow: runs with LIVENESS_SLOW=1")
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(skip)


def _record_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    allowed = any(marker in getattr(report, "keywords", {}) for marker in ALLOWED_SKIPS)
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    _skips["allowed" if allowed else "unexpected"].append(f"{report.nodeid}: {reason}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _record_skip(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _record_skip(report)  # a module that skips itself while imported


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run with a skip off the allow-list fails, even when every test that ran passed."""
    if _skips["unexpected"] and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    allowed, unexpected = _skips["allowed"], _skips["unexpected"]
    terminalreporter.write_sep("-", f"skipped: {len(allowed) + len(unexpected)} ({len(allowed)} allowed: "
                                    f"{', '.join(ALLOWED_SKIPS)}; {len(unexpected)} unexpected)")
    for line in unexpected:
        terminalreporter.write_line(f"unexpected skip (fails the run): {line}", red=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(n: int, host: str = "127.0.0.1") -> int:
    """The first of ``n`` consecutive ports that are all free now, each checked by binding it.

    The block is picked below the kernel's ephemeral range, so that the ports the OS hands out on
    its own (``free_port``, client sockets) do not land in it while the test runs.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10000, max(10001, low - n))
        held: list[socket.socket] = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                held.append(s)
                s.bind((host, port))
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
        return base
    raise RuntimeError(f"no block of {n} free ports found")


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def r(prefix: str) -> Iterator[redis.Redis]:
    """A live Redis client; every key under the test's prefix is deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield client
    for key in client.scan_iter(f"{prefix}:*", count=1000):
        client.delete(key)


def nuaa_sequence(name: str) -> list[Path]:
    """Frames of one NUAA sequence, e.g. ``ClientRaw/0001_00_00_01``, in picture order."""
    folder, stem = name.split("/")
    frames = sorted((NUAA / folder / stem[:4]).glob(f"{stem}_*.jpg"), key=lambda p: int(p.stem.split("_")[-1]))
    assert frames, f"no frames for {name} under {NUAA}"
    return frames


def numbered_frames(frames: list[Path], dest: Path) -> str:
    """Symlink frames as 00000.jpg, 00001.jpg, ... (what multifilesrc needs); returns the pattern."""
    dest.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        (dest / f"{i:05d}.jpg").symlink_to(frame)
    return str(dest / "%05d.jpg")


class RtspServer:
    """GStreamer's RTSP server in a child process, serving NUAA sequences as looping cameras."""

    def __init__(self, mounts: dict[str, str], port: int, fps: float = 15.0) -> None:
        self.mounts = mounts
        self.port = port
        self.fps = fps
        self.proc: subprocess.Popen[str] | None = None

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{mount}"

    def start(self) -> None:
        args = [SYSTEM_PYTHON, str(ROOT / "app" / "rtsp_server.py"), "--port", str(self.port)]
        args += [f"{name}={pattern}@{self.fps}" for name, pattern in self.mounts.items()]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "ready" in line, f"RTSP server did not start: {line}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def rtsp(tmp_path: Path) -> Iterator[RtspServer]:
    """Two looping cameras: a live face and a printed-photo attack, both from NUAA session 01."""
    mounts = {
        "live": numbered_frames(nuaa_sequence("ClientRaw/0001_00_00_01"), tmp_path / "live"),
        "photo": numbered_frames(nuaa_sequence("ImposterRaw/0001_00_00_01"), tmp_path / "photo"),
    }
    server = RtspServer(mounts, free_port())
    server.start()
    yield server
    server.stop()


def liveness_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "liveness", *args]


def wait_for(predicate, timeout_s: float, every_s: float = 0.2):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something truthy; returns it, or fails the test."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    pytest.fail(f"condition not met within {timeout_s} s")


USERS_ACL = ROOT / "deploy/redis/users-acl.sh"
"""Writes the deployments' ACL file (docs/operations.md, "Trust"): what each user may run, on which keys."""

ROLE_USERS = {"ingest": "ingest", "face-worker": "worker", "eye-worker": "worker", "fusion": "fusion"}
"""The Redis user each service logs in as in the deployments; any other command runs as fusion's
(``liveness decisions``, ``liveness label``, as in the fusion container)."""


class PrivateRedisServer:
    """A redis-server of the test's own, with AOF as the deployments run it (``appendfsync
    everysec``), optionally with the deployments' ACL file (``acl_prefix``: their key prefix, each
    service logging in as its role's user, fusion with a decision key) and TLS."""

    def __init__(self, workdir: Path, tls: bool = False, acl_prefix: str | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = tls
        self.password = "s3cret-" + uuid.uuid4().hex[:16]
        """The admin's password (or the only one, without ACL)."""
        self.passwords = {user: f"{user}-{uuid.uuid4().hex[:16]}" for user in ("ingest", "worker", "fusion", "keda")}
        self.passwords["admin"] = self.password
        self.decision_key = "key-" + uuid.uuid4().hex
        self.args = ["redis-server", "--bind", "127.0.0.1", "--dir", str(self.dir), "--appendonly", "yes",
                     "--appendfsync", "everysec", "--save", ""]
        if acl_prefix is not None:
            env = {"PATH": os.environ["PATH"], "LIVENESS_PREFIX": acl_prefix,
                   **{f"REDIS_{user.upper()}_PASSWORD": password for user, password in self.passwords.items()}}
            acl = subprocess.run(["sh", str(USERS_ACL)], env=env, capture_output=True, text=True, check=True)
            (self.dir / "users.acl").write_text(acl.stdout)
            self.args += ["--aclfile", str(self.dir / "users.acl")]
        if tls:
            self.ca = make_certificates(self.dir)
            self.args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.dir / "server.crt"),
                          "--tls-key-file", str(self.dir / "server.key"), "--tls-ca-cert-file", str(self.ca),
                          "--tls-auth-clients", "no"]
        else:
            self.args += ["--port", str(self.port)]
        self.acl = acl_prefix is not None
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, user: str = "admin") -> str:
        scheme = "rediss" if self.tls else "redis"
        auth = f"{user}:{self.passwords[user]}@" if self.acl else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        kwargs = {"ssl_ca_certs": str(self.ca)} if self.tls else {}
        return redis.Redis.from_url(self.url("admin"), **kwargs)

    def env(self, command: str = "fusion") -> dict[str, str]:
        """The environment a deployment gives ``command`` (a ``liveness`` subcommand): its Redis URL,
        and fusion's decision key."""
        user = ROLE_USERS.get(command, "fusion")
        out = {"LIVENESS_REDIS__URL": self.url(user)}
        if self.acl and user == "fusion":
            out["LIVENESS_FUSION__DECISION_KEY"] = self.decision_key
        if self.tls:
            out["LIVENESS_REDIS__SSL_CA_CERTS"] = str(self.ca)
        return out

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _pings(self.client()), timeout_s=10, every_s=0.05)

    def stop(self) -> None:
        """A clean shutdown: SIGTERM makes Redis flush its AOF."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def kill(self) -> None:
        """A crash: SIGKILL, no shutdown; what Redis wrote to its AOF before replying is all that is left."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def make_certificates(folder: Path) -> Path:
    """A throw-away CA and a server certificate for 127.0.0.1 (openssl); returns the CA file."""
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=liveness-test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "san.ext", "-out", "server.crt")
    return folder / "ca.crt"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedisServer]:
    server = PrivateRedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
