"""The Redis stream contract: key names, message fields, schema version, encode and decode.

Every producer and consumer goes through this module; no other module builds a key or
reads a raw field. Messages are frozen dataclasses with ``to_fields()``/``from_fields()``;
numbers travel as ASCII, lists as JSON, crops as JPEG bytes. Never pickles.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping

from liveness.defaults import KEY_PREFIX, SCHEMA_VERSION
from liveness.errors import MessageError, PoisonMessageError

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

MAX_CROP_BYTES = 256 * 1024
"""Largest JPEG crop accepted, bytes; bigger ones are dead-lettered."""

MAX_FIELD_BYTES = 64 * 1024
"""Largest non-crop field accepted, bytes."""

Box = tuple[int, int, int, int]

Verdict = Literal["live", "spoof", "undecided"]
"""What fusion decides about a track."""

Role = Literal["ingest", "face-worker", "eye-worker", "fusion", "supervisor"]
"""What kind of process a heartbeat comes from."""

ServiceState = Literal["starting", "ready", "waiting", "stopped"]
"""Where a process stands: ``starting`` (loading, joining its group), ``ready`` (consuming, or
reading its camera), ``waiting`` (for its camera to come back), ``stopped`` (a clean exit)."""


@dataclass(frozen=True)
class Keys:
    """Stream, group and key names under one prefix, so installations can share a Redis."""

    prefix: str = KEY_PREFIX

    def stream(self, message: "type[Message] | Message") -> str:
        """The stream a message type travels on, e.g. ``liveness:faces`` for FaceCrop."""
        return f"{self.prefix}:{message.stream}"

    def dead(self, stream: str) -> str:
        """Dead-letter stream of ``stream`` (a full key such as ``keys.stream(FaceCrop)``)."""
        return f"{self.prefix}:dead:{stream.removeprefix(self.prefix + ':')}"

    def group(self, role: Literal["face-workers", "eye-workers", "fusion"]) -> str:
        return f"{self.prefix}:{role}"

    def track_state(self, track: str) -> str:
        """Hash where fusion keeps one track's evidence (TTL-bound)."""
        return f"{self.prefix}:track:{track}"

    def seen(self, track: str) -> str:
        """Set of source message ids fusion already counted for a track (TTL-bound)."""
        return f"{self.prefix}:seen:{track}"

    @property
    def open_tracks(self) -> str:
        """Sorted set of tracks fusion holds, scored by their last update (epoch s)."""
        return f"{self.prefix}:open-tracks"

    @property
    def accuracy(self) -> str:
        """Hash ``camera|label|verdict`` -> tracks, for the accuracy gauges."""
        return f"{self.prefix}:accuracy"

    def calibration(self, camera: str) -> str:
        """Sorted set track -> mean face log-odds of a camera's tracks labelled live (its calibration)."""
        return f"{self.prefix}:calibration:{camera}"

    @property
    def calibrated(self) -> str:
        """Set of cameras that have a calibration."""
        return f"{self.prefix}:calibrated"

    @property
    def clips_queue(self) -> str:
        """Name of the rq queue of clip jobs (``liveness analyze``); rq keeps it under ``rq:queue:<name>``."""
        return f"{self.prefix}-clips"

    def camera_session(self, camera: str) -> str:
        """Counter that makes track ids unique across ingest restarts."""
        return f"{self.prefix}:camera-session:{camera}"

    def heartbeat(self, service: str) -> str:
        """Hash of one service process's ``Heartbeat``; it expires when the process stops beating."""
        return f"{self.prefix}:heartbeat:{service}"

    @property
    def services(self) -> str:
        """Sorted set service name -> its last heartbeat (epoch s): who ``liveness status`` lists."""
        return f"{self.prefix}:services"


def _encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if isinstance(value, (int, str)):
        return str(value).encode()
    if isinstance(value, float):
        return repr(value).encode()
    if isinstance(value, (list, tuple)):
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    raise TypeError(f"cannot encode {type(value).__name__}")


