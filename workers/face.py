"""The face worker: scores face crops with the face ONNX model, in batches.

Any number of these, on any number of machines, share the face stream through one
consumer group; a crashed worker's messages are reclaimed by the others.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from functools import partial

import cv2
import numpy as np
import redis

from liveness.config import Settings, WorkerSettings, load_settings
from liveness.contract import FaceCrop, FaceScore, Keys
from liveness.defaults import artifact_path
from liveness.errors import PoisonMessageError
from liveness.metrics import serve
from liveness.redisconn import connect, wait_until_up
from liveness.streams import Entry, Outcome, StreamConsumer, consumer_name
from workers import metrics
from workers.runners import OnnxModel

log = logging.getLogger(__name__)

MAX_CROP_SIDE = 1024
"""Largest crop side accepted, pixels: bigger ones are dead-lettered, not resized."""


def decode_crop(jpeg: bytes, size: int) -> np.ndarray:
    """JPEG bytes to a ``size`` x ``size`` BGR image; PoisonMessageError if it is not one."""
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise PoisonMessageError("crop: not a decodable image")
    h, w = img.shape[:2]
    if max(h, w) > MAX_CROP_SIDE or min(h, w) < 16:
        raise PoisonMessageError(f"crop: {w}x{h} pixels is outside 16..{MAX_CROP_SIDE}")
    if (h, w) != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


class FaceWorker(StreamConsumer):
    """Consumer of the face stream that writes one FaceScore per crop."""

    def __init__(self, settings: Settings, model: OnnxModel, client: redis.Redis, name: str,
                 stop: threading.Event | None = None) -> None:
        keys = Keys(settings.prefix)
        cfg: WorkerSettings = settings.face_worker
        super().__init__(client, keys, keys.stream(FaceCrop), keys.group("face-workers"), name,
                         batch_size=cfg.batch_size, block_ms=cfg.block_ms, min_idle_ms=cfg.min_idle_ms,
                         max_deliveries=cfg.max_deliveries, dead_maxlen=settings.streams.maxlen,
                         dead_retention_s=settings.streams.crop_retention_s, stop=stop,
                         redis_url=settings.redis.url)
        self.model = model
        self.size = int(model.input_shape[-1])
        self.scores = keys.stream(FaceScore)
        self.maxlen = settings.streams.maxlen

    def handle(self, entries: list[Entry]) -> Outcome:
        outcome = Outcome()
        crops: list[FaceCrop] = []
        images: list[np.ndarray] = []
        ids: list[str] = []
        for entry_id, fields in entries:
            try:
                msg = FaceCrop.from_fields(fields)
                images.append(decode_crop(msg.jpeg, self.size))
            except PoisonMessageError as e:
                outcome.dead[entry_id] = f"poison: {e}"
                continue
            crops.append(msg)
            ids.append(entry_id)
        if not images:
            return outcome
        t0 = time.perf_counter()
        scores = self.model.predict(np.stack(images))
        metrics.INFERENCE_SECONDS.labels(self.model.name).observe(time.perf_counter() - t0)
        metrics.SCORED.labels(self.model.name).inc(len(images))
        now = time.time()
        for entry_id, msg, score in zip(ids, crops, scores):
            metrics.STAGE_LATENCY.labels("ingest_to_face_score").observe(max(0.0, now - msg.ingest_ts))
            out = FaceScore(entry_id, msg.camera, msg.track, msg.frame, msg.capture_ts, msg.ingest_ts, now,
                            float(np.clip(score, 0.0, 1.0)), self.model.name, self.model.version, msg.label)
            outcome.writes.append(partial(_xadd, self.scores, out.to_fields(), self.maxlen))
        return outcome


def _xadd(stream: str, fields: dict[str, bytes], maxlen: int, pipe: redis.client.Pipeline) -> None:
    pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    cfg = settings.face_worker
    for key in ("model", "threads", "batch_size"):
        if getattr(args, key, None) is not None:
            setattr(cfg, key, getattr(args, key))
    model = OnnxModel(cfg.model or artifact_path("face.onnx"), threads=cfg.threads)
    name = args.name or consumer_name("face")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serve(settings.metrics, name)
    client = connect(settings.redis)
    if wait_until_up(client, name, settings.redis.url, stop):
        FaceWorker(settings, model, client, name, stop).run()
    return 0
