"""The face pipeline on real NUAA frames."""

import cv2
import numpy as np
from liveness.config import CameraDefaults, CropSettings, DetectSettings
from liveness.contract import FaceCrop
from liveness.eyes import EyeHistory
from liveness.face import Face, FacePipeline, crop_jpeg, eye_ratios, view_box
from liveness.sampling import Shot, TrackSampler, TrackState
from liveness.tracking import FaceTracker
from tests.conftest import SHARED, nuaa_sequence


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


def test_detects_landmarks_and_cuts_the_views_of_a_real_face() -> None:
    frame = cv2.imread(str(nuaa_sequence("ClientRaw/0001_00_00_01")[0]))
    pipe = FacePipeline()
    faces = pipe.analyze(frame)
    assert len(faces) == 1
    face = faces[0]
    assert 0.15 < face.left < 0.45 and 0.15 < face.right < 0.45
    views = pipe.crop(frame, face.box)
    assert views.shape == (80, 160, 3)
    # the 4.0x view holds the 2.7x one at its centre, smaller
    inner = cv2.resize(views[:, :80], (54, 54), interpolation=cv2.INTER_AREA).astype(np.float32)
    centre = views[13:67, 80 + 13:80 + 67].astype(np.float32)
    assert np.abs(inner - centre).mean() < np.abs(inner - views[:54, 80:134].astype(np.float32)).mean()


def test_view_box_is_shifted_inside_the_frame_and_shrunk_when_too_large() -> None:
    crop = CropSettings(box_width=1.0, box_height=1.0, box_shift=0.0)
    assert view_box((480, 640), (300, 200, 100, 100), crop, 2.0) == (250, 150, 450, 350)
    x0, y0, x1, y1 = view_box((480, 640), (0, 0, 100, 100), crop, 2.0)  # at the corner: shifted, not padded
    assert (x0, y0) == (0, 0) and (x1, y1) == (200, 200)
    x0, y0, x1, y1 = view_box((480, 640), (200, 100, 200, 200), crop, 4.0)  # 800 px does not fit 480
    assert y0 >= 0 and y1 <= 479 and x0 >= 0 and x1 <= 639 and 470 <= y1 - y0 <= 479


def test_finds_the_faces_a_hog_detector_missed() -> None:
    """A backlit dark-skinned man: dlib's HOG found none of these 150 live frames."""
    frames = sorted((SHARED / "data" / "webcam-sources" / "sudipto" / "live").glob("*.jpg"))[::5]
    assert len(frames) == 30
    pipe = FacePipeline()
    found = sum(bool(pipe.detect(cv2.imread(str(p)))) for p in frames)
    assert found >= 29, f"faces found in {found} of 30 live frames"


def test_no_face_where_there_is_none() -> None:
    frame = cv2.imread(str(nuaa_sequence("ClientRaw/0001_00_00_01")[0]))
    pipe = FacePipeline()
    (x, y, w, h), = pipe.detect(frame)
    blanked = frame.copy()
    cv2.rectangle(blanked, (x - w // 2, y - h // 2), (x + w + w // 2, y + 2 * h), (128, 128, 128), -1)
    rng = np.random.default_rng(0)
    for empty in (blanked, np.full((480, 640, 3), 90, np.uint8), rng.integers(0, 255, (480, 640, 3), dtype=np.uint8),
                  np.tile(np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None], (480, 1, 3))):
        assert pipe.detect(empty) == []


def test_frames_of_odd_sizes_are_detected_or_skipped_never_a_crash() -> None:
    frame = cv2.imread(str(nuaa_sequence("ClientRaw/0001_00_00_01")[0]))
    pipe = FacePipeline()
    portrait = cv2.copyMakeBorder(frame, 240, 240, 0, 0, cv2.BORDER_CONSTANT)  # 640x960
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    huge = cv2.resize(frame, (4000, 3000))
    for image in (portrait, grey, huge):
        faces = pipe.analyze(image)
        assert len(faces) == 1, image.shape
        assert pipe.crop(image, faces[0].box).shape == (80, 160, 3)
    for tiny in (np.zeros((1, 1, 3), np.uint8), np.zeros((8, 5), np.uint8), np.zeros((2, 3000, 3), np.uint8)):
        assert pipe.analyze(tiny) == []


def test_small_faces_are_found_by_a_second_look_on_tiles_once_per_scene() -> None:
    frame = cv2.imread(str(nuaa_sequence("ClientRaw/0001_00_00_01")[0]))
    canvas = np.full((1080, 1920, 3), 100, np.uint8)
    canvas[300:540, 900:1220] = cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA)  # face ~5 % of the width
    assert FacePipeline(DetectSettings(tiles=False)).detect(canvas) == []
    pipe = FacePipeline()
    (box,) = pipe.detect(canvas)
    assert 900 <= box[0] <= 1220 and 300 <= box[1] <= 540 and pipe.second_looks == 1
    empty = np.full((1080, 1920, 3), 140, np.uint8)  # another scene: the light changed
    for _ in range(5):  # an empty, still scene pays for the second look once, not on every round
        assert pipe.detect(empty) == []
    assert pipe.second_looks == 2


