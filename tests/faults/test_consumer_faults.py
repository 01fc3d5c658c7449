"""A fault in a consumer's handler ends its process with a traceback and an exit code other than 0,
and the supervisor restarts it, as ``liveness run`` runs it; the restarted process handles the batch
the failed one held."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import redis
import yaml

from liveness.app.run import process_specs
from liveness.config import load_settings
from liveness.contract import Decision, EyeSample, EyeScore, FaceCrop, FaceScore, Keys
from liveness.evidence import Policy
from liveness.fusion.service import FusionConsumer
from liveness.streams import Entry, Outcome
from liveness.supervisor import ProcessSpec, Supervisor
from liveness.workers.eye import EyeWorker
from liveness.workers.face import FaceWorker
from tests.conftest import REDIS_URL
from tests.fixtures import crop_message, real_crops

HANDLERS = {"fusion": FusionConsumer, "face-worker-1": FaceWorker, "eye-worker-1": EyeWorker}
"""The consumer class of each process ``liveness run`` starts with one face and one eye worker."""


def faulty(consumer: type, marker: str, log_path: str, target: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """``target(*args, **kwargs)`` whose consumer's handler raises while ``marker`` exists (it removes it, so once).

    The process writes its output to ``log_path``: a supervised child writes where the fork server
    was started, which need not be this test's output.
    """
    log = open(log_path, "a")  # noqa: SIM115 - the process's stdout and stderr until it ends
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    original = consumer.handle

    def handle(self: Any, stream: str, entries: list[Entry]) -> Outcome:
        try:
            os.unlink(marker)
        except FileNotFoundError:
            return original(self, stream, entries)
        raise RuntimeError(f"injected fault in {type(self).__name__}.handle")

    consumer.handle = handle
    target(*args, **kwargs)


def test_a_fault_in_each_handler_ends_its_process_and_the_supervisor_restarts_it(
        r: redis.Redis, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)  # the children log at the supervisor's level: each start is logged
    keys = Keys(prefix)
    policy = tmp_path / "policy.json"
    policy.write_text(Policy().model_dump_json())
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "prefix": prefix, "redis": {"url": REDIS_URL}, "metrics": {"port": 0},
        "face_worker": {"min_idle_ms": 1000}, "eye_worker": {"min_idle_ms": 1000},
        "fusion": {"policy": str(policy), "min_idle_ms": 1000},
    }))
    # one message for each service, there before its group is made (groups start at the stream's start)
    crop = r.xadd(keys.stream(FaceCrop), crop_message(real_crops("live")[0], "cam", "cam:1:1", 1).to_fields()).decode()
    window = [[0.3, 0.3]] * 10
    eye = r.xadd(keys.stream(EyeSample), EyeSample("cam", "cam:1:2", 1, 1.0, 1.0, (0, 0, 9, 9), 0.3, 0.3, 0.3,
                                                   window, 10.0).to_fields()).decode()
    for frame in range(4):
        score = FaceScore(f"{frame}-0", "cam", "cam:1:3", frame, 1.0, 1.0, 1.0, 0.97, "face", "1")
        r.xadd(keys.stream(FaceScore), score.to_fields())

    specs = []
    logs = {}
    real = process_specs(load_settings(cfg), face_workers=1, eye_workers=1)
    assert sorted(s.name for s in real) == sorted(HANDLERS)
    for spec in real:
        marker = tmp_path / f"fault-{spec.name}"
        marker.touch()
        logs[spec.name] = tmp_path / f"{spec.name}.log"
        specs.append(ProcessSpec(spec.name, faulty, (HANDLERS[spec.name], str(marker), str(logs[spec.name]),
                                                     spec.target, *spec.args), spec.kwargs))
    exits: dict[str, int] = {}

    def done() -> bool:
        for spec in specs:
            if spec.process is not None and spec.process.exitcode is not None:
                exits.setdefault(spec.name, spec.process.exitcode)
        if time.monotonic() > deadline:
            return True
        face_scores = {FaceScore.from_fields(f).source_id for _, f in r.xrange(keys.stream(FaceScore))}
        eye_scores = {EyeScore.from_fields(f).source_id for _, f in r.xrange(keys.stream(EyeScore))}
        decided = {Decision.from_fields(f).track for _, f in r.xrange(keys.stream(Decision))}
        return crop in face_scores and eye in eye_scores and "cam:1:3" in decided and len(exits) == len(specs)

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    deadline = time.monotonic() + 120
    try:
        Supervisor(specs).run(until=done)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert time.monotonic() <= deadline, f"not every batch was handled after a restart; exits {exits}"
    assert all(code != 0 for code in exits.values()), exits
    for name, path in logs.items():
        out = path.read_text()
        assert out.count("Traceback") == 1 and "RuntimeError: injected fault" in out, f"{name}:\n{out[-3000:]}"
        assert out.count(": consuming ") == 2, f"{name} ran twice: failed, then restarted\n{out[-3000:]}"
    for stream in (FaceCrop, EyeSample, FaceScore):
        for group in r.xinfo_groups(keys.stream(stream)):
            assert group["pending"] == 0, f"{stream.__name__}: the failed batch was handled by the restarted process"
