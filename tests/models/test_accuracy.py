"""Regression guard for accuracy: the shipped face model on sources it was not fitted on.

``face.onnx`` (version 6) is the pretrained pair as its authors use it: nothing in it is fitted on
the project's data, and its recipe was chosen leaving each source out (``face.md``). A later model
fitted on the video sources (``../shared/data/video-sources``: phone and webcam videos, screen
replays) must still meet these bounds, but then on data it has seen: leave them out of its fit to
keep this a left-out check.
Every 6th frame of each video goes through the run-time face pipeline and the model,
per frame, at the model's own threshold (ISO/IEC 30107-3, attacks positive).

Measured 2026-12-03 (ACER; AUC): version 5 lestari 0.000, pyimagesearch 0.074, trainingdata 0.244,
tranvanluyt 0.024, zalo 0.357 (AUC 1.000), mean 0.140. Version 6, the pretrained pair as its authors
use it, on the face mesh's landmarks: 0.000, 0.089, 0.308, 0.000, 0.452 (AUC 0.746; 0.853 on dlib's
landmarks), mean 0.170. The bounds leave a sound model room and fail one twice as bad; a model that
outputs a constant has ACER 0.5 and AUC 0.5 on every source.
zalo's replay scores below the threshold on most frames (APCER 0.9) though most live frames score
lower still: its ACER says nothing about a regression, so only its AUC is bounded, and more loosely
(21 frames a class from one live and one replay video). krzysiek has only a live video and
manikantha only a replay.
"""

from __future__ import annotations

import numpy as np
import pytest

from liveness.config import CropSettings
from liveness.defaults import artifact_path
from liveness.face import FacePipeline
from liveness.models.datasets import folders
from liveness.models.evaluate import score_faces
from liveness.models.face_data import FaceCrops, jpeg_roundtrip
from liveness.pad_metrics import pad_report
from liveness.workers.runners import FACE_INPUT_SHAPE, OnnxModel
from tests.conftest import SHARED

VIDEOS = SHARED / "data" / "video-sources"
STRIDE = 6
"""Every 6th frame: 1151 frames, under a minute on this machine; the figures move by 0.01-0.04 with the offset."""

MAX_ACER = {"lestari": 0.05, "pyimagesearch": 0.14, "trainingdata": 0.35, "tranvanluyt": 0.04}
MIN_AUC = {"zalo": 0.7}
"""Every source with both live faces and attacks: 0.8, zalo 0.7."""
MAX_MEAN_ACER = 0.2
"""Over the five sources with both classes."""


@pytest.fixture(scope="module")
def scored() -> tuple[FaceCrops, np.ndarray, float]:
    """Every ``STRIDE``-th frame of every video source, its crop and the shipped model's spoof score."""
    dataset = folders(VIDEOS)
    crop = CropSettings()
    pipe = FacePipeline(crop=crop)
    rows: list[tuple[int, np.ndarray | None]] = []
    for i, seq in enumerate(dataset.sequences):
        for j, (_, frame) in enumerate(seq.read()):
            if j % STRIDE == 0:
                faces = pipe.detect(frame)
                rows.append((i, jpeg_roundtrip(pipe.crop(frame, faces[0]), crop.jpeg_quality) if faces else None))
    empty = np.zeros((crop.size, crop.size * len(crop.views), 3), np.uint8)
    seq_idx = np.array([i for i, _ in rows])
    data = FaceCrops(
        crops=np.stack([c if c is not None else empty for _, c in rows]),
        has_face=np.array([c is not None for _, c in rows]), boxes=np.zeros((len(rows), 4), np.int32),
        labels=np.array([int(dataset.sequences[i].label == "spoof") for i in seq_idx]), sequence=seq_idx,
        names=[s.name for s in dataset.sequences], sessions=np.array([dataset.sequences[i].session for i in seq_idx]),
        subjects=np.array([""] * len(rows)), paths=[""] * len(rows))
    model = OnnxModel(artifact_path("face.onnx"), input_shape=FACE_INPUT_SHAPE)
    return data, score_faces(model, data), model.threshold


def test_faces_are_found_in_the_video_sources(scored: tuple[FaceCrops, np.ndarray, float]) -> None:
    data, _, _ = scored
    assert len(data.labels) > 1000 and set(data.sessions.tolist()) == {
        "krzysiek", "lestari", "manikantha", "pyimagesearch", "trainingdata", "tranvanluyt", "zalo"}
    assert (~data.has_face).mean() < 0.03, "no face found in 0.7 % of frames (measured)"


def test_face_model_acer_per_left_out_source(scored: tuple[FaceCrops, np.ndarray, float]) -> None:
    data, scores, threshold = scored
    figures = {}
    for source in sorted(set(data.sessions.tolist())):
        mask = data.sessions == source
        figures[source] = pad_report(data.labels[mask], scores[mask], threshold)
    two_class = {s: f for s, f in figures.items() if f.n_live and f.n_spoof}
    assert sorted(two_class) == sorted([*MAX_ACER, "zalo"])
    failed = [f"{s}: ACER {two_class[s].acer:.3f} > {bound}" for s, bound in MAX_ACER.items() if two_class[s].acer > bound]
    failed += [f"{s}: AUC {f.auc:.3f} < {MIN_AUC.get(s, 0.8)}" for s, f in two_class.items() if not f.auc >= MIN_AUC.get(s, 0.8)]
    mean = float(np.mean([f.acer for f in two_class.values()]))
    if mean > MAX_MEAN_ACER:
        failed.append(f"mean ACER {mean:.3f} > {MAX_MEAN_ACER}")
    if figures["krzysiek"].bpcer > 0.05:
        failed.append(f"krzysiek (live only): BPCER {figures['krzysiek'].bpcer:.3f} > 0.05")
    if figures["manikantha"].apcer > 0.05:
        failed.append(f"manikantha (a replay only): APCER {figures['manikantha'].apcer:.3f} > 0.05")
    assert not failed, failed
