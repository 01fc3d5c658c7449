"""Clip jobs with rq: recorded clips analysed by the same code as ``evaluate --model fused``.

``liveness analyze FILE…`` enqueues one job per clip; ``liveness jobs-worker`` runs them
with models loaded once (rq's SimpleWorker, no fork per job); ``liveness jobs`` lists them.
Jobs and results travel as JSON (rq's JSONSerializer): nothing is ever unpickled. A job names
its clip and the config of whoever queued it, whose fusion policy and rule decide the clip
(``liveness.evidence.load_policy``, as live fusion decides); both paths must be readable by
the jobs workers (shared storage on several machines).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

from rq import Queue, Retry, SimpleWorker
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from liveness.config import load_settings
from liveness.contract import Keys
from liveness.defaults import artifact_path, eye_model_path
from liveness.errors import LivenessError
from liveness.evidence import load_policy
from liveness.eyes import INPUT_SIZE
from liveness.redisconn import connect
from liveness.video import read_video
from liveness.workers.offline import OfflineAnalyzer
from liveness.workers.runners import FACE_INPUT_SHAPE, OnnxModel

log = logging.getLogger(__name__)

JOB_TIMEOUT_S = 600
"""Longest one clip may take before rq stops it, seconds."""

RESULT_TTL_S = 7 * 24 * 3600
"""How long results stay in Redis, seconds."""


def queue(settings_path: str | None) -> Queue:
    settings = load_settings(settings_path)
    return Queue(Keys(settings.prefix).clips_queue, connection=connect(settings.redis), serializer=JSONSerializer)


@lru_cache(maxsize=4)
def analyzer(config: str | None) -> OfflineAnalyzer:
    """Models loaded once per jobs worker, sampling as a camera of ``config`` does and deciding under
    its fusion policy and rule; the eye model (opt-in, ``eye_worker.model``) only with ``ingest.eyes``."""
    settings = load_settings(config)
    eye = (OnnxModel(eye_model_path(settings.eye_worker.model), input_shape=(INPUT_SIZE,))
           if settings.ingest.eyes else None)
    return OfflineAnalyzer(OnnxModel(artifact_path("face.onnx"), input_shape=FACE_INPUT_SHAPE), eye,
                           load_policy(settings.fusion), settings.ingest, settings.fusion.rule)


def analyze_clip(path: str, config: str | None = None) -> dict[str, object]:
    """The job: per-track decisions of one clip, and the clip's decision (its longest track)."""
    clip = Path(path)
    if not clip.is_file():
        raise LivenessError(f"clip {path}: no such file on this worker")
    t0 = time.time()
    tracks = analyzer(config).analyze(read_video(clip))
    decision = tracks[0].verdict if tracks else "undecided"
    return {
        "clip": str(clip), "decision": decision, "seconds": round(time.time() - t0, 2),
        "tracks": [{k: v for k, v in asdict(t).items() if k != "events"} for t in tracks],
    }


def run_analyze(args: argparse.Namespace) -> int:
    q = queue(args.config)
    config = str(Path(args.config).resolve()) if args.config else None
    jobs = [q.enqueue(analyze_clip, str(Path(f).resolve()), config, job_timeout=JOB_TIMEOUT_S,
                      result_ttl=RESULT_TTL_S, failure_ttl=RESULT_TTL_S, retry=Retry(max=2, interval=[5, 30]),
                      description=f"analyze {f}")
            for f in args.files]
    for job in jobs:
        print(f"queued {job.id} {job.args[0]}")
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout
    pending = list(jobs)
    failed = 0
    while pending and time.monotonic() < deadline:
        for job in list(pending):
            status = job.get_status(refresh=True)
            if status == "finished":
                print(json.dumps({"job": job.id, **job.return_value()}))  # type: ignore[dict-item]  # rq: Any | None
                pending.remove(job)
            elif status in ("failed", "stopped", "canceled"):
                print(json.dumps({"job": job.id, "clip": job.args[0], "status": str(status)}))
                failed += 1
                pending.remove(job)
        time.sleep(0.5)
    return 1 if failed or pending else 0


def run_worker(args: argparse.Namespace) -> int:
    q = queue(args.config)
    SimpleWorker([q], connection=q.connection, serializer=JSONSerializer).work(burst=args.burst)
    return 0


def run_list(args: argparse.Namespace) -> int:
    q = queue(args.config)
    rows = [("queued", q.job_ids)]
    for name, reg in (("started", StartedJobRegistry), ("finished", FinishedJobRegistry), ("failed", FailedJobRegistry)):
        rows.append((name, reg(queue=q).get_job_ids()))
    for status, ids in rows:
        for job in Job.fetch_many(ids, connection=q.connection, serializer=JSONSerializer):
            if job is None:
                continue
            out = {"job": job.id, "status": status, "clip": job.args[0] if job.args else None}
            if status == "finished":
                out["decision"] = (job.return_value() or {}).get("decision")
            elif status == "failed":
                out["error"] = (job.latest_result().exc_string or "").strip().splitlines()[-1:]  # type: ignore[union-attr]  # failed: has a result
            print(json.dumps(out))
    return 0
