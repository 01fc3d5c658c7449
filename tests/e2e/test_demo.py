"""The README's first command: ``liveness run`` with no config runs the demo camera (a printed
photo held in a hand) through the real pipeline and prints its decision: spoof."""

from __future__ import annotations

import os
import subprocess

import redis

from liveness.contract import Decision, Keys
from tests.conftest import REDIS_URL, liveness_cmd


def test_run_without_config_decides_the_demo_print_is_spoof(r: redis.Redis, prefix: str) -> None:
    env = {**os.environ, "LIVENESS_REDIS__URL": REDIS_URL, "LIVENESS_PREFIX": prefix, "LIVENESS_METRICS__PORT": "0"}
    env.pop("LIVENESS_CONFIG", None)
    res = subprocess.run(liveness_cmd("run", "--duration", "40"), env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [line for line in res.stdout.splitlines() if "demo-print" in line]
    assert lines, f"no decision printed: {res.stdout[-2000:]} {res.stderr[-2000:]}"
    assert "SPOOF" in lines[-1]
    decisions = [Decision.from_fields(f) for _, f in r.xrange(Keys(prefix).stream(Decision))]
    assert decisions and decisions[-1].verdict == "spoof" and decisions[-1].label == "spoof"
    assert "Traceback" not in res.stderr
