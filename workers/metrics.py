"""Worker metrics; batch size, processed, reclaimed and dead-lettered come from liveness.streams,
stage latency from liveness.metrics."""

from prometheus_client import Counter, Histogram

INFERENCE_SECONDS = Histogram(
    "liveness_inference_seconds", "onnxruntime time per batch", ["model"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5),
)
SCORED = Counter("liveness_scored_total", "Messages scored by a model", ["model"])
