"""One supervisor or none: a second installation of the same cameras refuses to start, a hung
child is restarted as a crashed one is, and no child outlives a killed supervisor.

One ``liveness run`` (a looping file camera, a worker of each kind, fusion) serves the module; its
last test kills it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redis
import yaml

from liveness.contract import Keys
from liveness.heartbeat import TTL_S, heartbeats, pid_alive
from tests.conftest import REDIS_URL, PrivateRedisServer, liveness_cmd, nuaa_sequence, wait_for
from tests.fixtures import FAULT_CLIPS, heartbeat, make_clip, wait_state

HOST = socket.gethostname()
CHILDREN = (f"fusion-1.{HOST}", f"face-1.{HOST}", f"eye-1.{HOST}", "ingest:cam")
"""The heartbeat names of the run's children."""


class Run:
    def __init__(self, config: Path, keys: Keys, proc: subprocess.Popen[str], client: redis.Redis) -> None:
        self.config = config
        self.keys = keys
        self.proc = proc
        self.redis = client

    def pid(self, name: str) -> int:
        hb = heartbeat(self.redis, self.keys, name)
        assert hb is not None, f"{name} does not beat"
        return hb.pid


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("supervision")
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    clip = make_clip(nuaa_sequence(FAULT_CLIPS["live-a"]), tmp / "cam.avi")
    config = tmp / "config.yaml"
    # the eye path on, so that run supervises a worker of each kind
    config.write_text(yaml.safe_dump({"prefix": prefix, "redis": {"url": REDIS_URL}, "metrics": {"port": 0},
                                      "ingest": {"eyes": True}, "cameras": [{"id": "cam", "source": str(clip)}]}))
    client = redis.Redis.from_url(REDIS_URL)
    with (tmp / "run.log").open("w") as log:
        proc = subprocess.Popen(liveness_cmd("run", "--config", str(config), "--loop"), stdout=log,
                                stderr=subprocess.STDOUT, text=True)
    keys = Keys(prefix)
    try:
        wait_state(client, keys, *CHILDREN, timeout_s=120)
        yield Run(config, keys, proc, client)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)
        print((tmp / "run.log").read_text(errors="replace")[-4000:])
        for key in client.scan_iter(f"{prefix}:*", count=1000):
            client.delete(key)


def test_a_second_run_of_the_same_cameras_refuses_to_start(run: Run) -> None:
    before = {name: run.pid(name) for name in CHILDREN}
    second = subprocess.run(liveness_cmd("run", "--config", str(run.config), "--duration", "30"),
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr[-2000:]
    assert "another installation runs under prefix" in second.stderr and "ingest:cam (pid" in second.stderr
    assert "Traceback" not in second.stderr
    assert {name: run.pid(name) for name in CHILDREN} == before, "the first installation runs on untouched"


def test_a_second_ingest_of_a_camera_refuses_to_start(run: Run) -> None:
    owner = run.pid("ingest:cam")
    second = subprocess.run(liveness_cmd("ingest", "--config", str(run.config), "--camera", "cam"),
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"ingest:cam: another process already beats under this name under prefix {run.keys.prefix!r}: " \
           f"pid {owner} on {HOST}" in second.stderr
    listed = [hb for hb in heartbeats(run.redis, run.keys)[0] if hb.name == "ingest:cam"]
    assert [hb.pid for hb in listed] == [owner]


def test_a_hung_child_is_restarted_within_two_heartbeat_lives(run: Run) -> None:
    name = f"face-1.{HOST}"
    hung = run.pid(name)
    stopped_at = time.monotonic()
    os.kill(hung, signal.SIGSTOP)
    try:
        wait_for(lambda: (hb := heartbeat(run.redis, run.keys, name)) is not None and hb.pid != hung,
                 timeout_s=2 * TTL_S)
        print(f"hung face worker restarted {time.monotonic() - stopped_at:.1f} s after SIGSTOP")
        wait_for(lambda: not pid_alive(hung), timeout_s=5)
    finally:
        if pid_alive(hung):
            os.kill(hung, signal.SIGKILL)
    wait_state(run.redis, run.keys, name)
    assert run.proc.poll() is None


def test_no_child_outlives_a_killed_supervisor(run: Run) -> None:
    children = {name: run.pid(name) for name in CHILDREN}
    run.proc.kill()
    run.proc.wait(10)
    killed_at = time.monotonic()
    wait_for(lambda: not any(pid_alive(pid) for pid in children.values()), timeout_s=5, every_s=0.1)
    print(f"every child ended {time.monotonic() - killed_at:.1f} s after the supervisor's SIGKILL")


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, as the kernel lists children."""
    try:
        children = {int(c) for t in Path(f"/proc/{pid}/task").iterdir()
                    for c in (t / "children").read_text().split()}
    except FileNotFoundError:
        return set()
    return children.union(*(descendants(c) for c in children))


def test_a_killed_run_leaves_neither_children_nor_its_private_redis(tmp_path: Path) -> None:
    clip = make_clip(nuaa_sequence(FAULT_CLIPS["live-a"]), tmp_path / "cam.avi")
    config = tmp_path / "config.yaml"  # no redis.url: run starts a private Redis of its own
    config.write_text(yaml.safe_dump({"prefix": "supervision", "metrics": {"port": 0}, "ingest": {"eyes": True},
                                      "cameras": [{"id": "cam", "source": str(clip)}]}))
    run = subprocess.Popen(liveness_cmd("run", "--config", str(config), "--loop"), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        # the private redis-server, the fork server and its four children (and the resource tracker)
        tree = wait_for(lambda: d if len(d := descendants(run.pid)) >= 7 else None, timeout_s=120)
        assert any(Path(f"/proc/{p}/comm").read_text().strip() == "redis-server" for p in tree)
    finally:
        run.kill()
        run.wait(10)
    wait_for(lambda: not any(pid_alive(p) for p in tree), timeout_s=5, every_s=0.1)


def test_no_child_is_killed_for_a_redis_out_of_memory(private_redis: PrivateRedisServer, tmp_path: Path) -> None:
    r = private_redis.client()
    keys = Keys("oom")
    clip = make_clip(nuaa_sequence(FAULT_CLIPS["live-a"]), tmp_path / "cam.avi")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"prefix": keys.prefix, "redis": {"url": private_redis.url()},
                                      "metrics": {"port": 0}, "ingest": {"eyes": True},  # an eye worker too
                                      "cameras": [{"id": "cam", "source": str(clip)}]}))
    log = tmp_path / "run.log"
    with log.open("w") as out:
        run = subprocess.Popen(liveness_cmd("run", "--config", str(config), "--loop"), stdout=out,
                               stderr=subprocess.STDOUT, text=True)
    try:
        before = {name: hb.pid for name, hb in wait_state(r, keys, *CHILDREN, timeout_s=120).items()}
        r.config_set("maxmemory", 1)  # every write refused: no process can beat
        try:
            wait_for(lambda: all(heartbeat(r, keys, name) is None for name in CHILDREN), timeout_s=3 * TTL_S)
            wait_for(lambda: "supervisor: Redis out of memory" in log.read_text(), timeout_s=10)
        finally:
            r.config_set("maxmemory", 0)
        after = {name: hb.pid for name, hb in wait_state(r, keys, *CHILDREN, timeout_s=60).items()}
        assert after == before, "nobody was restarted"
        assert "stopped beating" not in log.read_text()
    finally:
        run.terminate()
        run.wait(60)
