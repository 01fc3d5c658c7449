"""Fusion metrics, labelled by camera (never by track)."""

from prometheus_client import Counter, Gauge, Histogram

DECISIONS = Counter("liveness_decisions_total", "Decisions emitted (first and revised)", ["camera", "verdict"])
DECIDED_BY = Counter("liveness_decisions_by_evidence_total",
                     "Decisions by the evidence that carried them (liveness.evidence.decided_by): face, eye, "
                     "both (only their sum reached the threshold), or moment (a spoof on three attack-like crops in a row)", ["camera", "evidence"])
TIME_TO_DECISION = Histogram(
    "liveness_time_to_decision_seconds", "From a track's first captured frame to its first decision", ["camera"],
    buckets=(0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0),
)
PIPELINE_LATENCY = Histogram(
    "liveness_pipeline_latency_seconds", "From capture of the frame that settled a decision to the decision", ["camera"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.5, 5.0),
)
DUPLICATES = Counter("liveness_duplicates_ignored_total", "Scores fusion had already counted", ["stream"])
TRACKS_OPEN = Gauge("liveness_tracks_open", "Tracks fusion holds evidence for")
APCER = Gauge("liveness_apcer_ratio", "Attack presentations accepted as live / attacks (decided, labelled tracks)",
              ["camera", "window"])
BPCER = Gauge("liveness_bpcer_ratio", "Live presentations rejected / live (decided, labelled tracks)", ["camera", "window"])
ACER = Gauge("liveness_acer_ratio", "Mean of APCER and BPCER", ["camera", "window"])
LABELLED = Gauge("liveness_labelled_tracks", "Decided tracks with ground truth", ["camera", "window", "label"])
FORGED_DECISIONS = Gauge("liveness_forged_decisions",
                         "Decisions in the sliding window that fail fusion's signature: written by someone else")
WEBHOOK_FAILURES = Counter("liveness_webhook_failures_total", "Decisions the webhook did not take after retries")
CALIBRATION_TRACKS = Gauge("liveness_calibration_tracks", "Live-labelled tracks calibrating a camera's face evidence",
                           ["camera"])
LIVE_BASELINE = Gauge("liveness_live_baseline_logodds",
                      "Median face log-odds of a camera's live-labelled tracks (NaN: not calibrated yet)", ["camera"])
STATE_RESETS = Counter("liveness_fusion_state_resets_total",
                       "Shared state found corrupt and reset: a track's, or a key of another type", ["structure"])
