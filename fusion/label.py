"""``liveness label``: operator feedback, the ground truth of tracks, picked up by fusion.

Labels feed the accuracy gauges, and live labels calibrate their camera (``liveness.evidence``):
``--recent 30`` labels every track a camera scored in the last 30 seconds, which is how a
camera is commissioned (a few people walk past it, nobody else in view).
"""

from __future__ import annotations

import argparse
import time
from typing import cast

import redis

from liveness.config import load_settings
from liveness.contract import FaceScore, Keys, Label
from liveness.errors import LivenessError, PoisonMessageError
from liveness.redisconn import connect
from liveness.streams import RawEntry


def recent_tracks(client: redis.Redis, keys: Keys, camera: str, seconds: float) -> list[str]:
    """Tracks of ``camera`` with a face score in the last ``seconds``, oldest first."""
    start = f"{int((time.time() - seconds) * 1000)}-0"
    tracks: dict[str, None] = {}
    for _, fields in cast(list[RawEntry], client.xrange(keys.stream(FaceScore), min=start)):
        try:
            score = FaceScore.from_fields(fields)
        except PoisonMessageError:
            continue
        if score.camera == camera:
            tracks.setdefault(score.track)
    return list(tracks)


def run(args: argparse.Namespace) -> int:
    if args.recent is not None and not args.recent > 0:
        raise LivenessError(f"--recent {args.recent:g}: must be a positive number of seconds")
    settings = load_settings(args.config)
    keys = Keys(settings.prefix)
    client = connect(settings.redis)
    tracks = [args.track] if args.track else recent_tracks(client, keys, args.camera, args.recent)
    if not tracks:  # labelling nothing must not look like success: commissioning would silently stay uncalibrated
        raise LivenessError(f"camera {args.camera}: no track scored in the last {args.recent:g} s; nothing labelled "
                            "(is the camera running with a face in view? `liveness decisions` lists the tracks)")
    for track in tracks:
        msg = Label(args.camera, track, args.label, time.time())
        msg.validate()
        entry = cast(bytes, client.xadd(keys.stream(Label), msg.to_fields(), maxlen=settings.streams.maxlen,
                                        approximate=True))
        print(f"labelled {args.camera} {track} as {args.label} ({entry.decode()})")
    return 0
