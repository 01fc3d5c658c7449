"""Eye model: real NUAA windows train, export to ONNX and agree with scikit-learn; the seed CSV split leaks nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from liveness.eyes import window_features
from liveness.models.datasets import Dataset, nuaa
from liveness.models.eye_data import eye_tracks
from liveness.models.eye_onnx import INPUT, OUTPUT, feature_graph, to_onnx
from liveness.models.eye_audits import _seed_rows, seed_runs, seed_split
from liveness.models.train_eye import MODELS, build_windows, fit, spoof_scores
from tests.conftest import NUAA, SHARED

SEED_CSV = SHARED / "data" / "seed-eye-ratio"
ARTIFACT = Path(__file__).resolve().parents[2] / "models" / "artifacts" / "eye.onnx"


@pytest.fixture(scope="module")
def tracks() -> list:
    """Two live and two spoof sequences per session (a few seconds of dlib on a cold cache)."""
    data = nuaa(NUAA, "all")
    pick = [s for s in data.sequences if s.subject in ("0001", "0004") and s.name.split("_")[2] in ("00", "01")]
    return eye_tracks(Dataset(pick))


def test_seed_csv_split_keeps_overlapping_rows_together() -> None:
    x, y = _seed_rows(SEED_CSV)
    runs = seed_runs(x)
    assert np.bincount(runs).tolist() == [99, 1, 100]
    for seed in range(5):
        train, test = seed_split(runs, 0.3, seed)
        assert len(test) and len(train) and not set(train) & set(test)
        for i in test:
            same = train[runs[train] == runs[i]]
            assert not len(same) or np.abs(same - i).min() >= 10, "a training row shares a frame with a test row"


@pytest.mark.parametrize("name", ["gbt", "knn", "logreg"])
def test_export_agrees_with_sklearn(tracks: list, name: str, tmp_path: Path) -> None:
    w = build_windows(tracks)
    assert set(np.unique(w.y)) == {0, 1}
    pipe = fit(name, 0, w.x, w.y)
    model = to_onnx(pipe, MODELS[name][0], {"liveness.name": "eye"})
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = np.concatenate([build_windows([t.at_fps(fps) for t in tracks]).x for fps in (5.0, 30.0)] + [w.x])
    got = sess.run([OUTPUT], {INPUT: rows})[0]
    assert got.shape == (len(rows),)
    np.testing.assert_allclose(got, spoof_scores(pipe, name, rows), atol=1e-4)


def test_feature_graph_matches_numpy(tracks: list) -> None:
    rows = np.concatenate([build_windows([t.at_fps(fps) for t in tracks]).x for fps in (5.0, 15.0, 30.0)])
    sess = ort.InferenceSession(feature_graph(raw=False).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(["features"], {INPUT: rows})[0], window_features(rows), rtol=1e-5, atol=1e-5)


def test_committed_artifact_carries_its_contract() -> None:
    sess = ort.InferenceSession(str(ARTIFACT), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    for key in ("liveness.name", "liveness.version", "liveness.threshold", "liveness.input",
                "liveness.sequence_threshold", "liveness.window_rate_hz"):
        assert key in meta
    assert sess.get_inputs()[0].shape[1] == 21
    x = np.tile(np.append(np.full(20, 0.3), 0.3).astype(np.float32), (3, 1))
    x[1, 8:12] = 0.05  # a blink in the middle of the window; rows 0 and 2 are eyes held open, as a print's
    p = sess.run([OUTPUT], {INPUT: x})[0]
    threshold, track_threshold = float(meta["liveness.threshold"]), float(meta["liveness.sequence_threshold"])
    assert p[1] < threshold and p[1] < p[0] / 2 and p[0] == p[2], f"a blink scores live, far below open eyes: {p}"
    # a track whose windows all hold the eyes open, as a print's, is an attack by the model's track rule
    assert p[0] >= track_threshold, f"open eyes {p[0]} under the track threshold {track_threshold}"
