"""Ingest metrics, labelled by camera (never by track: tracks are unbounded)."""

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

FRAMES_READ = Counter("liveness_frames_read_total", "Frames decoded from the source", ["camera"])
FRAMES_PROCESSED = Counter("liveness_frames_processed_total", "Frames run through the face pipeline", ["camera"])
FRAMES_SKIPPED = Counter("liveness_frames_skipped_total", "Frames not processed: newer frame came or over max fps", ["camera"])
FRAMES_CORRUPT = Counter("liveness_frames_corrupt_total",
                         "Frames not processed: damaged (lost slices or packets), before the first keyframe, "
                         "or predicted from a damaged one", ["camera"])
FRAMES_SHED = Counter("liveness_frames_shed_total", "Face crops not published because face consumers lag", ["camera"])
FACES = Counter("liveness_faces_total", "Faces seen (one per track per processed frame)", ["camera"])
TRACKS = Counter("liveness_tracks_total", "Tracks started", ["camera"])
TRACKS_OPEN = Gauge("liveness_ingest_tracks_open", "Tracks currently followed", ["camera"])
RECONNECTS = Counter("liveness_camera_reconnects_total", "Times the source was reopened", ["camera"])
SOURCE_ERRORS = Counter("liveness_camera_errors_total", "Open failures, read timeouts and stream ends", ["camera", "kind"])
PUBLISH_ERRORS = Counter("liveness_publish_errors_total", "Messages not published because Redis failed", ["camera"])
PUBLISHED = Counter("liveness_messages_published_total", "Messages published", ["camera", "stream"])
CROPS_PUBLISHED = Counter("liveness_crops_published_total", "Face crops written to the face stream", ["camera"])
WINDOWS_PUBLISHED = Counter("liveness_windows_published_total", "Eye samples written with a full window", ["camera"])
CAMERA_UP = Gauge("liveness_camera_up", "1 while the source delivers frames", ["camera"])
CAMERA_FPS = Gauge("liveness_camera_fps", "Frames processed per second, last 5 s", ["camera"])
STAGE_SECONDS = Histogram(
    "liveness_ingest_stage_seconds", "Time per ingest stage per frame", ["camera", "stage"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)


@dataclass(frozen=True)
class CameraMetrics:
    """One camera's series of the metrics updated on every frame, labelled once: ``labels()``
    checks and looks up its labels on every call, and a frame updates a dozen series."""

    frames_read: Counter
    frames_processed: Counter
    frames_skipped: Counter
    frames_shed: Counter
    faces: Counter
    tracks: Counter
    tracks_open: Gauge
    camera_fps: Gauge
    crops_published: Counter
    windows_published: Counter
    decode_seconds: Histogram
    track_seconds: Histogram
    crop_seconds: Histogram
    publish_seconds: Histogram

    @classmethod
    def of(cls, camera: str) -> "CameraMetrics":
        return cls(FRAMES_READ.labels(camera), FRAMES_PROCESSED.labels(camera), FRAMES_SKIPPED.labels(camera),
                   FRAMES_SHED.labels(camera), FACES.labels(camera), TRACKS.labels(camera), TRACKS_OPEN.labels(camera),
                   CAMERA_FPS.labels(camera), CROPS_PUBLISHED.labels(camera), WINDOWS_PUBLISHED.labels(camera),
                   STAGE_SECONDS.labels(camera, "decode"), STAGE_SECONDS.labels(camera, "track"),
                   STAGE_SECONDS.labels(camera, "crop"), STAGE_SECONDS.labels(camera, "publish"))
