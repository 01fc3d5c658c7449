"""A cap on the pixels of images from outside, checked in their header before anything decodes them.

A 20000x20000 PNG of one colour is about a megabyte, and decoding it takes 1.2 GB and seconds:
face crops arrive from any holder of ingest's Redis password, and dataset folders, clips and
file cameras from anyone who can write there.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image
from prometheus_client import Counter

MAX_PIXELS = 40_000_000
"""Most pixels of one image or video frame decoded (40 MP; an 8K frame is 33 MP)."""

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "PPM", "JPEG2000")
"""Image formats whose header is read (OpenCV and FFmpeg decode these)."""

REFUSED = Counter("liveness_images_refused_total", "Images and video frames skipped undecoded: over the pixel cap",
                  ["where"])


def oversized(source: bytes | Path, where: str, max_pixels: int = MAX_PIXELS) -> str | None:
    """Why ``source`` must not be decoded (its header states more than ``max_pixels``), counted
    under ``where``; None when it may, or when it is no image whose header Pillow reads (a video,
    garbage: the decoder says so)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=FORMATS) as im:
                width, height = im.size
    except Image.DecompressionBombError:
        width, height = max_pixels + 1, 1  # Pillow's own cap, far above ours
    except (OSError, ValueError, SyntaxError):
        return None
    return frame_oversized(width, height, where, max_pixels)


def frame_oversized(width: int, height: int, where: str, max_pixels: int = MAX_PIXELS) -> str | None:
    """Why a ``width`` x ``height`` frame must not be decoded, counted under ``where``; None when it may."""
    if width * height <= max_pixels:
        return None
    REFUSED.labels(where).inc()
    return f"{width}x{height} pixels is over the cap of {max_pixels / 1e6:g} MP"
