"""Defaults shared by every service. Units are in the names."""

SCHEMA_VERSION = 1
"""Version of the stream contract; bumped when a field changes meaning."""

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
