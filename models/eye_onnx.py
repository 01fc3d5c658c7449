"""The eye model as one ONNX graph: raw input row in, spoof probability out.

Workers feed the ``(N, 21)`` rows of ``liveness.eyes.eye_input`` and read ``spoof`` ``(N,)``;
the feature stage (``liveness.eyes.window_features``, or the raw 20 ratios for the original's
KNN) is written here in ONNX ops, so there is no numpy step to keep in sync at run time.
The classifier stage is converted by skl2onnx. No pickles: the ONNX file is the model.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.pipeline import Pipeline

from liveness.defaults import EYE_WINDOW
from liveness.eyes import _EPS, CLOSED_FRACTION, FEATURES, INPUT_SIZE

OPSET = 15
"""Highest opset asked of skl2onnx; the feature ops need 13 at least (ReduceMin with an axes attribute: < 18)."""
INPUT = "input"
OUTPUT = "spoof"


def _const(name: str, value: object, dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def feature_graph(raw: bool) -> onnx.ModelProto:
    """``input (N, 21)`` -> ``features``: the 20 raw ratios, or ``FEATURES`` as in window_features."""
    n = helper.make_node
    inits = [_const("c_0", [0], np.int64), _const("c_20", [2 * EYE_WINDOW], np.int64),
             _const("c_21", [INPUT_SIZE], np.int64), _const("c_1", [1], np.int64)]
    if raw:
        nodes = [n("Slice", [INPUT, "c_0", "c_20", "c_1"], ["features"])]
        width = 2 * EYE_WINDOW
    else:
        lo, hi = (EYE_WINDOW - 1) // 2, EYE_WINDOW // 2
        inits += [
            _const("eps", _EPS), _const("half", 0.5), _const("closed_at", CLOSED_FRACTION),
            _const("shape_w", [-1, EYE_WINDOW, 2], np.int64), _const("shape_o", [-1, 1, 1], np.int64),
            _const("k", [EYE_WINDOW], np.int64), _const("axis1", [1], np.int64), _const("axis2", [2], np.int64),
            _const("i_lo", [lo], np.int64), _const("i_lo1", [lo + 1], np.int64),
            _const("i_hi", [hi], np.int64), _const("i_hi1", [hi + 1], np.int64),
            _const("i_last", [EYE_WINDOW - 1], np.int64), _const("i_end", [EYE_WINDOW], np.int64),
        ]
        nodes = [
            n("Slice", [INPUT, "c_0", "c_20", "c_1"], ["w_flat"]),
            n("Slice", [INPUT, "c_20", "c_21", "c_1"], ["open_raw"]),
            n("Max", ["open_raw", "eps"], ["open"]),
            n("Reshape", ["w_flat", "shape_w"], ["w3"]),
            n("Reshape", ["open", "shape_o"], ["open3"]),
            n("Div", ["w3", "open3"], ["wn"]),
            n("Split", ["wn"], ["l3", "r3"], axis=2),
            n("Squeeze", ["l3", "axis2"], ["l"]),
            n("Squeeze", ["r3", "axis2"], ["r"]),
            n("Add", ["l", "r"], ["lr_sum"]),
            n("Mul", ["lr_sum", "half"], ["mean"]),
            n("TopK", ["mean", "k"], ["sorted", "sorted_idx"], axis=1, largest=0, sorted=1),
            n("Slice", ["sorted", "c_0", "c_1", "axis1"], ["f_min"]),
            n("Slice", ["sorted", "i_last", "i_end", "axis1"], ["f_max"]),
            n("Slice", ["sorted", "i_lo", "i_lo1", "axis1"], ["s_lo"]),
            n("Slice", ["sorted", "i_hi", "i_hi1", "axis1"], ["s_hi"]),
            n("Add", ["s_lo", "s_hi"], ["s_mid"]),
            n("Mul", ["s_mid", "half"], ["f_median"]),
            n("Sub", ["f_median", "f_min"], ["f_depth"]),
            n("Less", ["mean", "closed_at"], ["is_closed"]),
            n("Cast", ["is_closed"], ["closed_f"], to=TensorProto.FLOAT),
            n("ReduceSum", ["closed_f", "axis1"], ["f_closed"], keepdims=1),
            n("Max", ["l", "r"], ["wider"]),
            n("ReduceMin", ["wider"], ["f_min_both"], axes=[1], keepdims=1),
            n("ReduceMean", ["l"], ["l_mean"], axes=[1], keepdims=1),
            n("ReduceMean", ["r"], ["r_mean"], axes=[1], keepdims=1),
            n("Sub", ["l", "l_mean"], ["dl"]),
            n("Sub", ["r", "r_mean"], ["dr"]),
            n("Mul", ["dl", "dr"], ["dldr"]),
            n("Mul", ["dl", "dl"], ["dl2"]),
            n("Mul", ["dr", "dr"], ["dr2"]),
            n("ReduceSum", ["dldr", "axis1"], ["cov"], keepdims=1),
            n("ReduceSum", ["dl2", "axis1"], ["vl"], keepdims=1),
            n("ReduceSum", ["dr2", "axis1"], ["vr"], keepdims=1),
            n("Mul", ["vl", "vr"], ["vlvr"]),
            n("Add", ["vlvr", "eps"], ["vlvr_eps"]),
            n("Sqrt", ["vlvr_eps"], ["norm"]),
            n("Div", ["cov", "norm"], ["f_corr"]),
            n("Concat", ["f_min", "f_median", "f_max", "f_depth", "f_closed", "f_min_both", "f_corr"],
              ["features"], axis=1),
        ]
        width = len(FEATURES)
    graph = helper.make_graph(
        nodes, "eye_features",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [None, INPUT_SIZE])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, width])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def to_onnx(pipeline: Pipeline, raw: bool, metadata: dict[str, str]) -> onnx.ModelProto:
    """Feature stage + classifier -> one model with input ``input`` and output ``spoof`` (N,)."""
    width = 2 * EYE_WINDOW if raw else len(FEATURES)
    clf = convert_sklearn(pipeline, initial_types=[("features", FloatTensorType([None, width]))],
                          options={id(pipeline.steps[-1][1]): {"zipmap": False}}, target_opset=OPSET)
    pre = feature_graph(raw)
    pre.ir_version = clf.ir_version
    del pre.opset_import[:]
    pre.opset_import.extend(clf.opset_import)  # skl2onnx may pick a lower opset; the feature ops exist since 13
    merged = onnx.compose.merge_models(pre, clf, io_map=[("features", "features")], prefix2="clf_")
    g = merged.graph
    g.initializer.extend([_const("spoof_col", [1], np.int64), _const("spoof_col1", [2], np.int64),
                          _const("col_axis", [1], np.int64), _const("flat", [-1], np.int64)])
    g.node.extend([
        helper.make_node("Slice", ["clf_probabilities", "spoof_col", "spoof_col1", "col_axis"], ["spoof_2d"]),
        helper.make_node("Reshape", ["spoof_2d", "flat"], [OUTPUT]),
    ])
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [None]))
    for k, v in metadata.items():
        merged.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(merged)
    return merged
