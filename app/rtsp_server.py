"""A real RTSP server (GStreamer's) that serves numbered frame files as looping, real-time cameras.

Standalone: run it with the system Python, which has the ``gi`` bindings
(Debian: gir1.2-gst-rtsp-server-1.0, python3-gi, gstreamer1.0-plugins-*):

    /usr/bin/python3 app/rtsp_server.py --port 8554 cam1=/frames/a/%05d.h264@15

serves ``rtsp://127.0.0.1:8554/cam1``. Frames must be numbered from 0 in the pattern: H.264
access units (served as they are, the cheap way) or JPEG images (encoded live). A Matroska
recording (``NAME=clip.h264.mkv`` or ``clip.h265.mkv``) is served once as it was recorded, with its
own timestamps, slices and B-frames: what an IP camera sends.

Every frame is pushed with its timestamp (frame number / rate), so the server's sinks send it
when it is due. Files carry no timestamps of their own: served without them (``multifilesrc``),
a camera is pushed as fast as the machine can read it, and the RTSP client's send backlog drops
the packets it cannot hold, which decoders show as lost slices.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def count_frames(pattern: str) -> int:
    """How many files the pattern numbers from 0 without a gap."""
    n = 0
    while Path(pattern % n).is_file():
        n += 1
    return n


def recording(path: str) -> str:
    """A launch line that sends a Matroska recording once, as recorded."""
    codec = "h265" if path.endswith(".h265.mkv") else "h264"
    return f"( filesrc location={path} ! matroskademux ! {codec}parse ! rtp{codec}pay name=pay0 pt=96 )"


def pipeline(pattern: str, fps: float) -> str:
    """A launch line from an appsrc named ``src`` (fed by ``Camera``) to an RTP H.264 payloader.

    ``config-interval=0``: the payloader adds no SPS/PPS of its own. It would add them before
    every IDR slice, and a keyframe of several slices (x264's sliced threads, most IP cameras)
    would then be cut into several pictures by the decoder: the lower slices lost, every frame of
    the GOP smeared. The staged keyframes carry their SPS/PPS (and x264enc's byte-stream does).
    """
    rate = f"{int(round(fps * 1000))}/1000"
    if pattern.endswith(".h264"):
        encode = f"video/x-h264,stream-format=byte-stream,alignment=au,framerate={rate} ! h264parse"
    else:
        encode = (f"image/jpeg,framerate={rate} ! jpegdec ! videoconvert ! video/x-raw,format=I420 "
                  "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 bitrate=3000")
    return (f"( appsrc name=src format=time is-live=false max-bytes=0 max-buffers=4 block=false caps={encode} "
            "! rtph264pay name=pay0 pt=96 config-interval=0 )")


class Camera:
    """Feeds one mount's appsrc with its files in a loop, each stamped with when it is due."""

    def __init__(self, pattern: str, fps: float) -> None:
        self.pattern = pattern
        self.count = count_frames(pattern)
        if self.count == 0:
            raise SystemExit(f"rtsp_server: no frames at {pattern % 0}")
        self.duration = int(Gst.SECOND / fps)
        self.sent = 0

    def configure(self, _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        """A new media (the first client, or the first after all left) starts at frame 0, a keyframe."""
        self.sent = 0
        media.get_element().get_by_name("src").connect("need-data", self.need_data)

    def need_data(self, src: Gst.Element, _length: int) -> None:
        data = Path(self.pattern % (self.sent % self.count)).read_bytes()
        buf = Gst.Buffer.new_wrapped(data)
        buf.pts = buf.dts = self.sent * self.duration
        buf.duration = self.duration
        self.sent += 1
        src.emit("push-buffer", buf)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("mounts", nargs="+", metavar="NAME=PATTERN@FPS|NAME=RECORDING.mkv")
    args = parser.parse_args(argv)
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for spec in args.mounts:
        name, _, rest = spec.partition("=")
        factory = GstRtspServer.RTSPMediaFactory()
        if rest.endswith(".mkv"):  # each client sees the whole recording
            factory.set_launch(recording(rest))
        else:
            factory.set_shared(True)
            pattern, _, fps = rest.rpartition("@")
            camera = Camera(pattern, float(fps or 15))
            factory.set_launch(pipeline(pattern, float(fps or 15)))
            factory.connect("media-configure", camera.configure)
        mounts.add_factory(f"/{name}", factory)
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on {args.address}:{args.port}", file=sys.stderr, flush=True)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"rtsp_server: ready on {args.address}:{args.port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
