"""Defaults shared by every service. Units are in the names."""

from importlib.resources import files
from pathlib import Path

from liveness.errors import ModelError

SCHEMA_VERSION = 3
"""Version of the stream contract; bumped when a field changes meaning (2: face crops carry views;
3: decisions carry fusion's signature, ``mac``)."""

KEY_PREFIX = "liveness"
"""Prefix of every Redis key, so two installations can share one Redis."""

EYE_WINDOW = 10
"""Frames in one eye-ratio window, as in the original eye network."""

STREAM_MAXLEN = 10_000
"""Approximate cap on each stream's length (XADD MAXLEN ~)."""

CROP_RETENTION_S = 60.0
"""Face crops older than this are trimmed from Redis (XTRIM MINID): they are biometric data."""

METRICS_PORT = 9400
"""First port of the Prometheus endpoints; each process takes the next free one from here."""

SEQUENCE_FPS = 15.0
"""Rate of image sequences, whose frames carry no timestamps: NUAA's, and the folders
``liveness collect`` records, which ``--dataset folders`` reads back at this rate."""


def artifact_path(name: str) -> Path:
    """Path of a shipped model in ``liveness.models``' ``artifacts``.

    Found through the ``liveness`` namespace, so another project's top-level ``models`` package
    earlier on the path cannot shadow it; a real file, since onnxruntime opens a path.
    """
    folder = files("liveness.models") / "artifacts"
    if not isinstance(folder, Path):
        raise ModelError(f"liveness.models is not installed as files on disk ({folder!r}): reinstall the wheel")
    return folder / name
