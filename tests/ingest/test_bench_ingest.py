"""``liveness bench ingest --json`` on a short NUAA clip: the ratio and where a frame's CPU goes."""

from __future__ import annotations

import json
import subprocess
import sys

from liveness.ingest.bench import STAGES


def test_bench_ingest_splits_a_frames_cpu_by_stage() -> None:
    out = subprocess.run([sys.executable, "-m", "liveness.app.cli", "bench", "ingest", "--frames", "90", "--json"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert 0 < result["ratio"] < 1.5 and result["decode_fps"] > 0 and result["ingest_fps"] > 0
    cpu = result["cpu_ms"]
    assert set(cpu) == {*STAGES, "other", "total"}
    # every stage ran on a clip with a face in every frame: a renamed function would read 0 here
    assert all(cpu[stage] > 0 for stage in STAGES), cpu
    assert cpu["total"] > sum(cpu[stage] for stage in STAGES)
    assert result["cores_per_camera"] == round(cpu["total"] * result["max_fps"] / 1000.0, 4)
