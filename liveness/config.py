"""One YAML file, validated with pydantic; environment variables override the file.

``LIVENESS_<SECTION>__<FIELD>=value`` overrides ``section.field`` (values are parsed as
YAML scalars), e.g. ``LIVENESS_REDIS__URL=rediss://:pw@host:6380/0``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from liveness import defaults
from liveness.errors import ConfigError

ENV_PREFIX = "LIVENESS_"


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class RedisSettings(Section):
    url: str = Field("redis://127.0.0.1:6379/0", description="redis:// or rediss:// URL, password allowed")
    ssl_ca_certs: str | None = Field(None, description="CA bundle for rediss:// (None: system store)")
    socket_timeout_s: float = Field(5.0, gt=0, description="Socket timeout for every command")

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return url


class MetricsSettings(Section):
    port: int = Field(defaults.METRICS_PORT, ge=0, le=65535, description="First metrics port; 0 disables")
    host: str = Field("127.0.0.1", description=(
        "Address the /metrics endpoints listen on; loopback unless a Prometheus on another host scrapes them "
        "(0.0.0.0)"))


class StreamSettings(Section):
    maxlen: int = Field(defaults.STREAM_MAXLEN, ge=100, description="Approximate cap per stream")
    crop_retention_s: float = Field(defaults.CROP_RETENTION_S, gt=0, description="Max age of face crops")
    max_face_lag: int = Field(256, ge=1, description="Face-group lag above which ingest sheds crops")


class CropSettings(Section):
    size: int = Field(112, ge=32, le=512, description="Side of the square face crop, pixels")
    scale: float = Field(2.0, ge=1.0, le=4.0, description="Crop side relative to the face size")
    jpeg_quality: int = Field(90, ge=50, le=100, description="JPEG quality of published crops")


DETECT_WIDTHS = (320, 640)
"""With ``detect.scale: auto``: the least width of the detector's first look, and the width of its
second look (taken only where it is larger than the first)."""


class DetectSettings(Section):
    every_n_frames: int = Field(8, ge=1, description="Run the face detector every N processed frames")
    scale: Annotated[float, Field(gt=0.1, le=1.0)] | Literal["auto"] = Field("auto", description=(
        "Resize of the grey frame before detection. dlib's HOG window is 80 px, so the detector sees faces "
        "from about 75 px wide in the resized frame. A number: that one factor (0.5 finds faces from about "
        "150 px wide). 'auto': a first look at half size, or 320 px wide if that is larger; where it finds "
        "no face, a second look at 640 px wide if that is larger still: faces from about 12 % of the "
        "frame's width on frames up to 1280 px wide (75 px on a 640 px frame), from 150 px on larger ones"))
    upsample: int = Field(0, ge=0, le=2, description="dlib HOG upsampling steps")
    min_face_px: int = Field(60, ge=20, description=(
        "Ignore faces smaller than this in the full frame (a filter: the detector's own limit is "
        "set by scale and upsample)"))
    max_faces: int = Field(4, ge=1, description="Most faces tracked per camera")

    def scales_for(self, width: int) -> tuple[float, ...]:
        """The resize factors to try, in order, for a frame ``width`` px wide.

        Why 'auto' starts at half size: that was the only look before, so a frame 640 px wide or more
        loses no face it found; the second look (at most 640 px wide, so an empty scene stays cheap)
        finds the small faces and the small frames' faces it missed.
        """
        if self.scale != "auto":
            return (self.scale,)
        first, second = max(0.5, DETECT_WIDTHS[0] / width), DETECT_WIDTHS[1] / width
        return (first, second) if second > first else (first,)


class CameraDefaults(Section):
    max_fps: float = Field(10.0, gt=0, le=120, description="Frames per second processed at most (eye windows are 10 Hz)")
    crop_every: int = Field(2, ge=1, description="Publish every k-th crop of a track")
    eye_every: int = Field(3, ge=1, description=(
        "Publish every k-th eye window of a track: each spans one second, so at 10 fps every blink "
        "still falls whole in a window, and the eye workers and fusion do a third of the work"))
    nice: int = Field(5, ge=0, le=19, description=(
        "Scheduling niceness of camera processes: on a shared machine the workers and fusion, "
        "which drain the queues, come first, so overload skips frames at the source instead of "
        "queueing them"))
    detect: DetectSettings = Field(default_factory=DetectSettings)
    crop: CropSettings = Field(default_factory=CropSettings)


class CameraSettings(Section):
    id: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Camera id, unique")
    source: str | int = Field(..., description="rtsp:// URL, video file or webcam index")
    label: Literal["live", "spoof"] | None = Field(None, description="Ground truth, for evaluation cameras")
    max_fps: float | None = Field(None, gt=0, le=120)
    crop_every: int | None = Field(None, ge=1)
    eye_every: int | None = Field(None, ge=1)
    detect: DetectSettings | None = None
    crop: CropSettings | None = None
    open_timeout_s: float = Field(10.0, gt=0, description="Time to open the source")
    read_timeout_s: float = Field(5.0, gt=0, description="Time without a frame before reconnecting")

    @field_validator("source")
    @classmethod
    def _source(cls, source: str | int) -> str | int:
        if isinstance(source, str) and source.strip().isdigit():
            return int(source)
        if isinstance(source, int) and source < 0:
            raise ValueError("webcam index must be >= 0")
        return source


class WorkerSettings(Section):
    model: str | None = Field(None, description="ONNX model path (None: the committed artifact)")
    batch_size: int = Field(16, ge=1, le=256, description="Most messages per batch")
    block_ms: int = Field(20, ge=1, description="Time to wait for a batch to fill")
    threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads")
    max_deliveries: int = Field(3, ge=1, description="Deliveries before a message is dead-lettered")
    min_idle_ms: int = Field(10_000, ge=100, description="Pending this long: reclaimed from a dead worker")


class FusionSettings(Section):
    rule: Literal["evidence", "original"] = Field("evidence", description="Decision rule")
    policy: str | None = Field(None, description="Policy JSON (None: models/artifacts/fusion.json)")
    live_threshold: float | None = Field(None, description="Log-odds to decide live (None: model card)")
    spoof_threshold: float | None = Field(None, description="Log-odds to decide spoof (None: model card)")
    track_ttl_s: float = Field(10.0, gt=0, description="A track without results for this long is closed")
    window_s: float = Field(300.0, gt=0, description="Sliding window of the accuracy gauges")
    webhook_url: str | None = Field(None, description="POST every decision here (retried)")


class PreviewSettings(Section):
    enabled: bool = Field(False, description="Serve annotated frames as MJPEG (liveness run --preview)")
    host: str = Field("127.0.0.1", description="Address of the preview (loopback: frames show faces)")
    port: int = Field(8600, ge=1, le=65535, description="Port of the first camera; the next ones follow")
    fps: float = Field(5.0, gt=0, le=30, description="Annotated frames per second at most")


class Settings(Section):
    prefix: str = Field(defaults.KEY_PREFIX, pattern=r"^[A-Za-z0-9_.-]{1,40}$", description="Key prefix")
    redis: RedisSettings = Field(default_factory=RedisSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    streams: StreamSettings = Field(default_factory=StreamSettings)
    ingest: CameraDefaults = Field(default_factory=CameraDefaults)
    cameras: list[CameraSettings] = Field(default_factory=list)
    face_worker: WorkerSettings = Field(default_factory=WorkerSettings)
    eye_worker: WorkerSettings = Field(default_factory=lambda: WorkerSettings(batch_size=64))
    fusion: FusionSettings = Field(default_factory=FusionSettings)
    preview: PreviewSettings = Field(default_factory=PreviewSettings)

    @model_validator(mode="after")
    def _push_defaults(self) -> "Settings":
        """Fill each camera's unset fields from the ``ingest`` defaults; reject duplicate ids."""
        seen: set[str] = set()
        for cam in self.cameras:
            if cam.id in seen:
                raise ValueError(f"duplicate camera id {cam.id!r}")
            seen.add(cam.id)
            cam.max_fps = cam.max_fps or self.ingest.max_fps
            cam.crop_every = cam.crop_every or self.ingest.crop_every
            cam.eye_every = cam.eye_every or self.ingest.eye_every
            cam.detect = cam.detect or self.ingest.detect.model_copy()
            cam.crop = cam.crop or self.ingest.crop.model_copy()
        return self

    def camera(self, camera_id: str) -> CameraSettings:
        """The camera named ``camera_id``; a ConfigError lists the known ids otherwise."""
        for cam in self.cameras:
            if cam.id == camera_id:
                return cam
        known = ", ".join(c.id for c in self.cameras) or "none"
        raise ConfigError(f"unknown camera id {camera_id!r} (known: {known})")


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "LIVENESS_CONFIG":
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        if path[0] not in Settings.model_fields:
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = yaml.safe_load(value) if value else value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def load_settings(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read, merge with the environment and validate; errors name the file and the field."""
    environ = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{where}: cannot read config: {e.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: invalid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{where}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded
    data = _merge(data, _env_overrides(environ))
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{where}: invalid configuration:\n{_describe(e)}") from None

