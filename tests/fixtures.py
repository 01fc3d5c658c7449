"""Real test data made from NUAA frames through the real face pipeline."""

from __future__ import annotations

from functools import lru_cache

import cv2

from liveness.config import CropSettings
from liveness.contract import EyeSample, FaceCrop
from liveness.eyes import EyeHistory
from liveness.face import FacePipeline, crop_jpeg
from tests.conftest import nuaa_sequence

SEQUENCES = {"live": "ClientRaw/0001_00_00_01", "spoof": "ImposterRaw/0001_00_00_01"}


@lru_cache(maxsize=4)
def real_crops(label: str, n: int = 40) -> tuple[bytes, ...]:
    """JPEG face crops of one NUAA sequence, as ingest makes them."""
    pipe = FacePipeline()
    out = []
    for path in nuaa_sequence(SEQUENCES[label])[:n]:
        frame = cv2.imread(str(path))
        for face in pipe.analyze(frame)[:1]:
            jpeg = crop_jpeg(frame, face.landmarks, CropSettings())
            assert jpeg is not None
            out.append(jpeg)
    return tuple(out)


def crop_message(jpeg: bytes, camera: str, track: str, frame: int, label: str | None = None) -> FaceCrop:
    return FaceCrop(camera, track, frame, 1000.0 + frame / 15, 1000.0 + frame / 15, (10, 10, 100, 100), jpeg,
                    list(CropSettings().views), label)


@lru_cache(maxsize=4)
def real_eye_samples(label: str, camera: str = "cam", track: str = "cam:1:1") -> tuple[EyeSample, ...]:
    """EyeSamples of one NUAA sequence at 15 fps, windows built as ingest builds them."""
    pipe = FacePipeline()
    history = EyeHistory()
    out = []
    for i, path in enumerate(nuaa_sequence(SEQUENCES[label])):
        faces = pipe.analyze(cv2.imread(str(path)))
        if not faces:
            continue
        f = faces[0]
        ts = i / 15
        history.add(ts, f.left, f.right)
        window = history.window()
        out.append(EyeSample(camera, track, i, 1000.0 + ts, 1000.0 + ts, f.box, f.left, f.right,
                             history.open_level, window, history.rate_hz if window else None, label))
    return tuple(out)
