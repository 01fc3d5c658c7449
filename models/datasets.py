"""Labelled datasets as sequences of frames: the NUAA layout and a plain folders layout.

A sequence is one video (or one still) with one label. Both readers yield the same
``Sequence`` objects, whose frames go through the same face pipeline as ingest.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import cv2
import numpy as np

from liveness.defaults import SEQUENCE_FPS
from liveness.errors import LivenessError
from liveness.images import oversized
from liveness.video import read_video

log = logging.getLogger(__name__)

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_EXT = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
LABEL_DIRS = {"live": "live", "real": "live", "spoof": "spoof", "fake": "spoof", "attack": "spoof"}

Label = Literal["live", "spoof"]

NUAA_LIST_SPLITS = ("train", "test")
"""NUAA splits given by the database's own list files (its official protocol)."""


class DatasetError(LivenessError):
    """A dataset root is missing, empty or laid out wrongly."""


def natural_key(path: Path) -> list[object]:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


@dataclass
class Sequence:
    """One labelled video: a list of image files in order, or one video file."""

    name: str
    label: Label
    frames: list[Path] = field(default_factory=list)
    video: Path | None = None
    fps: float = SEQUENCE_FPS
    subject: str | None = None
    session: str | None = None

    def __len__(self) -> int:
        return len(self.frames) if self.video is None else -1

    def read(self, max_frames: int | None = None) -> Iterator[tuple[float, np.ndarray]]:
        """Yield ``(seconds since start, BGR frame)``; unreadable frames, and those over the pixel cap
        (``liveness.images``, counted), are skipped and logged."""
        if self.video is None:
            for i, path in enumerate(self.frames[:max_frames]):
                why = oversized(path, "dataset")
                if why is not None:
                    log.warning("dataset: %s: %s, skipped", path, why)
                    continue
                img = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if img is None:
                    log.warning("dataset: cannot decode %s, skipped", path)
                    continue
                yield i / self.fps, img
            return
        yield from read_video(self.video, max_frames)


@dataclass
class Dataset:
    """Sequences plus what was skipped while reading the index."""

    sequences: list[Sequence]
    skipped: int = 0

    def counts(self) -> dict[str, int]:
        out = {"live": 0, "spoof": 0}
        for s in self.sequences:
            out[s.label] += 1
        return out


def _read_list(path: Path) -> list[str]:
    """Entries of a NUAA list file: CRLF endings and backslashes allowed."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return [line.strip().replace("\\", "/") for line in text.splitlines() if line.strip()]


def nuaa(root: str | Path, split: str = "train") -> Dataset:
    """NUAA Photo Imposter Database (raw): one sequence per (subject, glasses, pos, session).

    ``split``: ``train`` or ``test`` (the database's own lists, ``client_<split>_raw.txt`` and
    ``imposter_<split>_raw.txt``: the official protocol), ``all`` (every file found), or
    ``session-NN`` (one capture session, from every file found).
    """
    root = Path(root)
    layout = {"live": ("ClientRaw", "client"), "spoof": ("ImposterRaw", "imposter")}
    if not all((root / d).is_dir() for d, _ in layout.values()):
        raise DatasetError(f"{root}: not a NUAA root (needs ClientRaw/ and ImposterRaw/)")
    session = None
    if split.startswith("session-"):
        session = split.removeprefix("session-")
    elif split not in NUAA_LIST_SPLITS + ("all",):
        raise DatasetError(f"unknown NUAA split {split!r} (train, test, all, session-01, session-02, ...)")
    groups: dict[tuple[str, str], list[Path]] = defaultdict(list)
    skipped = 0
    for label, (folder, list_prefix) in layout.items():
        if split in NUAA_LIST_SPLITS:
            list_path = root / f"{list_prefix}_{split}_raw.txt"
            if not list_path.is_file():
                raise DatasetError(f"{list_path}: NUAA {split} list file missing")
            paths = []
            for entry in _read_list(list_path):
                path = root / folder / entry
                if path.is_file():
                    paths.append(path)
                else:
                    skipped += 1
        else:
            paths = sorted((root / folder).glob("*/*.jpg"))
        for path in paths:
            parts = path.stem.split("_")
            if len(parts) != 5 or not all(p.isdigit() for p in parts):
                skipped += 1
                continue
            if session is not None and parts[3] != session:
                continue
            groups[(label, "_".join(parts[:4]))].append(path)
    if skipped:
        log.warning("nuaa: %d listed files are missing or misnamed, skipped", skipped)
    sequences = []
    for (label, key), paths in sorted(groups.items()):
        paths.sort(key=lambda p: int(p.stem.split("_")[4]))
        subject, _, _, sess = key.split("_")
        sequences.append(Sequence(f"nuaa-{label}-{key}", label, paths, subject=subject, session=sess))  # type: ignore[arg-type]
    if not sequences:
        raise DatasetError(f"{root}: no frames for split {split!r}")
    return Dataset(sequences, skipped)


def folders(root: str | Path, split: str | None = None) -> Dataset:
    """``ROOT/[split/]live/…`` and ``ROOT/[split/]spoof/…``; each entry an image, a video or a folder of frames.

    Label folders may also be called real/fake/attack. A subject may be given by a
    ``<subject>__`` prefix of the entry name, for cross-subject splits. A root whose every
    subfolder holds label folders is a set of sources (rooms, cameras): each sequence's
    ``session`` is its source, so evaluations report per source.
    """
    root = Path(root)
    if split:
        root = root / split
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    subdirs = [p for p in root.iterdir() if p.is_dir()]
    if subdirs and all(p.name.lower() not in LABEL_DIRS and any((p / d).is_dir() for d in LABEL_DIRS)
                       for p in subdirs):
        parts = [folders(p) for p in sorted(subdirs)]
        for part, source in zip(parts, sorted(subdirs)):
            for seq in part.sequences:
                seq.name, seq.session = f"{source.name}-{seq.name}", source.name
        return Dataset([s for part in parts for s in part.sequences], sum(part.skipped for part in parts))
    sequences: list[Sequence] = []
    unknown = [p.name for p in subdirs if p.name.lower() not in LABEL_DIRS]
    if unknown:
        raise DatasetError(f"{root}: unknown label folder(s) {sorted(unknown)} (expected live/ and spoof/)")
    skipped = 0
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        label: Label = LABEL_DIRS[label_dir.name.lower()]  # type: ignore[assignment]
        for entry in sorted(label_dir.iterdir(), key=natural_key):
            subject = entry.name.split("__")[0] if "__" in entry.name else None
            name = f"{label}-{entry.stem}"
            if entry.is_dir():
                frames = sorted((p for p in entry.iterdir() if p.suffix.lower() in IMAGE_EXT), key=natural_key)
                if frames:
                    sequences.append(Sequence(name, label, frames, subject=subject))
                else:
                    skipped += 1
            elif entry.suffix.lower() in IMAGE_EXT:
                sequences.append(Sequence(name, label, [entry], subject=subject))
            elif entry.suffix.lower() in VIDEO_EXT:
                sequences.append(Sequence(name, label, video=entry, subject=subject))
            else:
                skipped += 1
    if not sequences:
        raise DatasetError(f"{root}: no images, videos or frame folders under live/ or spoof/")
    return Dataset(sequences, skipped)


def load(kind: str, root: str | Path, split: str | None = None) -> Dataset:
    """Open a dataset by kind (``nuaa`` or ``folders``)."""
    if kind == "nuaa":
        return nuaa(root, split or "train")
    if kind == "folders":
        return folders(root, split)
    raise DatasetError(f"unknown dataset kind {kind!r} (nuaa, folders)")
