"""The decisions stream, read in order: ``tail()`` for every reader (``liveness decisions``, and the
displays of ``liveness run`` and ``liveness demo``), and the ``liveness decisions`` command, which
prints them as JSON lines, optionally following the stream.

Given fusion's decision key, ``tail()`` flags each decision that fails its signature: anyone who
can write to the stream can add one, only fusion can sign it (docs/operations.md, "Trust")."""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from dataclasses import asdict
from typing import Iterator, cast

import redis

from liveness.config import load_settings
from liveness.contract import Decision, Keys
from liveness.errors import PoisonMessageError
from liveness.redisconn import connect
from liveness.streams import ReadReply, RawEntry

log = logging.getLogger(__name__)

BLOCK_MS = 500
"""Longest wait for new decisions before ``tail`` yields an empty batch, milliseconds."""

READ_COUNT = 100
"""Most decisions read at once."""


def tail(client: redis.Redis, stream: str, start: str = "0-0", *, follow: bool = False,
         stop: threading.Event | None = None, until: float | None = None,
         key: bytes | None = None) -> Iterator[list[tuple[str, Decision]]]:
    """Batches of (entry id, decision) after ``start`` ("$": only those to come), in stream order.

    Without ``follow`` it ends at the stream's end. With it, it waits for new decisions, yielding
    an empty batch every ``BLOCK_MS`` so a display can refresh, until ``stop`` is set or the
    monotonic clock reaches ``until``; Redis outages are then waited out. An entry that does not
    decode is logged and skipped: one bad entry must not end a reader. With ``key``, one that fails
    fusion's signature is logged as forged (``Decision.authentic`` tells the caller).
    """
    pause = stop or threading.Event()
    last = start
    while not pause.is_set():
        block = BLOCK_MS if follow else None
        if until is not None:
            left = until - time.monotonic()
            if left <= 0:
                return
            if block is not None:
                block = max(1, min(block, int(left * 1000)))
        try:
            if last == "$":  # the id of the newest entry, so nothing written between two reads is missed
                newest = cast(list[RawEntry], client.xrevrange(stream, count=1))
                last = newest[0][0].decode() if newest else "0-0"
            reply = cast(ReadReply, client.xread({stream: last}, count=READ_COUNT, block=block))
        except (redis.ConnectionError, redis.TimeoutError) as e:
            if not follow:
                raise
            log.warning("decisions: Redis unavailable (%s); waiting", type(e).__name__)
            pause.wait(1.0)
            continue
        entries = reply[0][1] if reply else []
        if not entries and not follow:
            return
        batch: list[tuple[str, Decision]] = []
        for entry_id, fields in entries:
            last = entry_id.decode()
            try:
                decision = Decision.from_fields(fields)
            except PoisonMessageError as e:
                log.warning("decisions: skipped %s: %s", last, e)
                continue
            if key is not None and not decision.authentic(key):
                log.warning("decisions: %s (%s %s %s) FORGED: it fails fusion's signature", last, decision.camera,
                            decision.track, decision.verdict)
            batch.append((last, decision))
        yield batch


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    client = connect(settings.redis)
    stream = Keys(settings.prefix).stream(Decision)
    start = "0-0" if not args.follow or args.from_start else "$"
    until = None if args.timeout is None else time.monotonic() + args.timeout
    key = settings.fusion.key()
    printed = 0
    for batch in tail(client, stream, start, follow=args.follow, until=until, key=key):
        for entry_id, d in batch:
            authentic = None if key is None else d.authentic(key)
            flag = " FORGED" if authentic is False else ""
            print(json.dumps({"id": entry_id, **asdict(d), "authentic": authentic}) if args.json else
                  f"{d.camera:>12} {d.track:>20} {d.verdict:>9} {d.confidence:5.2f} frames={d.frames}{flag}", flush=True)
            printed += 1
            if args.count is not None and printed >= args.count:
                return 0
    return 0