def _finite(name: str, x: float) -> float:
    if not math.isfinite(x):
        raise PoisonMessageError(f"field {name!r}: not a finite number ({x!r})")
    return x


def _decode(name: str, raw: bytes, kind: Any) -> Any:
    if kind is bytes:
        return raw
    if len(raw) > MAX_FIELD_BYTES:
        raise PoisonMessageError(f"field {name!r}: {len(raw)} bytes is too long")
    try:
        text = raw.decode("ascii") if kind in (int, float) else raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PoisonMessageError(f"field {name!r}: not valid text") from None
    try:
        if kind is str or typing.get_origin(kind) is Literal:  # a Literal's values: checked by validate()
            return text
        if kind is int:
            return int(text)
        if kind is float:
            return _finite(name, float(text))
        value = json.loads(text)
    except ValueError:
        raise PoisonMessageError(f"field {name!r}: expected {getattr(kind, '__name__', kind)}, got {text[:40]!r}") from None
    return _check_json(name, value, kind)


def _check_json(name: str, value: Any, kind: Any) -> Any:
    """Validate a JSON-decoded list against ``Box``, ``list[float]`` or ``list[list[float]]``."""
    if kind == Box:
        if not (isinstance(value, list) and len(value) == 4 and all(type(v) is int for v in value)):
            raise PoisonMessageError(f"field {name!r}: expected 4 integers [x, y, w, h]")
        return tuple(value)
    if kind == list[float]:
        if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise PoisonMessageError(f"field {name!r}: expected a list of numbers")
        return [_finite(name, float(v)) for v in value]
    if kind == list[list[float]]:
        if not isinstance(value, list):
            raise PoisonMessageError(f"field {name!r}: expected a list of pairs")
        return [_check_json(name, v, list[float]) for v in value]
    raise TypeError(f"no decoder for {kind}")


Fields = Mapping[bytes, bytes] | Mapping[str, bytes] | Mapping[bytes | str, bytes | str]
"""A stream entry's fields: bytes as the client reads them, text keys as ``to_fields()`` writes them."""


class Message:
    """Base of every stream message: one dataclass, one stream, one schema version."""

    stream: ClassVar[str]

    def to_fields(self) -> dict[FieldT, EncodableT]:
        """Fields for ``XADD``; ``None`` values are left out."""
        fields: dict[FieldT, EncodableT] = {"v": str(SCHEMA_VERSION).encode()}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]  # every subclass is a dataclass, the base is not
            value = getattr(self, f.name)
            if value is not None:
                fields[f.name] = _encode(value)
        return fields

    @classmethod
    def from_fields(cls, fields: Fields) -> typing.Self:
        """Decode and validate; raises PoisonMessageError naming the first bad field."""
        raw = {(k.decode("utf-8", "replace") if isinstance(k, bytes) else k): (v.encode() if isinstance(v, str) else v)
               for k, v in fields.items()}
        version = raw.get("v")
        if version != str(SCHEMA_VERSION).encode():
            got = version.decode("ascii", "replace")[:8] if version else "none"
            raise PoisonMessageError(f"{cls.__name__}: schema version {got}, this release reads {SCHEMA_VERSION} "
                                     f"(a producer of another release is writing to this stream)")
        values: dict[str, Any] = {}
        for name, kind, optional in _schema(cls):  # type: ignore[arg-type]  # classes are hashable
            if name not in raw:
                if optional:
                    continue
                raise PoisonMessageError(f"{cls.__name__}: missing field {name!r}")
            values[name] = _decode(name, raw[name], kind)
        msg = cls(**values)
        msg.validate()
        return msg

    def validate(self) -> None:
        """Cross-field checks of a decoded message; overridden where needed."""


