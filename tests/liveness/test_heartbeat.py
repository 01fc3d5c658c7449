"""A heartbeat is its process's claim on its name: a second process of one name refuses to start,
one replaced while it hung stops when it comes back, and a dead or stopped holder frees the name."""

from __future__ import annotations

import subprocess

import pytest
import redis

from liveness.contract import Keys
from liveness.errors import NameTakenError
from liveness.heartbeat import Beacon, heartbeats, pid_alive
from tests.fixtures import heartbeat


def beacon(r: redis.Redis, keys: Keys, name: str = "ingest:cam1") -> Beacon:
    return Beacon(r, keys, name, "ingest")


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_second_process_of_one_name_refuses_to_start(r: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    first, second = beacon(r, keys), beacon(r, keys)
    first.beat("ready")
    with pytest.raises(NameTakenError, match=r"ingest:cam1: another process already beats under this name"):
        second.beat()
    hb = heartbeat(r, keys, "ingest:cam1")
    assert hb is not None and hb.claim == first.claim and hb.state == "ready"
    assert [b.claim for b in heartbeats(r, keys)[0]] == [first.claim], "one name, one process listed"
    second.stop()  # leaving after a refusal writes nothing over the holder's heartbeat
    assert heartbeat(r, keys, "ingest:cam1") == hb


def test_another_machine_holds_the_name_while_its_heartbeat_lives(r: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    elsewhere = beacon(r, keys)
    elsewhere.host = "another-machine"
    elsewhere.pid = dead_pid()  # a pid of another machine says nothing here
    elsewhere.beat("ready")
    with pytest.raises(NameTakenError, match="on another-machine"):
        beacon(r, keys).beat()


def test_a_stopped_or_dead_holder_frees_the_name(r: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    stopped = beacon(r, keys)
    stopped.beat("ready")
    stopped.stop()
    crashed = beacon(r, keys)
    crashed.beat("ready")
    pid = crashed.pid = dead_pid()  # the same machine, a pid that ended: a crash just now
    crashed.beat("waiting", for_s=5)
    assert not pid_alive(pid)
    restarted = beacon(r, keys)
    restarted.beat("ready")
    hb = heartbeat(r, keys, "ingest:cam1")
    assert hb is not None and hb.claim == restarted.claim


def test_a_process_replaced_while_it_hung_stops_when_it_comes_back(r: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    hung = beacon(r, keys)
    hung.beat("ready")
    r.delete(keys.heartbeat("ingest:cam1"))  # its heartbeat expired while it hung
    replacement = beacon(r, keys)
    replacement.beat("ready")
    with pytest.raises(NameTakenError, match="another process took over this name"):
        hung.beat("waiting", "stream lost")  # its next beat, whenever it comes
    hung.stop()
    hb = heartbeat(r, keys, "ingest:cam1")
    assert hb is not None and hb.claim == replacement.claim and hb.state == "ready"


def test_a_heartbeat_says_since_when_and_whether_it_was_ever_ready(r: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    cam = beacon(r, keys)
    cam.beat("waiting", "camera not open", for_s=30)
    hb = heartbeat(r, keys, "ingest:cam1")
    assert hb is not None and hb.ready_ts is None and hb.expires_ts is not None
    assert hb.expires_ts - hb.ts >= 30 and r.ttl(keys.heartbeat("ingest:cam1")) > 30
    cam.beat("ready")
    cam.beat("waiting", "stream lost")
    lost = heartbeat(r, keys, "ingest:cam1")
    assert lost is not None and lost.ready_ts is not None and lost.since_ts is not None
    assert lost.ready_ts <= lost.since_ts <= lost.ts
