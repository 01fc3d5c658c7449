"""``liveness bench``: benchmarks that print one JSON object.

Timings are relative to a reference measured in the same run (a single-threaded numpy
float32 1000x1000 matmul), so figures from different machines can be compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable

import numpy as np

from liveness.defaults import artifact_path
from liveness.errors import LivenessError

REF_SIDE = 1000
"""Side of the reference float32 matmul."""


Clock = Callable[[], float]
"""Seconds: ``time.perf_counter`` (wall) or ``time.thread_time`` (this thread's CPU)."""


def _median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3, clock: Clock = time.perf_counter) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append((clock() - t0) * 1000.0)
    return statistics.median(times)


ROUNDS = 9
"""Interleaved rounds of reference and model timings; the ratios are medians over rounds."""


def reference(repeats: int = 3, clock: Clock = time.perf_counter) -> tuple[Callable[[], float], list[dict[str, Any]]]:
    """A function timing one 1000x1000 float32 matmul (median ms of ``repeats`` on ``clock``) on
    one BLAS thread, and threadpoolctl's view of the BLAS pools.

    LivenessError if a pool does not comply, so a reader can trust the reference ran on one
    thread. Call it, and the function it returns, inside ``threadpool_limits(limits=1)``.
    """
    from threadpoolctl import threadpool_info

    rng = np.random.default_rng(0)
    a = rng.standard_normal((REF_SIDE, REF_SIDE), dtype=np.float32)
    b = rng.standard_normal((REF_SIDE, REF_SIDE), dtype=np.float32)
    pools = [{"api": p["internal_api"], "num_threads": p["num_threads"]} for p in threadpool_info()]
    if any(p["num_threads"] != 1 for p in pools):
        raise LivenessError(f"bench: could not limit BLAS to one thread: {pools}")
    return (lambda: _median_ms(lambda: a @ b, repeats, warmup=1, clock=clock)), pools


def bench_face(args: argparse.Namespace) -> dict[str, Any]:
    """ms per face of the face model on one onnxruntime thread, at batch 1 and 32.

    Why interleaved rounds: on a shared VM the speed of the machine drifts by 2x within a
    minute; a reference and a model timing taken in the same round see the same machine, so
    the median of the per-round ratios is far steadier than a ratio of separate medians.
    Why this thread's CPU time (onnxruntime at one thread and BLAS run in it): on a loaded
    machine most runs at batch 1 (4 ms) fit in one time slice and their median never counts
    a wait for the CPU, while every run at batch 32 (130 ms) does; wall time made batch 32
    look up to 1.5x dearer a crop than batch 1 at a load average of 30.
    """
    from threadpoolctl import threadpool_limits

    from liveness.workers.runners import SLICE, OnnxModel

    model = OnnxModel(args.model or artifact_path("face.onnx"), threads=1)
    rng = np.random.default_rng(0)
    b1 = rng.integers(0, 256, (1, *model.input_shape)).astype(np.float32)
    b32 = rng.integers(0, 256, (32, *model.input_shape)).astype(np.float32)
    rounds: list[tuple[float, float, float]] = []
    with threadpool_limits(limits=1):
        ref_ms, pools = reference(clock=time.thread_time)
        _median_ms(lambda: model.predict(b32), 1, warmup=3)
        for _ in range(ROUNDS):
            ref = ref_ms()
            rounds.append((ref, _median_ms(lambda: model.predict(b1), 25, warmup=2, clock=time.thread_time),
                           _median_ms(lambda: model.predict(b32), 5, warmup=1, clock=time.thread_time) / 32.0))
    ref, ms_b1, ms_b32 = (statistics.median(r[i] for r in rounds) for i in range(3))
    return {"what": "face", "model": model.name, "version": model.version, "threads": 1,
            "ms_b1": round(ms_b1, 4), "ms_b32": round(ms_b32, 4), "ref_ms": round(ref, 3),
            "ratio_b1": round(statistics.median(r[1] / r[0] for r in rounds), 4),
            "ratio_b32": round(statistics.median(r[2] / r[0] for r in rounds), 4), "rounds": ROUNDS,
            "blas": pools, "slice": SLICE, "clock": "thread"}


def bench_ingest(args: argparse.Namespace) -> dict[str, Any]:
    """Full ingest against decoding alone (``ingest/bench.py``)."""
    from liveness.ingest.bench import bench_ingest as ingest

    return ingest(args)


def machine_ref_ms(repeats: int = 5) -> float:
    """The reference alone (median ms of ``repeats`` matmuls on one BLAS thread)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return reference(repeats)[0]()


def bench_e2e(args: argparse.Namespace) -> dict[str, Any]:
    """The whole pipeline with N RTSP cameras (``app/e2e.py``).

    Its target is absolute (N cameras on this machine), so ``ref_ms`` (the reference, taken
    before and after the run, averaged) says how fast the machine was, for comparing runs on
    different machines.
    """
    from liveness.app.e2e import bench_e2e as e2e

    before = machine_ref_ms()
    result = e2e(args)
    result["ref_ms"] = round((before + machine_ref_ms()) / 2.0, 3)
    return result


BENCHES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "face": bench_face,
    "ingest": bench_ingest,
    "e2e": bench_e2e,
}
"""What -> its benchmark; each returns one JSON-ready dict."""


def run(args: argparse.Namespace) -> int:
    bench = BENCHES.get(args.what)
    if bench is None:
        raise LivenessError(f"bench {args.what}: not implemented yet (available: {', '.join(sorted(BENCHES))})")
    result = bench(args)
    print(json.dumps(result) if args.json else "\n".join(f"{k:>10}  {v}" for k, v in result.items()))
    return 0
