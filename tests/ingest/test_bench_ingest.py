"""``liveness bench ingest --json`` on a short NUAA clip: the ratio and where a frame's CPU goes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from liveness.ingest.bench import STAGES


def bench(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "liveness.app.cli", "bench", "ingest", "--frames", "90", "--json", *args],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_bench_ingest_splits_a_frames_cpu_by_stage(tmp_path: Path) -> None:
    """By default no frame is landmarked (crops come from the followed box); with the eye path on,
    every processed frame is. Every other stage runs on a clip with a face in every frame: a
    renamed function would read 0 here."""
    config = tmp_path / "eyes.yaml"
    config.write_text("ingest:\n  eyes: true\n")
    for result, landmarked in ((bench(), False), (bench("--config", str(config)), True)):
        assert 0 < result["ratio"] < 1.5 and result["decode_fps"] > 0 and result["ingest_fps"] > 0
        cpu = result["cpu_ms"]
        assert set(cpu) == {*STAGES, "other", "total"}
        assert all(cpu[stage] > 0 for stage in STAGES if stage != "landmarks"), cpu
        assert (cpu["landmarks"] > 0) == landmarked, cpu
        assert cpu["total"] > sum(cpu[stage] for stage in STAGES)
        assert result["cores_per_camera"] == round(cpu["total"] * result["max_fps"] / 1000.0, 4)
