"""Clip jobs through rq on real Redis: a real clip analysed by the offline pipeline."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import redis
import yaml

from tests.conftest import REDIS_URL, liveness_cmd, nuaa_sequence
from tests.fixtures import make_clip


def test_analyze_job_decides_a_real_clip(r: redis.Redis, prefix: str, tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"prefix": prefix, "redis": {"url": REDIS_URL}}))
    clip = make_clip(nuaa_sequence("ImposterRaw/0001_00_00_01"), tmp_path / "photo.avi")
    queued = subprocess.run(liveness_cmd("analyze", "--config", str(cfg), str(clip)), capture_output=True, text=True,
                            timeout=60)
    assert queued.returncode == 0, queued.stderr
    job_id = queued.stdout.split()[1]
    worker = subprocess.run(liveness_cmd("jobs-worker", "--config", str(cfg), "--burst"), capture_output=True,
                            text=True, timeout=300)
    assert worker.returncode == 0, worker.stderr[-2000:]
    listed = subprocess.run(liveness_cmd("jobs", "--config", str(cfg)), capture_output=True, text=True, timeout=60)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    mine = next(row for row in rows if row["job"] == job_id)
    assert mine["status"] == "finished" and mine["clip"] == str(clip)
    assert mine["decision"] == "spoof", mine  # 100 frames of a printed photo: long enough to decide, never live
    waited = subprocess.run(liveness_cmd("analyze", "--config", str(cfg), "--wait", "--timeout", "5", str(clip)),
                            capture_output=True, text=True, timeout=60)
    assert waited.returncode == 1, "nothing runs the second job: --wait gives up with an error"
    for key in r.scan_iter(f"rq:*{prefix}*"):
        r.delete(key)
