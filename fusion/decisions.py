"""``liveness decisions``: print decision events as JSON lines, optionally following the stream."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

from liveness.config import load_settings
from liveness.contract import Decision, Keys
from liveness.errors import PoisonMessageError
from liveness.redisconn import connect


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    client = connect(settings.redis)
    stream = Keys(settings.prefix).stream(Decision)
    printed = 0
    last = "0-0" if not args.follow or args.from_start else "$"
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    while args.count is None or printed < args.count:
        wait_ms = 500
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wait_ms = max(1, min(wait_ms, int(left * 1000)))
        reply = client.xread({stream: last}, count=100, block=wait_ms if args.follow else None)
        if not reply:
            if not args.follow:
                break
            continue
        for entry_id, fields in reply[0][1]:
            last = entry_id
            try:
                d = Decision.from_fields(fields)
            except PoisonMessageError as e:
                print(f"liveness decisions: skipped {entry_id!r}: {e}", file=sys.stderr)
                continue
            out = {"id": entry_id.decode(), **asdict(d)}
            print(json.dumps(out) if args.json else
                  f"{d.camera:>12} {d.track:>20} {d.verdict:>9} {d.confidence:5.2f} frames={d.frames}", flush=True)
            printed += 1
            if args.count is not None and printed >= args.count:
                break
    return 0
