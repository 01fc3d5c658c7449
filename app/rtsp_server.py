"""A real RTSP server (GStreamer's) that serves numbered frame files as looping H.264 cameras.

Standalone: run it with the system Python, which has the ``gi`` bindings
(Debian: gir1.2-gst-rtsp-server-1.0, python3-gi, gstreamer1.0-plugins-*):

    /usr/bin/python3 app/rtsp_server.py --port 8554 cam1=/frames/a/%05d.jpg@15

serves ``rtsp://127.0.0.1:8554/cam1``. Frames must be numbered from 0 in the pattern: JPEG
images (encoded live) or H.264 access units (served as they are).
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def pipeline(pattern: str, fps: float) -> str:
    """A launch line that loops numbered files into an RTP H.264 payload.

    ``.h264`` files are access units encoded beforehand (``liveness.app.replay.stage_frames``) and
    are only re-packetised; JPEG frames are encoded here, live.
    """
    num, den = (int(round(fps * 1000)), 1000)
    if pattern.endswith(".h264"):
        source = (f"multifilesrc location={pattern} loop=true "
                  f"caps=video/x-h264,stream-format=byte-stream,alignment=au,framerate={num}/{den} ! h264parse")
    else:
        source = (f"multifilesrc location={pattern} loop=true caps=image/jpeg,framerate={num}/{den} "
                  "! jpegdec ! videoconvert ! video/x-raw,format=I420 "
                  "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 bitrate=3000")
    return f"( {source} ! rtph264pay name=pay0 pt=96 config-interval=1 )"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("mounts", nargs="+", metavar="NAME=PATTERN@FPS")
    args = parser.parse_args(argv)
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for spec in args.mounts:
        name, _, rest = spec.partition("=")
        pattern, _, fps = rest.rpartition("@")
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(pipeline(pattern, float(fps or 15)))
        factory.set_shared(True)
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
