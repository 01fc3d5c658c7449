"""What the face and eye workers share: decode, batch, score with onnxruntime, write scores.

A worker is a ``StreamConsumer`` whose ``prepare()`` turns one decoded message into one
model input row; everything else (dead letters, batching, the score message, metrics,
start-up and signals) lives here once.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import redis

from liveness import lifecycle
from liveness.config import Settings, WorkerSettings
from liveness.contract import EyeSample, FaceCrop, Keys, Role, Score
from liveness.errors import PoisonMessageError
from liveness.heartbeat import Beacon
from liveness.metrics import STAGE_LATENCY
from liveness.streams import Entry, Outcome, StreamConsumer, consumer_name
from liveness.workers import metrics
from liveness.workers.runners import OnnxModel

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

log = logging.getLogger(__name__)


class ScoringWorker(StreamConsumer):
    """Consumes ``source`` messages and writes one ``output`` score per scored message."""

    source: ClassVar[type[FaceCrop] | type[EyeSample]]
    output: ClassVar[type[Score]]
    consumer_group: ClassVar[Literal["face-workers", "eye-workers"]]
    """The consumer group its workers share (``Keys.group``)."""
    heartbeat_role: ClassVar[Role]
    """What its heartbeat says it is."""
    biometric: ClassVar[bool] = False
    """Its inputs are face crops: the ones it dead-letters are kept only ``streams.crop_retention_s``."""
    section: ClassVar[Literal["face_worker", "eye_worker"]]
    """Its section of the settings."""
    short: ClassVar[str]
    """What its default consumer names start with."""
    input_shape: ClassVar[tuple[int, ...]]

    def __init__(self, settings: Settings, cfg: WorkerSettings, model: OnnxModel, client: redis.Redis, name: str,
                 stop: threading.Event | None = None, beacon: Beacon | None = None) -> None:
        keys = Keys(settings.prefix)
        dead_retention_s = settings.streams.crop_retention_s if self.biometric else None
        super().__init__(client, keys, keys.stream(self.source), keys.group(self.consumer_group), name,
                         batch_size=cfg.batch_size, block_ms=cfg.block_ms, min_idle_ms=cfg.min_idle_ms,
                         max_deliveries=cfg.max_deliveries, dead_maxlen=settings.streams.maxlen,
                         dead_retention_s=dead_retention_s, stop=stop, redis_url=settings.redis.url, beacon=beacon)
        self.model = model
        self.scores = keys.stream(self.output)
        self.maxlen = settings.streams.maxlen

    @classmethod
    def model_path(cls, configured: str | None) -> Path:
        """The model to load: ``configured`` (its section's ``model``), else its default."""
        raise NotImplementedError

    def prepare(self, msg: FaceCrop | EyeSample) -> np.ndarray | None:
        """One model input row; None to acknowledge without a score; PoisonMessageError to dead-letter."""
        raise NotImplementedError

    def handle(self, stream: str, entries: list[Entry]) -> Outcome:
        outcome = Outcome()
        batch: list[tuple[str, FaceCrop | EyeSample, np.ndarray]] = []
        for entry_id, fields in entries:
            try:
                msg = self.source.from_fields(fields)
                row = self.prepare(msg)
            except PoisonMessageError as e:
                outcome.dead[entry_id] = f"poison: {e}"
                continue
            except Exception as e:  # noqa: BLE001 - one odd message must not hold up its batch
                outcome.dead[entry_id] = f"poison: unexpected {type(e).__name__}: {e}"
                continue
            if row is not None:
                batch.append((entry_id, msg, row))
        if not batch:
            return outcome
        t0 = time.perf_counter()
        scores = self.model.predict(np.stack([row for _, _, row in batch]))
        metrics.INFERENCE_SECONDS.labels(self.model.name).observe(time.perf_counter() - t0)
        metrics.SCORED.labels(self.model.name).inc(len(batch))
        now = time.time()
        for (entry_id, msg, _), score in zip(batch, scores):
            if not np.isfinite(score):
                outcome.dead[entry_id] = "poison: model returned a non-finite score"
                continue
            STAGE_LATENCY.labels(f"ingest_to_{self.model.name}_score").observe(max(0.0, now - msg.ingest_ts))
            out = self.output(entry_id, msg.camera, msg.track, msg.frame, msg.capture_ts, msg.ingest_ts,
                              now, float(np.clip(score, 0.0, 1.0)), self.model.name, self.model.version,
                              msg.label)
            outcome.writes.append(partial(_xadd, self.scores, out.to_fields(), self.maxlen))
        return outcome


def _xadd(stream: str, fields: dict[FieldT, EncodableT], maxlen: int, pipe: redis.client.Pipeline) -> None:
    pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)


def with_cli_overrides(settings: Settings, args: argparse.Namespace, worker: type[ScoringWorker]) -> Settings:
    """``settings`` with the worker command's --model, --threads and --batch-size over its section."""
    given = {"model": args.model, "threads": args.threads, "batch_size": args.batch_size}
    cfg: WorkerSettings = getattr(settings, worker.section)
    cfg = cfg.model_copy(update={key: value for key, value in given.items() if value is not None})
    return settings.model_copy(update={worker.section: cfg})


def serve_worker(settings: Settings, worker: type[ScoringWorker], *, name: str | None = None,
                 metrics_port: int | None = None) -> None:
    """Load the model, serve metrics, consume until SIGTERM/SIGINT (the batch is finished first)."""
    cfg: WorkerSettings = getattr(settings, worker.section)
    model = OnnxModel(worker.model_path(cfg.model), threads=cfg.threads, input_shape=worker.input_shape,
                      max_batch=cfg.batch_size)
    name = name or consumer_name(worker.short)
    service = lifecycle.start(settings, name, worker.heartbeat_role, metrics_port)
    if service:
        worker(settings, cfg, model, service.client, name, service.stop, service.beacon).run()