@functools.cache
def _schema(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, type, may be absent) of each field of a message class.

    Cached: resolving the string annotations takes about half a millisecond, which every
    decoded message would otherwise pay.
    """
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind, optional = _unwrap(hints[f.name])
        out.append((f.name, kind, optional or f.default is not dataclasses.MISSING))
    return tuple(out)


def _unwrap(hint: Any) -> tuple[Any, bool]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def is_id(text: str) -> bool:
    """Whether ``text`` may be a camera, track or service id: 1-128 of A-Z a-z 0-9 _ . : -."""
    return _ID.fullmatch(text) is not None


def _check_ids(msg: Any) -> None:
    """Camera and track ids end up in keys, metric labels and logs: keep them plain."""
    for name in ("camera", "track"):
        if not is_id(getattr(msg, name)):
            raise PoisonMessageError(f"field {name!r}: must be 1-128 of A-Z a-z 0-9 _ . : -")
    label = getattr(msg, "label", None)
    if label is not None and label not in ("live", "spoof"):
        raise PoisonMessageError(f"field 'label': {label[:20]!r} is not live or spoof")


@dataclass(frozen=True)
class FaceCrop(Message):
    """The views of one track's face at one frame (ingest -> face workers).

    ``jpeg`` holds the views side by side, square and of equal size, in the order of
    ``views``: each one the face box scaled by that factor (``liveness.face.face_views``).
    """

    stream: ClassVar[str] = "faces"
    camera: str
    track: str
    frame: int
    capture_ts: float
    ingest_ts: float
    box: Box
    jpeg: bytes
    views: list[float]
    label: str | None = None

    def validate(self) -> None:
        _check_ids(self)
        if not self.jpeg or len(self.jpeg) > MAX_CROP_BYTES:
            raise PoisonMessageError(f"field 'jpeg': {len(self.jpeg)} bytes, expected 1..{MAX_CROP_BYTES}")
        if not 1 <= len(self.views) <= 4 or not all(1.0 <= v <= 6.0 for v in self.views):
            raise PoisonMessageError(f"field 'views': {self.views!r}, expected 1-4 scales within 1.0..6.0")


@dataclass(frozen=True)
class EyeSample(Message):
    """The eye ratios of one track at one frame, with the track's last window once full.

    ``window`` holds EYE_WINDOW ``[left, right]`` pairs, oldest first, sampled at
    ``window_rate_hz`` (not at the camera's rate, so the model sees the same span of time
    whatever the fps); ``open_level`` is the track's running median ratio (open eye).
    """

    stream: ClassVar[str] = "eyes"
    camera: str
    track: str
    frame: int
    capture_ts: float
    ingest_ts: float
    box: Box
    left: float
    right: float
    open_level: float
    window: list[list[float]] | None = None
    window_rate_hz: float | None = None
    label: str | None = None

    def validate(self) -> None:
        _check_ids(self)
        if self.window is not None:
            if not all(len(p) == 2 for p in self.window):
                raise PoisonMessageError("field 'window': every entry must be a [left, right] pair")
            if self.window_rate_hz is None or self.window_rate_hz <= 0:
                raise PoisonMessageError("field 'window_rate_hz': required and > 0 with a window")


@dataclass(frozen=True)
class Score(Message):
    """A model's spoof score for one source message (workers -> fusion)."""

    stream: ClassVar[str] = ""
    source_id: str
    camera: str
    track: str
    frame: int
    capture_ts: float
    ingest_ts: float
    scored_ts: float
    score: float
    model: str
    model_version: str
    label: str | None = None

    def validate(self) -> None:
        _check_ids(self)
        if not 0.0 <= self.score <= 1.0:
            raise PoisonMessageError(f"field 'score': {self.score} is outside [0, 1]")


@dataclass(frozen=True)
class FaceScore(Score):
    """The face network's score for one crop."""

    stream: ClassVar[str] = "face-scores"


@dataclass(frozen=True)
class EyeScore(Score):
    """The eye network's score for one window."""

    stream: ClassVar[str] = "eye-scores"


