"""The README's first command: ``liveness run`` with no config runs the demo camera (a printed
photo held in a hand) through the real pipeline and prints its decision, once: spoof. It runs
under a prefix of its own, so it never shows in the site's decisions, accuracy or targets."""

from __future__ import annotations

import os
import subprocess

import redis

from liveness.app.run import demo_prefix
from liveness.contract import Decision, Keys
from tests.conftest import REDIS_URL, liveness_cmd


def test_run_without_config_decides_the_demo_print_is_spoof(r: redis.Redis, prefix: str) -> None:
    env = {**os.environ, "LIVENESS_REDIS__URL": REDIS_URL, "LIVENESS_PREFIX": prefix, "LIVENESS_METRICS__PORT": "0"}
    env.pop("LIVENESS_CONFIG", None)
    demo = Keys(demo_prefix(prefix))
    try:
        res = subprocess.run(liveness_cmd("run", "--duration", "40"), env=env, capture_output=True, text=True,
                             timeout=180)
        decisions = [Decision.from_fields(f) for _, f in r.xrange(demo.stream(Decision))]
        site = list(r.scan_iter(f"{prefix}:*", count=1000))
    finally:
        for key in r.scan_iter(f"{demo.prefix}:*", count=1000):
            r.delete(key)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [line for line in res.stdout.splitlines() if "demo-print" in line]
    assert lines, f"no decision printed: {res.stdout[-2000:]} {res.stderr[-2000:]}"
    assert "SPOOF" in lines[-1]
    assert decisions and decisions[-1].verdict == "spoof" and decisions[-1].label == "spoof"
    assert len(lines) == len(decisions), "each decision printed once"
    assert not [line for line in res.stderr.splitlines() if decisions[-1].track in line], "and not logged again"
    assert site == [], "nothing written under the site's prefix"
    assert "Traceback" not in res.stderr
