"""One path from frame to decision: the same frames through ingest -> Redis -> workers -> fusion
and through offline analysis (``evaluate --model fused``, clip jobs) send the same crops and eye
windows and reach the same verdicts in the same order.

The live run is made deterministic by its frame source: it hands ingest the next frame only once
the workers and fusion have acknowledged everything before it, and ingest asks fusion for its
verdicts before every frame. So a track decided by frame N sends fewer crops from frame N + 1 on,
live as offline; with real Redis, real worker and fusion processes and the shipped models.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import redis
import yaml

from liveness.config import CameraDefaults, FusionSettings, load_settings
from liveness.contract import Decision, EyeSample, EyeScore, FaceCrop, FaceScore, Keys
from liveness.defaults import artifact_path, eye_model_path
from liveness.eyes import INPUT_SIZE
from liveness.evidence import load_policy
from liveness.ingest.capture import Frame
from liveness.ingest.service import IngestService
from liveness.streams import settled
from liveness.workers.offline import OfflineAnalyzer, TrackResult
from liveness.workers.runners import FACE_INPUT_SHAPE, OnnxModel
from tests.conftest import REDIS_URL, nuaa_sequence, wait_for
from tests.fixtures import Services, wait_state

CLIPS = ("ClientRaw/0001_00_00_01", "ImposterRaw/0001_00_00_01")
"""A live face, then a printed photo of another person: 225 frames, played at 10 fps."""

FPS = 10.0


def frames() -> list[np.ndarray]:
    return [cv2.imread(str(p)) for clip in CLIPS for p in nuaa_sequence(clip)]


class LockstepSource:
    """A camera that hands over frame N + 1 only once the pipeline has digested frame N."""

    def __init__(self, images: list[np.ndarray], r: redis.Redis, keys: Keys) -> None:
        self.images = images
        self.r = r
        self.keys = keys
        self.index = 0
        self.overwritten = 0

    def digested(self) -> bool:
        return all(not self.r.exists(self.keys.stream(kind)) or settled(self.r, self.keys.stream(kind))
                   for kind in (FaceCrop, EyeSample, FaceScore, EyeScore))

    def get(self, timeout_s: float) -> Frame | None:
        if self.index >= len(self.images):
            return None
        wait_for(self.digested, timeout_s=60, every_s=0.005)
        frame = Frame(self.index, self.index / FPS, self.images[self.index])
        self.index += 1
        return frame

    @property
    def failed(self) -> bool:
        return self.index >= len(self.images)

    def ready(self) -> bool:
        return False  # every frame's messages go out before the next frame is asked for

    def close(self) -> None:
        return None


def live_run(r: redis.Redis, prefix: str, tmp_path: Path, images: list[np.ndarray],
             eyes: bool) -> list[dict[str, list]]:  # type: ignore[type-arg]
    """Per live track, in order of appearance: crop frames, face scores, eye scores, decisions."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({  # fusion decides with the shipped policy, as offline does
        "prefix": prefix, "redis": {"url": REDIS_URL}, "metrics": {"port": 0, "host": "127.0.0.1"},
        "cameras": [{"id": "cam", "source": "unused.avi"}], "ingest": {"eyes": eyes},
    }))
    keys = Keys(prefix)
    svc = Services(config, {})
    try:
        svc.start_scoring()
        wait_state(r, keys, "fusion", "face", "eye")
        settings = load_settings(str(config))
        ingest = IngestService(settings, settings.camera("cam"))
        assert ingest.prepare()
        ingest.lag_check_s = 0.0  # ask fusion before every frame: the source has waited for it
        source = LockstepSource(images, r, keys)
        try:
            ingest.reader.read_frames(source, True, ingest)
        finally:
            ingest.beacon.stop()
        wait_for(source.digested, timeout_s=60)
    finally:
        svc.stop_all()

    def read(kind: type) -> list:  # type: ignore[type-arg]
        return [kind.from_fields(f) for _, f in r.xrange(keys.stream(kind))]

    crops, faces, eyes = read(FaceCrop), read(FaceScore), read(EyeScore)
    decisions = read(Decision)
    order = sorted({c.track for c in crops}, key=lambda t: min(c.frame for c in crops if c.track == t))
    return [{"crops": [c.frame for c in crops if c.track == t],
             "faces": sorted((s.frame, s.score) for s in faces if s.track == t),
             "eyes": sorted((s.frame, s.score) for s in eyes if s.track == t),
             "decisions": [(round(d.last_capture_ts * FPS), d.verdict) for d in decisions if d.track == t]}
            for t in order]


def offline_run(images: list[np.ndarray], eyes: bool) -> list[dict[str, list]]:  # type: ignore[type-arg]
    policy = load_policy(FusionSettings())
    eye = OnnxModel(eye_model_path(), input_shape=(INPUT_SIZE,)) if eyes else None  # opt-in: the checkout's
    analyzer = OfflineAnalyzer(OnnxModel(artifact_path("face.onnx"), input_shape=FACE_INPUT_SHAPE), eye, policy,
                               CameraDefaults(eyes=eyes))
    tracks: list[TrackResult] = analyzer.analyze((i / FPS, image) for i, image in enumerate(images))
    out = []
    for t in sorted(tracks, key=lambda t: t.first_ts):
        sent = t.replay(policy)
        out.append({"crops": [e.frame for e in sent if e.kind == "face"],
                    "faces": [(e.frame, e.score) for e in sent if e.kind == "face"],
                    "eyes": [(e.frame, e.score) for e in sent if e.kind == "eye"],
                    "decisions": list(t.decisions)})
    return out


@pytest.mark.parametrize("eyes", [False, True], ids=["eyes-off", "eyes-on"])
def test_live_and_offline_send_the_same_samples_and_reach_the_same_verdicts(
        r: redis.Redis, prefix: str, tmp_path: Path, eyes: bool) -> None:
    """With the eye path off (the default: no landmarks) and on (every frame)."""
    images = frames()
    offline = offline_run(images, eyes)
    live = live_run(r, prefix, tmp_path, images, eyes)
    assert any(t["eyes"] for t in offline) == eyes, "eye windows exactly where the eye path is on"

    assert [len(t["crops"]) for t in live] == [len(t["crops"]) for t in offline]
    for got, want in zip(live, offline):
        assert got["crops"] == want["crops"], "the frames a track sends a crop from"
        assert [f for f, _ in got["faces"]] == want["crops"]
        assert [s for _, s in got["faces"]] == pytest.approx([s for _, s in want["faces"]], abs=1e-4), \
            "the same crops score the same"
        assert [f for f, _ in got["eyes"]] == [f for f, _ in want["eyes"]], "the frames a track sends a window from"
        assert [s for _, s in got["eyes"]] == pytest.approx([s for _, s in want["eyes"]], abs=1e-4)
        assert got["decisions"] == want["decisions"], "the same verdicts, reached at the same frames, in order"
    decided = [t for t in offline if t["decisions"]]
    assert decided, "the photo is decided, so its track sends fewer crops from then on"
    first = decided[0]["decisions"][0][0]
    after = [f for f in decided[0]["crops"] if f > first]
    assert after and all(b - a >= 8 for a, b in zip(after, after[1:])), after