def test_ingest_and_offline_cut_the_same_box_and_crop() -> None:
    """The tracker (ingest, clip jobs) and single-frame analysis (training, evaluation) agree.

    A detection round re-anchors a followed face on the detector's box, so on those frames
    both give the same box, the same crop and the same landmarks.
    """
    paths = nuaa_sequence("ClientRaw/0002_01_00_01")[:17]
    tracker = FaceTracker(FacePipeline())
    still = FacePipeline()
    for i, path in enumerate(paths):
        frame = cv2.imread(str(path))
        (track,) = tracker.update(frame, i)
        if i % tracker.pipeline.detect_settings.every_n_frames == 0:
            (face,) = still.analyze(frame)
            assert track.box == face.box and track.face is not None and track.fresh
            assert np.array_equal(track.face.landmarks, face.landmarks)
            assert crop_jpeg(frame, track.box, CropSettings()) == crop_jpeg(frame, face.box, CropSettings())


def test_between_rounds_the_box_follows_a_moving_face() -> None:
    """A face moving 6 pixels a frame right and 3 down: between detection rounds the followed box
    stays within 3 % of the face's width of where the detector puts it on that frame, where a
    box left at the last round would be up to 42 pixels off."""
    still = cv2.imread(str(nuaa_sequence("ClientRaw/0001_00_00_01")[0]))
    tracker = FaceTracker(FacePipeline())
    detector = FacePipeline()
    worst, stale = 0.0, 0.0
    for i in range(24):
        frame = cv2.warpAffine(still, np.float32([[1, 0, 6 * i - 70], [0, 1, 3 * i - 35]]), (640, 480),
                               borderMode=cv2.BORDER_REPLICATE)
        (track,) = tracker.update(frame, i, landmarks=False)
        assert track.face is None and not track.fresh, "no landmarks where none are needed"
        (x, y, w, _), = detector.detect(frame)
        worst = max(worst, abs(track.box[0] - x) / w, abs(track.box[1] - y) / w)
        stale = max(stale, abs(6 * (i % 8)) / w)
    assert worst < 0.03, f"followed box off by {worst:.3f} face widths"
    assert stale > 0.2


class CountingPipeline(FacePipeline):
    """Notes the frame of each landmark run."""

    frame = 0
    landmarked: list[int] = []

    def face(self, image: np.ndarray, box: tuple[int, int, int, int]) -> Face:
        self.landmarked.append(self.frame)
        return super().face(image, box)


def test_landmarks_run_only_where_eye_windows_need_them() -> None:
    """Eye path off (the default): crops are cut from the followed box and the face mesh never
    runs; with it on, it runs on every frame for the eye history, and the same frames send the
    same crops."""
    images = [cv2.imread(str(p)) for p in nuaa_sequence("ClientRaw/0001_00_00_01")[:30]]
    sent: dict[bool, list[tuple[int, bytes]]] = {}
    for eyes in (False, True):
        pipe = CountingPipeline()
        pipe.landmarked = []
        sampler = TrackSampler(CameraDefaults(eyes=eyes), "cam")
        tracker = FaceTracker[TrackState](pipe)
        kinds: set[str] = set()
        sent[eyes] = []
        for i, image in enumerate(images):
            pipe.frame = i
            for track in tracker.update(image, i, sampler.landmarks):
                samples, _ = sampler.sample(track, Shot(i, i / 10, i / 10, image))
                kinds |= {s.kind for s in samples}
                sent[eyes] += [(i, s.message.jpeg) for s in samples if isinstance(s.message, FaceCrop)]
        assert [i for i, _ in sent[eyes]] == list(range(0, 30, 2))
        assert pipe.landmarked == (list(range(30)) if eyes else [])
        assert kinds == ({"face", "eye"} if eyes else {"face"})
    assert sent[False] == sent[True]


def test_eye_ratios_inside_blazeface_boxes_behave_as_before_on_nuaa() -> None:
    """Landmarks run in the box mapped to what dlib's model expects: open eyes stay near 0.3, blinks dip."""
    pipe = FacePipeline()
    ratios = [f.left for p in nuaa_sequence("ClientRaw/0001_00_00_01")[:60] for f in pipe.analyze(cv2.imread(str(p)))]
    assert len(ratios) == 60
    assert 0.2 < float(np.median(ratios)) < 0.4


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
            assert t.face is not None and t.fresh
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


def test_no_track_starts_on_a_scene_without_a_person() -> None:
    """A colour wheel seen by a shaking, noisy camera: BlazeFace calls it a face at 0.58-0.6,
    under the score a track needs to start, so no track and nothing to decide. The astronaut's
    face (0.92) in the same conditions starts one."""
    from skimage import data

    rng = np.random.default_rng(0)
    for name, faces in (("colorwheel", 0), ("astronaut", 1)):
        scene = cv2.cvtColor(np.ascontiguousarray(getattr(data, name)()[:, :, :3]), cv2.COLOR_RGB2BGR)
        pipe = FacePipeline()
        assert pipe.detections(scene), f"{name}: the detector sees a face"
        tracker = FaceTracker(pipe)
        h, w = scene.shape[:2]
        ids = set()
        for i in range(40):
            shake = np.float32([[1, 0, rng.integers(-2, 3)], [0, 1, rng.integers(-2, 3)]])
            frame = cv2.warpAffine(scene, shake, (w, h), borderMode=cv2.BORDER_REFLECT)
            frame = np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8)
            ids |= {t.id for t in tracker.update(frame, i)}
        assert len(ids) == faces, f"{name}: {len(ids)} tracks"
