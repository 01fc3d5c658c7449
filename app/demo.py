"""``liveness demo``: a labelled dataset replayed over RTSP through the whole pipeline, shown as a
live table of each camera's latest decision against its label."""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from liveness.app.run import effective_settings, eye_pool, process_specs
from liveness.config import Settings
from liveness.contract import Decision, Keys
from liveness.fusion.decisions import tail
from liveness.redisconn import connect
from liveness.supervisor import Supervisor


def show_table(settings: Settings, stop: threading.Event, every_s: float = 1.0) -> None:
    """A live terminal table: each camera's latest decision, running APCER/BPCER, latency."""
    client = connect(settings.redis)
    labels = {c.id: c.label for c in settings.cameras}
    latest: dict[str, Decision] = {}
    latencies: list[float] = []
    next_draw = 0.0
    key = settings.fusion.key()
    for batch in tail(client, Keys(settings.prefix).stream(Decision), follow=True, stop=stop, key=key):
        for _, d in batch:
            if key is not None and not d.authentic(key):
                continue  # logged by tail()
            latest[d.camera] = d
            latencies.append(d.decided_ts - d.last_capture_ts)
        if time.monotonic() < next_draw:
            continue
        next_draw = time.monotonic() + every_s
        attacks = [c for c, lab in labels.items() if lab == "spoof"]
        lives = [c for c, lab in labels.items() if lab == "live"]
        apcer = sum(latest[c].verdict == "live" for c in attacks if c in latest) / max(1, len(attacks))
        bpcer = sum(latest.get(c) is None or latest[c].verdict != "live" for c in lives) / max(1, len(lives))
        rows = [f"{'camera':<34} {'truth':<6} {'verdict':<9} {'conf':>5} {'track':<26} {'latency':>8}"]
        for cam, label in labels.items():
            last = latest.get(cam)
            rows.append(f"{cam:<34} {label or '-':<6} {(last.verdict if last else 'waiting'):<9} "
                        f"{(f'{last.confidence:.2f}' if last else ''):>5} {(last.track if last else ''):<26} "
                        f"{(f'{(last.decided_ts - last.last_capture_ts) * 1000:.0f} ms' if last else ''):>8}")
        median = sorted(latencies)[len(latencies) // 2] * 1000 if latencies else float("nan")
        rows.append(f"\nAPCER {apcer:.2%}  BPCER {bpcer:.2%} (undecided live counts as rejected)  "
                    f"decisions {len(latencies)}  median latency {median:.0f} ms   ^C to stop")
        print("\x1b[2J\x1b[H" + "\n".join(rows), flush=True)


def run(args: argparse.Namespace) -> int:
    """``liveness demo``: a labelled dataset replayed over RTSP through the whole pipeline."""
    from liveness.models.datasets import load

    from liveness.app.replay import Replay, interleave

    dataset = load(args.dataset, args.root, args.split)
    sequences = interleave(dataset.sequences)[: args.limit]
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="liveness-demo-")))
        replay = Replay(sequences, args.port, args.fps, tmp / "frames")
        stack.callback(replay.close)
        settings, _ = effective_settings(args.config, stack, tmp, cameras=replay.cameras)
        specs = process_specs(settings, args.face_workers, eye_pool(settings, args.eye_workers), loop=True)
        stop = threading.Event()
        stack.callback(stop.set)
        threading.Thread(target=show_table, args=(settings, stop), daemon=True).start()
        return Supervisor(specs).run()
