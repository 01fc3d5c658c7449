"""Camera ingest: one process per camera, frames to faces and eye ratios on Redis Streams."""
