"""One YAML file, validated with pydantic; environment variables override the file.

``LIVENESS_<SECTION>__<FIELD>=value`` overrides ``section.field`` (values are parsed as
YAML scalars), e.g. ``LIVENESS_REDIS__URL=rediss://:pw@host:6380/0``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from liveness import defaults
from liveness.errors import ConfigError

ENV_PREFIX = "LIVENESS_"

LandmarkModel = Literal["face_mesh", "dlib68"]
"""The landmark models ``liveness.landmarks`` runs."""


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
    targets_file: str | None = Field(None, description=(
        "Prometheus file_sd JSON that liveness run keeps listing every process beating under the prefix, "
        "from their heartbeats (deploy/prometheus/prometheus-local.yml reads deploy/prometheus/targets/*.json)"))


class StreamSettings(Section):
    maxlen: int = Field(defaults.STREAM_MAXLEN, ge=100, description="Approximate cap per stream")
    crop_retention_s: float = Field(defaults.CROP_RETENTION_S, gt=0, description="Max age of face crops")
    max_face_lag: int = Field(256, ge=1, description="Face-group lag above which ingest sheds crops")


class CropSettings(Section):
    """The face model's input: views of the face box at several scales, side by side in one JPEG."""

    size: int = Field(80, ge=32, le=256, description="Side of each square view, pixels")
    views: tuple[float, ...] = Field((2.7, 4.0), min_length=1, max_length=4, description=(
        "Scale of each view relative to the face box, in the face model's order"))
    box_width: float = Field(1.2, gt=0.5, le=2.0, description="Width of the face box before scaling, relative to the detector's")
    box_height: float = Field(1.38, gt=0.5, le=2.0, description=(
        "Height of the face box before scaling, relative to the detector's: the pretrained networks' "
        "authors cut from a taller box that reaches the forehead"))
    box_shift: float = Field(-0.1, ge=-0.5, le=0.5, description="Downward shift of the box centre, in box heights")
    jpeg_quality: int = Field(90, ge=50, le=100, description="JPEG quality of published crops")

    @field_validator("views")
    @classmethod
    def _views(cls, views: tuple[float, ...]) -> tuple[float, ...]:
        if not all(1.0 <= v <= 6.0 for v in views):
            raise ValueError("every view scale must be within 1.0..6.0")
        return views


class DetectSettings(Section):
    every_n_frames: int = Field(8, ge=1, description="Run the face detector every N processed frames")
    min_face_px: int = Field(48, ge=20, description="Ignore faces narrower than this in the full frame")
    max_faces: int = Field(4, ge=1, description="Most faces tracked per camera")
    start_score: float = Field(0.7, ge=0.0, le=1.0, description=(
        "Detector score a face needs to start a track (one it keeps needs 0.5): BlazeFace's false "
        "faces (a cat, a colour wheel, a pattern beside a face) stay under 0.61, real ones score 0.8-0.97"))
    tiles: bool = Field(True, description=(
        "Where BlazeFace finds no face on the whole frame, look again on overlapping tiles (faces down to "
        "about 5 % of the frame's width), once per change of the scene"))
    landmarks: LandmarkModel = Field("face_mesh", description=(
        "Landmark model for the eye ratios (the eye path): 'face_mesh', MediaPipe's face mesh "
        "(Apache-2.0, shipped); or 'dlib68', dlib's 68-point model, which needs "
        "pip install 'liveness[dlib68]' and is trained on iBUG 300-W, whose licence excludes "
        "commercial use: not for a commercial product"))


class CameraTuning(Section):
    """What each camera may set for itself; the ``ingest`` section holds the defaults."""

    max_fps: float = Field(10.0, gt=0, le=120, description="Frames per second processed at most (eye windows are 10 Hz)")
    crop_every: int = Field(2, ge=1, description="Publish every k-th crop of a track")
    eyes: bool = Field(False, description=(
        "Send eye windows (blink evidence) to the eye workers. Off by default: the shipped fusion "
        "policy weighs the eye model 0 (models/artifacts/eye.md), so its windows would change no "
        "decision; off, no landmarks run at all (crops are cut from the followed detector box)"))
    eye_every: int = Field(3, ge=1, description=(
        "Publish every k-th eye window of a track: each spans one second, so at 10 fps every blink "
        "still falls whole in a window, and the eye workers and fusion do a third of the work"))
    detect: DetectSettings = Field(default_factory=DetectSettings)
    crop: CropSettings = Field(default_factory=CropSettings)


