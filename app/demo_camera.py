"""A demo camera needing no hardware: a printed photo held in a hand, made at run time.

The portrait is scikit-image's ``astronaut.png`` (Eileen Collins, NASA, public domain),
which ships inside the installed scikit-image wheel; nothing is downloaded. The photo is
printed (reduced dynamic range, paper margin, slight colour cast), then moved and
perspective-warped frame by frame like a hand-held print, so the pipeline should call it
``spoof``.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from liveness.errors import LivenessError

SIZE = (640, 480)
"""Width and height of the demo frames."""


def portrait() -> np.ndarray:
    """The bundled public-domain portrait, BGR."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise LivenessError("the demo camera needs scikit-image installed (its bundled astronaut.png)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "astronaut.png"
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise LivenessError(f"cannot read the demo portrait {path}")
    return img


def printed_photo(img: np.ndarray) -> np.ndarray:
    """Head-and-shoulders crop as it looks on paper: duller, warmer, with a white margin."""
    photo: np.ndarray = img[55:235, 145:295].astype(np.float32)
    photo = 35 + photo * 0.78  # paper cannot reproduce deep blacks or bright highlights
    photo[..., 2] *= 1.04
    photo[..., 0] *= 0.95
    photo = cv2.resize(np.clip(photo, 0, 255).astype(np.uint8), (300, 360), interpolation=cv2.INTER_CUBIC)
    return cv2.copyMakeBorder(photo, 12, 12, 12, 12, cv2.BORDER_CONSTANT, value=(236, 238, 240))


def background(rng: np.random.Generator) -> np.ndarray:
    """A plain room: a lit wall with a door frame."""
    w, h = SIZE
    ramp = np.linspace(150, 110, w, dtype=np.float32)[None, :, None]
    wall = np.repeat(np.repeat(ramp, h, axis=0), 3, axis=2) * np.array([0.95, 1.0, 1.05], np.float32)
    wall[:, 40:70] *= 0.7
    wall[60:75, 40:260] *= 0.7
    wall += rng.normal(0, 3, wall.shape).astype(np.float32)
    return np.clip(wall, 0, 255).astype(np.uint8)


def frames(seconds: float = 12.0, fps: float = 15.0, seed: int = 0) -> Iterator[np.ndarray]:
    """Yield the demo frames: the print swaying, tilting and turning in a hand."""
    rng = np.random.default_rng(seed)
    photo = printed_photo(portrait())
    ph, pw = photo.shape[:2]
    room = background(rng)
    src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32)
    for i in range(int(seconds * fps)):
        t = i / fps
        cx = SIZE[0] / 2 + 40 * math.sin(0.7 * t) + 6 * math.sin(5.1 * t)
        cy = SIZE[1] / 2 + 15 * math.sin(0.9 * t + 1) + 4 * math.sin(6.3 * t)
        scale = 0.92 + 0.06 * math.sin(0.4 * t)
        angle = math.radians(6 * math.sin(0.8 * t))
        turn = 0.12 * math.sin(0.5 * t)  # the print turns about its vertical axis: a trapezoid
        hw, hh = pw * scale / 2, ph * scale / 2
        corners = np.array([[-hw * (1 - turn), -hh * (1 + turn)], [hw * (1 + turn), -hh * (1 - turn)],
                            [hw * (1 + turn), hh * (1 - turn)], [-hw * (1 - turn), hh * (1 + turn)]], np.float32)
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], np.float32)
        dst = corners @ rot.T + np.array([cx, cy], np.float32)
        m = cv2.getPerspectiveTransform(src, dst)
        warped = cv2.warpPerspective(photo, m, SIZE, flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        mask = cv2.warpPerspective(np.full((ph, pw), 255, np.uint8), m, SIZE)
        frame = room.copy()
        frame[mask > 0] = warped[mask > 0]
        light = 1.0 + 0.05 * math.sin(1.3 * t)
        frame = np.clip(frame.astype(np.float32) * light + rng.normal(0, 2.5, frame.shape), 0, 255).astype(np.uint8)
        yield cv2.GaussianBlur(frame, (3, 3), 0.6)


def write_clip(dest: Path, seconds: float = 12.0, fps: float = 15.0) -> Path:
    """Write the demo clip (Motion-JPEG AVI, which OpenCV's FFmpeg backend always reads)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(dest), cv2.VideoWriter.fourcc(*"MJPG"), fps, SIZE)
    if not writer.isOpened():
        raise LivenessError(f"cannot write the demo clip {dest}")
    for frame in frames(seconds, fps):
        writer.write(frame)
    writer.release()
    return dest
