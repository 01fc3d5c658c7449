"""Defaults shared by every service. Units are in the names."""

import importlib.util
from pathlib import Path

SCHEMA_VERSION = 2
"""Version of the stream contract; bumped when a field changes meaning (2: face crops carry views)."""

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


def artifact_path(name: str) -> Path:
    """Path of a committed model under ``models/artifacts`` (found without importing ``models``)."""
    spec = importlib.util.find_spec("models")
    if spec is None or not spec.submodule_search_locations:
        return Path("models") / "artifacts" / name
    return Path(next(iter(spec.submodule_search_locations))) / "artifacts" / name
