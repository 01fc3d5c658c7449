"""Opt-in live view for installers: a camera's frames with boxes, track ids, verdicts and scores,
served as MJPEG over HTTP (loopback by default, since the frames show faces).

Frames are annotated and encoded only while a viewer is connected, at most ``fps`` a second.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import redis

from liveness.contract import Keys
from liveness.evidence import Shown, read_verdicts
from liveness.tracking import Track

log = logging.getLogger(__name__)

COLOURS = {"live": (60, 200, 60), "spoof": (40, 40, 230), "undecided": (0, 200, 230)}
VERDICT_EVERY_S = 0.5
"""How often the verdicts of the shown tracks are read from fusion's state, seconds."""


class Preview:
    """Holds the newest annotated JPEG and serves it to any number of viewers."""

    def __init__(self, camera_id: str, host: str, port: int, client: redis.Redis, keys: Keys, fps: float = 5.0) -> None:
        self.camera_id = camera_id
        self.client = client
        self.keys = keys
        self.period = 1.0 / fps
        self.viewers = 0
        self._jpeg: bytes | None = None
        self._cond = threading.Condition()
        self._next = 0.0
        self._verdicts: dict[str, Shown] = {}
        self._verdicts_at = 0.0
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name=f"preview:{camera_id}", daemon=True).start()
        log.info("ingest %s: preview on http://%s:%d/", camera_id, host, self.server.server_address[1])

    def offer(self, image: np.ndarray, tracks: list[Track]) -> None:
        """Called for every processed frame; does nothing unless someone watches."""
        now = time.monotonic()
        if not self.viewers or now < self._next:
            return
        self._next = now + self.period
        frame = image.copy()
        verdicts = self._read_verdicts([t.id for t in tracks], now)
        for t in tracks:
            verdict, score = verdicts.get(t.id, Shown("undecided", -1.0))
            x, y, w, h = t.box
            colour = COLOURS.get(verdict, COLOURS["undecided"])
            cv2.rectangle(frame, (x, y), (x + w, y + h), colour, 2)
            text = f"{t.id} {verdict}" + (f" face {score:.2f}" if score >= 0 else "")
            cv2.putText(frame, text, (x, max(15, y - 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
            if t.face is not None:  # eye ratios: landmarked only where the eye path is on
                cv2.putText(frame, f"eyes {t.face.left:.2f}/{t.face.right:.2f}", (x, y + h + 16),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if ok:
            with self._cond:
                self._jpeg = jpeg.tobytes()
                self._cond.notify_all()

    def _read_verdicts(self, tracks: list[str], now: float) -> dict[str, Shown]:
        if now - self._verdicts_at >= VERDICT_EVERY_S and tracks:
            self._verdicts_at = now
            try:
                self._verdicts = read_verdicts(self.client, self.keys, tracks)
            except redis.RedisError:
                pass  # the view goes on with what it knew
        return self._verdicts

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        preview = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path == "/":
                    body = (f"<html><body style='background:#111;color:#ddd'><h3>{preview.camera_id}</h3>"
                            "<img src='/stream.mjpg'></body></html>").encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if self.path != "/stream.mjpg":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                preview.viewers += 1
                try:
                    while True:
                        with preview._cond:
                            preview._cond.wait(2.0)
                            jpeg = preview._jpeg
                        if jpeg is None:
                            continue
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    preview.viewers -= 1

            def log_message(self, *args: object) -> None:
                return

        return Handler

    def close(self) -> None:
        self.server.shutdown()