class CameraDefaults(CameraTuning):
    """The ``ingest`` section: every camera's defaults, and what all camera processes share."""

    nice: int = Field(5, ge=0, le=19, description=(
        "Scheduling niceness of camera processes: on a shared machine the workers and fusion, "
        "which drain the queues, come first, so overload skips frames at the source instead of "
        "queueing them"))


class CameraSettings(CameraTuning):
    """One camera, complete after validation: what it leaves unset comes from ``ingest``."""

    id: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Camera id, unique")
    source: str | int = Field(..., description="rtsp:// URL, video file or webcam index")
    label: Literal["live", "spoof"] | None = Field(None, description="Ground truth, for evaluation cameras")
    open_timeout_s: float = Field(10.0, gt=0, description="Time to open the source")
    read_timeout_s: float = Field(5.0, gt=0, description="Time without a frame before reconnecting")
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description=(
        "RTSP over TCP (interleaved) or UDP: UDP loses packets on busy networks and machines, and "
        "every frame from a loss to the next keyframe is then skipped as damaged"))

    @field_validator("source")
    @classmethod
    def _source(cls, source: str | int) -> str | int:
        if isinstance(source, str) and source.strip().isdigit():
            return int(source)
        if isinstance(source, int) and source < 0:
            raise ValueError("webcam index must be >= 0")
        return source


class ConsumerSettings(Section):
    """What every stream consumer (``liveness.streams.StreamConsumer``) is tuned by."""

    batch_size: int = Field(16, ge=1, le=256, description="Most messages per batch")
    block_ms: int = Field(20, ge=1, description="Time to wait for a batch to fill")
    max_deliveries: int = Field(3, ge=1, description="Deliveries before a message is dead-lettered")
    min_idle_ms: int = Field(10_000, ge=100, description="Pending this long: reclaimed from a dead consumer")


class WorkerSettings(ConsumerSettings):
    model: str | None = Field(None, description="ONNX model path (None: the committed artifact)")
    threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads")


class FusionSettings(ConsumerSettings):
    batch_size: int = Field(128, ge=1, le=1024, description="Most scores and labels per batch")
    rule: Literal["evidence", "last_scores"] = Field("evidence", description=(
        "Decision rule: evidence (accumulated over the track, liveness.evidence), or last_scores (the last eye "
        "score says fake -> spoof, else the last face score decides), kept for comparison"))
    policy: str | None = Field(None, description="Policy JSON (None: models/artifacts/fusion.json)")
    live_threshold: float | None = Field(None, description="Log-odds to decide live (None: model card)")
    spoof_threshold: float | None = Field(None, description="Log-odds to decide spoof (None: model card)")
    track_ttl_s: float = Field(10.0, gt=0, description="A track without results for this long is closed")
    window_s: float = Field(300.0, gt=0, description="Sliding window of the accuracy gauges")
    webhook_url: str | None = Field(None, description="POST every decision here (retried)")
    decision_key: str | None = Field(None, min_length=16, repr=False, description=(
        "Key that signs each decision (HMAC-SHA256, field mac); every reader holding it flags a decision "
        "that fails the check. Fusion alone should hold it (docs/operations.md, Trust). None: unsigned"))

    @field_validator("decision_key", mode="before")
    @classmethod
    def _key(cls, key: Any) -> Any:
        return key if key is None else str(key)  # the environment's YAML may read a key of digits as a number

    def key(self) -> bytes | None:
        """The decision key as HMAC takes it, None when unset."""
        return None if self.decision_key is None else self.decision_key.encode()


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

    @model_validator(mode="before")
    @classmethod
    def _camera_defaults(cls, data: Any) -> Any:
        """Fill what each camera leaves unset (or null) from the ``ingest`` defaults, before
        validation, so a validated camera is complete."""
        if not isinstance(data, dict) or not isinstance(data.get("cameras"), list):
            return data
        try:
            ingest = CameraDefaults.model_validate(data.get("ingest") or {})
        except ValidationError:
            return data  # reported where it is, by the validation of the ``ingest`` section
        tuning = ingest.model_dump(include=set(CameraTuning.model_fields))
        cameras = []
        for cam in data["cameras"]:
            if isinstance(cam, CameraSettings):
                cam = cam.model_dump(exclude_unset=True)
            if isinstance(cam, dict):
                cam = {**tuning, **{k: v for k, v in cam.items() if v is not None or k not in tuning}}
            cameras.append(cam)
        return {**data, "cameras": cameras}

    @model_validator(mode="after")
    def _unique_cameras(self) -> "Settings":
        seen: set[str] = set()
        for cam in self.cameras:
            if cam.id in seen:
                raise ValueError(f"duplicate camera id {cam.id!r}")
            seen.add(cam.id)
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

