"""The pixel cap: images from outside whose header states too many pixels are skipped undecoded,
with the reason, and counted: face crops, dataset frames, clips and file cameras."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client import REGISTRY

from liveness.config import CameraSettings
from liveness.errors import PoisonMessageError, SourceError
from liveness.images import MAX_PIXELS, oversized
from liveness.ingest.capture import open_capture
from liveness.models.datasets import Sequence
from liveness.video import read_video
from liveness.workers.face import decode_crop
from liveness.workers.runners import FACE_INPUT_SHAPE

SIDE = 7000
"""49 MP: over the cap, and still small enough to decode should a check fail."""


def blank_png(side: int) -> bytes:
    """A valid black ``side`` x ``side`` PNG (1-bit grey): tens of kilobytes, whatever its size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (side + 7) // 8)
    pixels = zlib.compressobj(9)
    body = b"".join(pixels.compress(row) for _ in range(side)) + pixels.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def refused(where: str) -> float:
    return REGISTRY.get_sample_value("liveness_images_refused_total", {"where": where}) or 0.0


@pytest.fixture(scope="module")
def big_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.png"
    path.write_bytes(blank_png(SIDE))
    return path


def test_the_header_tells_the_size_without_decoding(big_png: Path) -> None:
    assert SIDE * SIDE > MAX_PIXELS and big_png.stat().st_size < 256 * 1024, "a crop of legal size"
    assert oversized(big_png.read_bytes(), "test") == f"{SIDE}x{SIDE} pixels is over the cap of 40 MP"
    assert oversized(blank_png(64), "test") is None
    assert oversized(b"not an image", "test") is None, "the decoder says what garbage is"


def test_an_oversized_crop_is_poison(big_png: Path) -> None:
    before = refused("face-crop")
    with pytest.raises(PoisonMessageError, match="over the cap"):
        decode_crop(big_png.read_bytes(), FACE_INPUT_SHAPE, 2)
    assert refused("face-crop") == before + 1


def test_oversized_frames_clips_and_file_cameras_are_skipped(big_png: Path, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    small = tmp_path / "small.jpg"
    cv2.imwrite(str(small), np.full((48, 64, 3), 128, np.uint8))
    before = refused("dataset"), refused("video"), refused("camera")
    frames = list(Sequence("s", "live", frames=[big_png, small]).read())
    assert len(frames) == 1 and frames[0][1].shape == (48, 64, 3)
    assert not list(read_video(big_png))
    with pytest.raises(SourceError, match="over the cap"):
        open_capture(CameraSettings(id="file", source=str(big_png)))
    assert (refused("dataset"), refused("video"), refused("camera")) == (before[0] + 1, before[1] + 1, before[2] + 1)
    assert caplog.text.count("over the cap of 40 MP, skipped") == 2
