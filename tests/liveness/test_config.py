from pathlib import Path

import pytest

from liveness.config import load_settings
from liveness.errors import ConfigError, LivenessError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_minimal_config_fills_camera_defaults(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "cameras:\n  - {id: door, source: rtsp://u:p@cam/1, label: live}\n"), environ={})
    cam = s.camera("door")
    assert cam.max_fps == s.ingest.max_fps
    assert cam.detect == s.ingest.detect and cam.crop == s.ingest.crop
    assert cam.label == "live"


def test_cameras_take_the_ingest_section_and_keep_their_own(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, (
        "ingest: {max_fps: 5, eye_every: 4, detect: {max_faces: 2}}\n"
        "cameras:\n"
        "  - {id: door, source: 0, max_fps: 12, crop_every: null}\n"
        "  - {id: hall, source: 1, detect: {every_n_frames: 3}}\n")), environ={})
    door, hall = s.camera("door"), s.camera("hall")
    assert (door.max_fps, door.crop_every, door.eye_every, door.detect.max_faces) == (12, 2, 4, 2)
    assert (hall.max_fps, hall.detect.every_n_frames, hall.detect.max_faces) == (5, 3, 4)  # a section is not merged
    assert door.detect is not hall.detect
    assert type(s).model_validate(s.model_dump()) == s


def test_an_invalid_ingest_section_is_reported_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "ingest: {max_fps: -1}\ncameras: [{id: door, source: 0}]\n"), environ={})
    assert "ingest.max_fps" in str(err.value) and "cameras" not in str(err.value)


def test_webcam_index_given_as_text(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "cameras:\n  - {id: w, source: '0'}\n"), environ={})
    assert s.camera("w").source == 0


def test_error_names_file_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "cameras:\n  - {id: door, source: x, max_fps: -3}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={})
    assert str(path) in str(err.value) and "cameras.0.max_fps" in str(err.value)


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="redis.hots"):
        load_settings(write(tmp_path, "redis: {hots: x}\n"), environ={})


def test_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_settings(write(tmp_path, "cameras: [\n"), environ={})


def test_duplicate_camera_ids(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="duplicate camera id 'a'"):
        load_settings(write(tmp_path, "cameras: [{id: a, source: x}, {id: a, source: y}]\n"), environ={})


def test_unknown_camera_lists_known(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "cameras: [{id: a, source: x}]\n"), environ={})
    with pytest.raises(ConfigError, match="unknown camera id 'b' .known: a"):
        s.camera("b")


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "redis: {url: 'redis://file:6379/0'}\nmetrics: {port: 9000}\n")
    s = load_settings(path, environ={"LIVENESS_REDIS__URL": "rediss://:pw@env:6380/1", "LIVENESS_METRICS__PORT": "0"})
    assert s.redis.url == "rediss://:pw@env:6380/1"
    assert s.metrics.port == 0


def test_bad_redis_scheme(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="redis.url"):
        load_settings(write(tmp_path, "redis: {url: 'http://x'}\n"), environ={})


def test_metrics_port_in_use_is_a_clear_error() -> None:
    import socket

    from liveness.config import MetricsSettings
    from liveness.metrics import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(LivenessError, match=f"metrics port {port} is in use"):
            serve(MetricsSettings(port=port, host="127.0.0.1"), "test", port)
