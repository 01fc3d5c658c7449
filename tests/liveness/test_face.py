"""The face pipeline on real NUAA frames."""

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from liveness.config import CropSettings, DetectSettings
from liveness.eyes import EyeHistory
from liveness.face import FacePipeline, align_crop, eye_ratios
from liveness.tracking import FaceTracker
from tests.conftest import nuaa_sequence


def test_eye_ratio_is_height_over_width() -> None:
    pts = np.zeros((68, 2), np.float32)
    # image-left eye: corners 36 and 39 are 30 px apart; lids 37-41 and 38-40 are 6 and 10 px apart
    pts[36], pts[39] = (0, 0), (30, 0)
    pts[37], pts[41] = (10, -3), (10, 3)
    pts[38], pts[40] = (20, -5), (20, 5)
    pts[42], pts[45] = (50, 0), (70, 0)
    pts[43], pts[47] = (55, -2), (55, 2)
    pts[44], pts[46] = (65, -2), (65, 2)
    left, right = eye_ratios(pts)
    assert abs(left - 8 / 30) < 1e-6 and abs(right - 4 / 20) < 1e-6


def test_detects_landmarks_and_crops_a_real_face() -> None:
    frame = cv2.imread(str(nuaa_sequence("ClientRaw/0001_00_00_01")[0]))
    pipe = FacePipeline()
    faces = pipe.analyze(frame)
    assert len(faces) == 1
    face = faces[0]
    assert 0.15 < face.left < 0.45 and 0.15 < face.right < 0.45
    crop = align_crop(frame, face.landmarks, CropSettings(size=96, scale=2.0))
    assert crop.shape == (96, 96, 3)
    # aligned: the eyes of the crop lie on one row, in its upper half
    faces_in_crop = pipe.analyze(cv2.resize(crop, (384, 384)))
    if faces_in_crop:
        pts = faces_in_crop[0].landmarks
        left_eye, right_eye = pts[36:42].mean(0), pts[42:48].mean(0)
        assert abs(left_eye[1] - right_eye[1]) < 12


def test_auto_scale_finds_the_faces_of_a_small_frame_that_a_fixed_half_misses() -> None:
    frame = cv2.imread(str(nuaa_sequence("ClientRaw/0001_00_00_01")[0]))
    auto, half = FacePipeline(), FacePipeline(DetectSettings(scale=0.5))
    # a 640x480 frame with a large face: the first look (320 px wide) is the fixed half's own
    assert auto.detect(auto.grey(frame)) == half.detect(half.grey(frame))
    # the same scene from a 320x240 camera: the face is about 90 px wide, under the half's 150 px
    small = cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA)
    assert half.detect(half.grey(small)) == []
    (box,) = auto.detect(auto.grey(small))
    assert 60 <= box[2] <= 120 and 0 <= box[0] and box[0] + box[2] <= 320


def test_detect_scale_is_auto_or_a_factor() -> None:
    auto = DetectSettings()
    assert auto.scale == "auto"
    assert auto.scales_for(320) == (1.0, 2.0) and auto.scales_for(640) == (0.5, 1.0)
    assert auto.scales_for(960) == (0.5, 640 / 960)
    assert auto.scales_for(1280) == (0.5,) and auto.scales_for(1920) == (0.5,)  # never coarser than before
    assert DetectSettings(scale=0.5).scales_for(1280) == (0.5,)
    for bad in ("big", 1.5):
        with pytest.raises(ValidationError, match="scale"):
            DetectSettings(scale=bad)


def test_one_face_keeps_one_track_and_eyes_move() -> None:
    pipe = FacePipeline()
    tracker = FaceTracker(pipe)
    ids: set[str] = set()
    history = EyeHistory()
    ratios = []
    for i, path in enumerate(nuaa_sequence("ClientRaw/0001_00_00_01")[:60]):
        tracks = tracker.update(cv2.imread(str(path)), i)
        for t in tracks:
            ids.add(t.id)
            history.add(i / 15, t.face.left, t.face.right)
            ratios.append(t.face.left)
    assert len(ids) == 1
    assert len(ratios) >= 55
    assert np.std(ratios) > 0.005
    window = history.window()
    assert window is not None and len(window) == 10


def test_a_cut_ends_the_lost_track_instead_of_following_the_background() -> None:
    """Two people in turn, the second elsewhere in the frame: one track each, never both at once."""
    tracker = FaceTracker(FacePipeline())
    first = [cv2.imread(str(p)) for p in nuaa_sequence("ClientRaw/0001_00_00_01")[:30]]
    shift = np.float32([[1, 0, -200], [0, 1, 0]])  # NUAA faces sit mid-frame: move the second one left
    second = [cv2.warpAffine(cv2.imread(str(p)), shift, (640, 480), borderMode=cv2.BORDER_REPLICATE)
              for p in nuaa_sequence("ClientRaw/0005_00_00_01")[:30]]
    per_frame = []
    ids: list[str] = []
    for i, image in enumerate(first + second):
        tracks = tracker.update(image, i)
        per_frame.append(len(tracks))
        ids += [t.id for t in tracks if t.id not in ids]
    assert max(per_frame) == 1, f"the first person's track outlived the cut: tracks per frame {per_frame}"
    assert len(ids) == 2
    assert sum(1 for n in per_frame[30:] if n == 0) <= 8, "the second person is found by the next detection round"