@dataclass(frozen=True)
class Decision(Message):
    """Fusion's verdict on a track, emitted when first decided and whenever it changes."""

    stream: ClassVar[str] = "decisions"
    camera: str
    track: str
    verdict: Verdict
    confidence: float
    face_evidence: float
    eye_evidence: float
    frames: int
    first_capture_ts: float
    last_capture_ts: float
    decided_ts: float
    rule: str
    label: str | None = None
    mac: str | None = None
    """HMAC-SHA256 (hex) of every other field under fusion's decision key: anyone else who can
    write to the stream cannot make a decision that passes ``authentic``. None: unsigned."""

    def validate(self) -> None:
        _check_ids(self)
        if self.verdict not in ("live", "spoof", "undecided"):
            raise PoisonMessageError(f"field 'verdict': {self.verdict!r} is not live, spoof or undecided")

    def signed(self, key: bytes | None) -> Decision:
        """This decision with its ``mac`` under ``key`` (fusion's decision key); unchanged without one."""
        return self if key is None else dataclasses.replace(self, mac=self._mac(key))

    def authentic(self, key: bytes) -> bool:
        """Whether fusion, holding ``key``, wrote this decision as it reads now (False: forged or altered)."""
        return self.mac is not None and hmac.compare_digest(self.mac, self._mac(key))

    def _mac(self, key: bytes) -> str:
        """HMAC-SHA256 over the encoded fields but ``mac``, in name order, each name and value
        length-prefixed (4 bytes, big-endian): docs/contract.md, for webhook receivers."""
        digest = hmac.new(key, digestmod=hashlib.sha256)
        for name, value in sorted((str(k), v) for k, v in self.to_fields().items() if k != "mac"):
            for part in (name.encode(), _encode(value)):
                digest.update(len(part).to_bytes(4, "big") + part)
        return digest.hexdigest()


@dataclass(frozen=True)
class Label(Message):
    """Operator feedback: the ground truth of a track (``liveness label``)."""

    stream: ClassVar[str] = "labels"
    camera: str
    track: str
    label: str
    ts: float

    def validate(self) -> None:
        _check_ids(self)
        if self.label not in ("live", "spoof"):
            raise PoisonMessageError(f"field 'label': {self.label!r} is not live or spoof")


@dataclass(frozen=True)
class Heartbeat(Message):
    """What a service process says of itself, rewritten every beat at ``Keys.heartbeat(name)``.

    Readiness and the metrics port come from the process itself, so an operator, a probe or a
    test asks instead of guessing a port layout or sleeping; a process that stops beating lets
    its heartbeat expire.
    """

    stream: ClassVar[str] = ""
    name: str
    role: Role
    state: ServiceState
    host: str
    pid: int
    started_ts: float
    ts: float
    metrics_port: int | None = None
    detail: str = ""
    since_ts: float | None = None
    """When the process entered its current state (epoch s): how long a camera has been lost."""
    ready_ts: float | None = None
    """When the process was last ready (epoch s); absent if it never was (a camera never opened)."""
    expires_ts: float | None = None
    """When this heartbeat expires unless renewed (epoch s): later during a camera's reconnect wait."""
    claim: str | None = None
    """Drawn at random when the process starts: whose heartbeat this is, whatever else it says."""

    def validate(self) -> None:
        if not is_id(self.name):
            raise PoisonMessageError("field 'name': must be 1-128 of A-Z a-z 0-9 _ . : -")
        if self.role not in typing.get_args(Role):
            raise PoisonMessageError(f"field 'role': {self.role[:20]!r} is not a service role")
        if self.state not in typing.get_args(ServiceState):
            raise PoisonMessageError(f"field 'state': {self.state[:20]!r} is not a service state")


__all__ = [
    "Box", "Decision", "EyeSample", "EyeScore", "FaceCrop", "FaceScore", "Heartbeat", "Keys", "Label", "Message",
    "MessageError", "PoisonMessageError", "Role", "Score", "ServiceState", "is_id",
]
