"""Face crops of a labelled dataset, made by the shared face pipeline and cached as .npz.

Detection is the slow part, so the face boxes are cached with the crops; a crop of another
size or scale is then re-cut from the cached boxes in seconds.
Crops go through the same JPEG round trip as on the stream, so training sees what the
worker sees. The cache holds biometric data: it lives under the gitignored ``.cache/``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from tqdm import tqdm

from liveness.config import CropSettings, DetectSettings
from liveness.face import FacePipeline, face_views
from liveness.models.datasets import Dataset, load

log = logging.getLogger(__name__)

CACHE_DIR = Path(__file__).resolve().parent.parent / ".cache" / "face"
"""Gitignored cache of extracted crops and face boxes."""

CACHE_FORMAT = 2
"""Part of every cache key: a cache of another format (1 held landmarks, not boxes) is made anew."""


@dataclass
class FaceCrops:
    """Every frame of a dataset: its crop (zeros when no face) and where it came from."""

    crops: np.ndarray
    """(N, S, S * views, 3) uint8 BGR, the views side by side, after a JPEG round trip."""
    has_face: np.ndarray
    """(N,) bool: False where the detector found no face (the frame counts as rejected)."""
    boxes: np.ndarray
    """(N, 4) int32 full-frame box ``(x, y, w, h)`` of the largest face (zeros when none)."""
    labels: np.ndarray
    """(N,) int64: 1 = spoof (attack), 0 = live."""
    sequence: np.ndarray
    """(N,) int64 index into ``names``."""
    names: list[str]
    sessions: np.ndarray
    """(N,) str: capture session, '' when unknown."""
    subjects: np.ndarray
    paths: list[str]

    def subset(self, mask: np.ndarray) -> "FaceCrops":
        idx = np.flatnonzero(mask)
        return FaceCrops(self.crops[idx], self.has_face[idx], self.boxes[idx], self.labels[idx],
                         self.sequence[idx], self.names, self.sessions[idx], self.subjects[idx],
                         [self.paths[i] for i in idx])

    def paired_subjects(self) -> np.ndarray:
        """True for crops whose person is here both live and as an attack (or is unknown).

        Why: a person seen only as a photo (NUAA's 0008 in session 01) can teach a network
        that this face means "attack", and it would then reject that person's live face.
        """
        live = set(self.subjects[self.labels == 0].tolist())
        spoof = set(self.subjects[self.labels == 1].tolist())
        return np.array([s == "" or (s in live and s in spoof) for s in self.subjects.tolist()], dtype=bool)


def crop_shape(crop: CropSettings) -> tuple[int, int, int]:
    """Shape of one published crop: the views side by side."""
    return crop.size, crop.size * len(crop.views), 3


def jpeg_roundtrip(crop: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode as ingest and the worker do, so JPEG artefacts match run time."""
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else crop  # type: ignore[return-value]  # decodes what it encoded


def _frames(dataset: Dataset, stride: int, video_rate: float | None = None) -> Iterator[tuple[int, str, np.ndarray | None]]:
    """``(sequence index, source, BGR frame or None)`` of every ``stride``-th frame, counted across the
    sequences' image files (a folder of single images is many one-frame sequences), within each video;
    with ``video_rate``, a video's frames are taken at that many per second instead (neighbouring
    frames of a continuous video are near-duplicates)."""
    k = 0
    for i, seq in enumerate(dataset.sequences):
        if seq.video is None:
            for path in seq.frames:
                if k % stride == 0:
                    yield i, str(path), _read(path)
                k += 1
        else:
            slot = -1
            for j, (t, img) in enumerate(seq.read()):
                now = int(t * video_rate) if video_rate else j // stride
                if now > slot:
                    slot = now
                    yield i, f"{seq.video}#{j}", img


def extract(dataset: Dataset, crop: CropSettings, limit: int | None = None,
            video_rate: float | None = None) -> FaceCrops:
    """Run the face pipeline on every frame and cut the crop of the largest face.

    ``limit`` keeps an even spread of frames over all sequences (so a smoke run still has
    both labels and every session), at most ``limit`` of them; ``video_rate`` samples videos
    at that many frames per second.
    """
    known = sum(len(s.frames) for s in dataset.sequences if s.video is None)
    stride = max(1, -(-known // limit)) if limit else 1
    pipe = FacePipeline(crop=crop)
    paths: list[str] = []
    crops, has_face, boxes, seq_idx = [], [], [], []
    for i, source, img in tqdm(_frames(dataset, stride, video_rate), desc="faces", unit="frame", total=known // stride or None):
        if limit is not None and len(paths) >= limit:
            break
        faces = pipe.detect(img) if img is not None else []
        if faces:
            crops.append(jpeg_roundtrip(pipe.crop(img, faces[0]), crop.jpeg_quality))
            boxes.append(faces[0])
        else:
            crops.append(np.zeros(crop_shape(crop), np.uint8))
            boxes.append((0, 0, 0, 0))
        has_face.append(bool(faces))
        seq_idx.append(i)
        paths.append(source)
    seqs = dataset.sequences
    return FaceCrops(
        crops=np.stack(crops) if crops else np.zeros((0, *crop_shape(crop)), np.uint8),
        has_face=np.array(has_face, bool), boxes=np.array(boxes, np.int32).reshape(-1, 4),
        labels=np.array([1 if seqs[i].label == "spoof" else 0 for i in seq_idx], np.int64),
        sequence=np.array(seq_idx, np.int64), names=[q.name for q in seqs],
        sessions=np.array([seqs[i].session or "" for i in seq_idx]),
        subjects=np.array([seqs[i].subject or "" for i in seq_idx]),
        paths=paths,
    )


def _read(path: Path) -> np.ndarray | None:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        log.warning("face crops: cannot decode %s, counted as no face", path)
    return img


def recrop(data: FaceCrops, crop: CropSettings) -> FaceCrops:
    """Re-cut every crop at another size or scale from the cached boxes (no detection).

    Only for image sequences: video frames are not addressable by path.
    """
    crops = np.zeros((len(data.paths), *crop_shape(crop)), np.uint8)
    for k in np.flatnonzero(data.has_face):
        img = _read(Path(data.paths[k]))
        if img is not None:
            x, y, w, h = (int(v) for v in data.boxes[k])
            crops[k] = jpeg_roundtrip(face_views(img, (x, y, w, h), crop), crop.jpeg_quality)
    return FaceCrops(crops, data.has_face, data.boxes, data.labels, data.sequence, data.names,
                     data.sessions, data.subjects, data.paths)


def _cache_path(kind: str, root: str | Path, split: str | None, crop: CropSettings, limit: int | None,
                video_rate: float | None = None) -> Path:
    key = f"{CACHE_FORMAT}|{kind}|{Path(root).resolve()}|{split}|{crop.model_dump_json()}|{limit}|{DetectSettings().model_dump_json()}"
    if video_rate:
        key += f"|{video_rate}"
    return CACHE_DIR / f"face_crops_{kind}_{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"


def save(data: FaceCrops, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, crops=data.crops, has_face=data.has_face, boxes=data.boxes, labels=data.labels,
             sequence=data.sequence, names=np.array(data.names), sessions=data.sessions,
             subjects=data.subjects, paths=np.array(data.paths))
    tmp.replace(path)


def read(path: Path) -> FaceCrops:
    with np.load(path, allow_pickle=False) as z:
        return FaceCrops(z["crops"], z["has_face"], z["boxes"], z["labels"], z["sequence"],
                         z["names"].tolist(), z["sessions"], z["subjects"], z["paths"].tolist())


def face_crops(kind: str, root: str | Path, split: str | None, crop: CropSettings | None = None,
               limit: int | None = None, cache: bool = True, video_rate: float | None = None) -> FaceCrops:
    """Crops of a dataset, from the cache when the same dataset and crop were extracted before."""
    crop = crop or CropSettings()
    path = _cache_path(kind, root, split, crop, limit, video_rate)
    if cache and path.is_file():
        log.info("face crops: cached %s", path)
        return read(path)
    base = _cache_path(kind, root, split, CropSettings(), limit, video_rate)
    cached = read(base) if cache and base.is_file() else None
    if cached is not None and not any("#" in p for p in cached.paths):
        data = recrop(cached, crop)
    else:
        data = extract(load(kind, root, split), crop, limit, video_rate)
    if cache:
        save(data, path)
    return data
