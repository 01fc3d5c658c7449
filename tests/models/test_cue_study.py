"""The study of cues across a track: what it measures on a real video, and how it judges a cue left out."""

from __future__ import annotations

import math

from liveness.config import CameraDefaults
from liveness.defaults import artifact_path
from liveness.evidence import Policy
from liveness.eyes import INPUT_SIZE
from liveness.models.cue_study import CUES, left_out, measure, study
from liveness.models.datasets import folders
from liveness.workers.offline import OfflineAnalyzer
from liveness.workers.runners import FACE_INPUT_SHAPE, OnnxModel
from tests.conftest import SHARED

VIDEOS = SHARED / "data" / "video-sources"


def test_every_cue_is_measured_on_a_real_video() -> None:
    analyzer = OfflineAnalyzer(OnnxModel(str(artifact_path("face.onnx")), input_shape=FACE_INPUT_SHAPE),
                               OnnxModel(str(artifact_path("eye.onnx")), input_shape=(INPUT_SIZE,)), Policy(),
                               CameraDefaults(eyes=True))
    live = [s for s in folders(VIDEOS, "lestari").sequences if s.label == "live"]
    (row,) = measure(live, analyzer, "lestari")
    assert row["source"] == "lestari" and row["label"] == "live"
    cues = row["cues"]
    assert set(cues) == set(CUES)
    assert all(math.isfinite(v) for v in cues.values()), cues
    assert cues["face"] < 0, "the face model calls this live person live"
    assert 0 <= cues["motion_residual"] < 0.5, "a face moves less than half its width a frame"


def _rows(values: list[float], labels: list[str], sources: list[str]) -> list[dict]:
    return [{"name": f"s{i}", "source": s, "label": y, "cues": {**{k: 0.0 for k in CUES}, "edges": v}}
            for i, (v, y, s) in enumerate(zip(values, labels, sources))]


def test_a_cue_is_judged_on_sources_it_was_not_chosen_on() -> None:
    sources = ["a", "a", "b", "b", "c", "c"]
    labels = ["live", "spoof"] * 3
    # edges separate live from spoof in every source: left out, every source is decided right
    y, score, spoof = left_out(_rows([0, 5, 1, 6, 0, 4], labels, sources), ["edges"])
    assert (spoof == y.astype(bool)).all() and score[y == 1].min() > score[y == 0].max()
    # the direction flips in source c: chosen on a and b, both of c's are decided wrong
    rows = _rows([0, 5, 1, 6, 6, 0], labels, sources)
    y, _, spoof = left_out(rows, ["edges"])
    assert list(spoof[4:]) == [True, False]
    figures = study(rows)["edges"]["all"]
    assert {"s4", "s5"} <= set(figures["errors"]) and figures["acer"] >= 1 / 3
    assert 0 <= figures["auc"] < 1
