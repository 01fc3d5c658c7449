"""OnnxModel: the checks at load time and scoring, on small ONNX graphs built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from liveness.errors import ModelError
from liveness.onnx import MAX_MODEL_BYTES
from liveness.workers.runners import SLICE, OnnxModel

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def mean_model(path: Path, sample_shape: tuple[int, ...] = (80, 160, 3), outputs: int = 1,
               threshold: str | None = "0.25", views: str | None = None) -> Path:
    """A model whose score is the mean of its input / 255, with our metadata."""
    x = helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["batch", *sample_shape])
    axes = helper.make_tensor("axes", TensorProto.INT64, [len(sample_shape)], list(range(1, len(sample_shape) + 1)))
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [1 / 255.0])
    nodes = [helper.make_node("ReduceMean", ["crops", "axes"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "scale"], ["spoof"])]
    outs = [helper.make_tensor_value_info("spoof", TensorProto.FLOAT, ["batch"])]
    if outputs == 2:
        nodes.append(helper.make_node("Identity", ["m"], ["extra"]))
        outs.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["batch"]))
    graph = helper.make_graph(nodes, "mean", [x], outs, initializer=[axes, scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    meta = {"liveness.name": "mean", "liveness.version": "7"}
    if threshold is not None:
        meta["liveness.threshold"] = threshold
    if views is not None:
        meta["liveness.views"] = views
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def test_loads_metadata_and_scores_both_layouts(tmp_path: Path) -> None:
    model = OnnxModel(mean_model(tmp_path / "m.onnx", (3, 112, 112), views="[2.7, 4.0]"), threads=1,
                      input_shape=(3, 112, 112))
    assert (model.name, model.version, model.threshold, model.views) == ("mean", "7", 0.25, (2.7, 4.0))
    nhwc = np.zeros((4, 112, 112, 3), np.uint8)
    nhwc[1] = 255
    scores = model.predict(nhwc)
    assert scores.shape == (4,) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, [0, 1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(model.predict(nhwc.transpose(0, 3, 1, 2)), scores)
    assert model.predict(np.zeros((0, 3, 112, 112))).shape == (0,)


def test_a_batch_larger_than_a_slice_scores_each_sample_in_order(tmp_path: Path) -> None:
    model = OnnxModel(mean_model(tmp_path / "m.onnx"), max_batch=3 * SLICE)
    batch = np.random.default_rng(0).integers(0, 256, (2 * SLICE + 3, 80, 160, 3)).astype(np.uint8)
    scores = model.predict(batch)
    assert scores.shape == (len(batch),)
    np.testing.assert_allclose(scores, batch.reshape(len(batch), -1).mean(axis=1) / 255.0, rtol=1e-5)


def test_rejects_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        OnnxModel(tmp_path / "absent.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage, not a protobuf" * 10)
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        OnnxModel(corrupt)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(mean_model(tmp_path / "ok.onnx").read_bytes()[:60])
    with pytest.raises(ModelError):
        OnnxModel(truncated)


def test_rejects_a_huge_file(tmp_path: Path) -> None:
    huge = tmp_path / "huge.onnx"
    with open(huge, "wb") as f:
        f.truncate(MAX_MODEL_BYTES + 1)  # sparse: no real disk use
    with pytest.raises(ModelError, match="larger than"):
        OnnxModel(huge)


def test_rejects_wrong_input_shape_and_outputs(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="input shape"):
        OnnxModel(mean_model(tmp_path / "grey.onnx", (1, 64, 64)))
    with pytest.raises(ModelError, match="input shape"):  # the face model of the previous contract
        OnnxModel(mean_model(tmp_path / "old.onnx", (3, 112, 112)))
    with pytest.raises(ModelError, match="input shape"):
        OnnxModel(mean_model(tmp_path / "flat.onnx", (112,)))
    with pytest.raises(ModelError, match="1 input and 1 output"):
        OnnxModel(mean_model(tmp_path / "two.onnx", outputs=2))
    other = OnnxModel(mean_model(tmp_path / "eye.onnx", (10, 2)), input_shape=(10, 2))
    assert other.predict(np.ones((3, 10, 2))).shape == (3,)


def test_rejects_missing_threshold_and_bad_batches(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="liveness.threshold"):
        OnnxModel(mean_model(tmp_path / "nothr.onnx", threshold=None))
    with pytest.raises(ModelError, match="not a number"):
        OnnxModel(mean_model(tmp_path / "badthr.onnx", threshold="high"))
    with pytest.raises(ModelError, match="liveness.views"):
        OnnxModel(mean_model(tmp_path / "badviews.onnx", views="[2.7, big]"))
    model = OnnxModel(mean_model(tmp_path / "m.onnx"))
    with pytest.raises(ModelError, match="batch shape"):
        model.predict(np.zeros((2, 64, 64, 3), np.uint8))
