"""Prometheus finds every process without guessing: ``liveness run`` writes the file_sd targets of
``deploy/prometheus/prometheus-local.yml`` from the heartbeats, a process started beside it is
found too, and a process that stopped leaves: no target down that is not a real failure."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import redis
import yaml

from liveness.contract import Keys
from liveness.heartbeat import heartbeats
from tests.conftest import REDIS_URL, ROOT, free_port, free_port_block, liveness_cmd, nuaa_sequence, wait_for
from tests.e2e.test_pipeline import prom_query
from tests.fixtures import FAULT_CLIPS, make_clip, wait_state

HOST = socket.gethostname()


def scraped(port: int) -> dict[str, str] | None:
    """Instance -> its ``up`` value, as the Prometheus on ``port`` sees them; None until it answers."""
    try:
        return {s["metric"]["instance"]: s["value"][1] for s in prom_query(port, "up")}
    except OSError:
        return None


def test_prometheus_scrapes_exactly_the_processes_that_beat(tmp_path: Path, prefix: str, r: redis.Redis) -> None:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed (.ci/run installs Debian's prometheus package)")
    keys = Keys(prefix)
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    shipped = yaml.safe_load((ROOT / "deploy/prometheus/prometheus-local.yml").read_text())
    shipped["global"]["scrape_interval"] = "1s"  # the shipped discovery, scraped faster
    (prom_dir / "prometheus.yml").write_text(yaml.safe_dump(shipped))
    targets = prom_dir / "targets" / "liveness.json"
    clip = make_clip(nuaa_sequence(FAULT_CLIPS["live-a"]), tmp_path / "cam.avi")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "prefix": prefix, "redis": {"url": REDIS_URL},
        "metrics": {"port": free_port_block(5), "host": "127.0.0.1", "targets_file": str(targets)},
        "ingest": {"eyes": True},  # so that run starts an eye worker too
        "cameras": [{"id": "cam", "source": str(clip)}]}))
    run = subprocess.Popen(liveness_cmd("run", "--config", str(config), "--loop"), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    prom_port = free_port()
    prom = subprocess.Popen(["prometheus", f"--config.file={prom_dir / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    extra = None
    try:
        wait_state(r, keys, f"fusion-1.{HOST}", f"face-1.{HOST}", f"eye-1.{HOST}", "ingest:cam", timeout_s=120)
        # a process run does not know of, on the first free port after run's
        extra = subprocess.Popen(liveness_cmd("fusion", "--config", str(config), "--name", "extra"),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_state(r, keys, "extra")

        def beating() -> set[str]:
            return {f"127.0.0.1:{hb.metrics_port}" for hb in heartbeats(r, keys)[0] if hb.metrics_port}

        assert len(beating()) == 6, "five processes of run, its supervisor and one started beside it"
        wait_for(lambda: scraped(prom_port) == {t: "1" for t in beating()}, timeout_s=60, every_s=1)
        extra.send_signal(signal.SIGTERM)
        extra.wait(60)
        assert len(beating()) == 5
        wait_for(lambda: scraped(prom_port) == {t: "1" for t in beating()}, timeout_s=60, every_s=1)
        run.send_signal(signal.SIGTERM)
        run.wait(60)
        assert json.loads(targets.read_text()) == [], "run's processes stopped: nothing left to find down"
    finally:
        for proc in (extra, run, prom):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
