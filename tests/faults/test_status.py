"""What ``liveness status`` tells an operator and a probe: a configured camera that never opened,
or was lost for longer than the grace, fails it; ``--self`` judges one process or a pod's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import redis
import yaml

from liveness.contract import Keys
from tests.conftest import REDIS_URL, PrivateRedisServer, RtspServer, free_port, liveness_cmd, wait_for
from tests.fixtures import Services, heartbeat, wait_state


def status(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(liveness_cmd("status", "--config", str(config), *args), capture_output=True, text=True,
                          timeout=60)


def config(path: Path, prefix: str, cameras: dict[str, str]) -> Path:
    path.write_text(yaml.safe_dump({"prefix": prefix, "redis": {"url": REDIS_URL}, "metrics": {"port": 0},
                                    "cameras": [{"id": cam, "source": url, "open_timeout_s": 2, "read_timeout_s": 2}
                                                for cam, url in cameras.items()]}))
    return path


def test_status_fails_while_a_camera_never_opened_or_is_lost_past_the_grace(
        rtsp: RtspServer, r: redis.Redis, prefix: str, tmp_path: Path) -> None:
    keys = Keys(prefix)
    both = config(tmp_path / "both.yaml", prefix, {"live": rtsp.url("live"),
                                                   "ghost": f"rtsp://127.0.0.1:{free_port()}/nothing"})
    live_only = config(tmp_path / "live.yaml", prefix, {"live": rtsp.url("live")})
    svc = Services(both, {})
    svc.start("ingest", "ingest")
    try:
        wait_state(r, keys, "ingest:live")
        wait_state(r, keys, "ingest:ghost", state="waiting")
        res = status(both)
        assert res.returncode == 1 and "camera ghost: never opened (waiting: camera not open)" in res.stdout, res.stdout
        assert json.loads(status(both, "--json").stdout)["cameras"] == {"ghost": "never opened (waiting: camera not open)"}
        assert status(live_only).returncode == 0
        # probes: one process, or every process of this host (a pod); alive, or ready too
        assert status(both, "--self", "ingest:live", "--ready").returncode == 0
        assert status(both, "--self", "ingest:ghost").returncode == 0, "it beats: alive"
        assert status(both, "--self", "ingest:ghost", "--ready").returncode == 1, "it waits for its camera"
        assert status(both, "--self").returncode == 0
        assert status(both, "--self", "--ready").returncode == 1
        assert status(both, "--self", "ingest:nobody").returncode == 1

        rtsp.stop()  # the live camera is lost
        wait_for(lambda: (hb := heartbeat(r, keys, "ingest:live")) is not None and hb.state == "waiting", timeout_s=30)
        assert status(live_only, "--camera-grace", "600").returncode == 0, "lost for less than the grace"
        res = status(live_only, "--camera-grace", "0")
        assert res.returncode == 1 and "camera live: lost for" in res.stdout, res.stdout
    finally:
        svc.stop_all()
    assert "Traceback" not in svc.logs["ingest"]
    res = status(live_only)
    assert res.returncode == 1 and "camera live: no ingest:live beats" in res.stdout


def test_a_probe_does_not_restart_a_process_for_a_redis_out_of_memory(private_redis: PrivateRedisServer,
                                                                        prefix: str, tmp_path: Path) -> None:
    r = private_redis.client()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"prefix": prefix, "redis": {"url": private_redis.url()}}))
    assert status(cfg, "--self", "nobody").returncode == 1, "Redis takes writes: no heartbeat, not alive"
    r.config_set("maxmemory", 1)  # every write refused: no process can beat
    try:
        alive, ready = status(cfg, "--self", "nobody"), status(cfg, "--self", "nobody", "--ready")
    finally:
        r.config_set("maxmemory", 0)
    assert (alive.returncode, ready.returncode) == (0, 1)
    assert "Redis out of memory: not judged" in alive.stdout
