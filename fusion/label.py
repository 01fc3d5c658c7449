"""``liveness label``: operator feedback, the ground truth of one track, picked up by fusion."""

from __future__ import annotations

import argparse
import time

from liveness.config import load_settings
from liveness.contract import Keys, Label
from liveness.redisconn import connect


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    msg = Label(args.camera, args.track, args.label, time.time())
    msg.validate()
    client = connect(settings.redis)
    entry = client.xadd(Keys(settings.prefix).stream(Label), msg.to_fields(), maxlen=settings.streams.maxlen,
                        approximate=True)
    print(f"labelled {args.camera} {args.track} as {args.label} ({entry.decode()})")
    return 0
