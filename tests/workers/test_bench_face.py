"""``liveness bench face --json`` on the committed model: the fields issue readers parse."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_face_prints_ratios_against_its_own_reference() -> None:
    out = subprocess.run([sys.executable, "-m", "liveness.app.cli", "bench", "face", "--json"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["what"] == "face" and result["model"] and result["threads"] == 1
    assert result["ms_b1"] > 0 and result["ms_b32"] > 0 and result["ref_ms"] > 0
    assert all(pool["num_threads"] == 1 for pool in result["blas"])
    assert result["slice"] >= 1 and result["clock"] == "thread"
    # medians of per-round ratios: close to, not necessarily equal to, the ratio of medians
    for batch in ("b1", "b32"):
        assert 0.5 < result[f"ratio_{batch}"] / (result[f"ms_{batch}"] / result["ref_ms"]) < 2.0
