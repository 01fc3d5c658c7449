"""Shared core of the liveness pipeline: config, stream contract, Redis, face pipeline, tracking, eyes.

The services (``liveness.ingest``, ``.workers``, ``.fusion``), ``liveness.models`` and the commands
(``liveness.app``) are installed under this package from their own folders; it imports none of them.
"""

__version__ = "0.1.0"
