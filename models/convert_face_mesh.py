"""MediaPipe's face mesh networks (``.tflite``, Apache-2.0) rebuilt in torch and exported to ONNX.

``tflite2onnx`` fails on these graphs (an index error in a transpose), and the run time must not
need TensorFlow or mediapipe, so a graph is read with the ``tflite`` flatbuffer package and replayed
op by op in torch (NCHW), TensorFlow's asymmetric SAME padding made explicit. Builtin ops: DEQUANTIZE
(float16 weights), CONV_2D, DEPTHWISE_CONV_2D, PRELU, ADD, MUL, MAX_POOL_2D, PAD, RESHAPE and an
identity STRIDED_SLICE; the attention mesh adds three MediaPipe custom ops (``TfliteGraph``). Any
other op stops the conversion.

Shipped: ``face_landmark_with_attention.tflite`` (the mesh plus refined lips, eyes and irises).
The plain ``face_landmark.tflite`` converts too (its lids close less: ``face_mesh.md``).
The ONNX model takes ``image`` float32 ``[N, 3, 192, 192]``, RGB in [0, 1], and gives
``landmarks`` ``[N, 468, 3]`` (x, y in pixels of the 192 input, z relative; eyes refined)
and ``presence`` ``[N, 1]``, the face-presence logit. Card: ``models/artifacts/face_mesh.md``.

    python -m liveness.models.convert_face_mesh face_landmark_with_attention.tflite models/artifacts/face_mesh.onnx
"""

from __future__ import annotations

import argparse
import functools
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

INPUT_SIZE = 192
POINTS = 468


def _builtin_names() -> dict[int, str]:
    import tflite

    return {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding: the odd pixel goes after, unlike torch's symmetric padding."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class TfliteGraph(torch.nn.Module):
    """The ops of one float TFLite subgraph, run in order; 4-D activations are NCHW.

    Besides the builtin ops, MediaPipe's three custom ops of the attention mesh, rebuilt from
    their reference kernels (``mediapipe/util/tflite/operations``, version 2 of each):
    ``Landmarks2TransformMatrix`` (the rotated box around a subset of mesh points, as a matrix
    from a 16x16 grid to the 48x48 feature map), ``TransformTensorBilinear`` (bilinear sampling
    of the feature map on that grid, zero outside it) and ``TransformLandmarks`` (the refined
    points mapped back with the matrix).
    """

    def __init__(self, path: Path) -> None:
        import tflite
        from flatbuffers import flexbuffers

        super().__init__()
        buf = path.read_bytes()
        model = tflite.Model.GetRootAsModel(buf, 0)
        graph = model.Subgraphs(0)
        names = _builtin_names()
        self._graph_in = int(graph.Inputs(0))
        self._graph_out = [int(graph.Outputs(i)) for i in range(graph.OutputsLength())]
        self.output_names = [graph.Tensors(i).Name().decode() for i in self._graph_out]
        shapes = {i: [int(d) for d in graph.Tensors(i).ShapeAsNumpy()] for i in range(graph.TensorsLength())}
        consts: dict[int, np.ndarray] = {}
        for i in range(graph.TensorsLength()):
            tensor = graph.Tensors(i)
            data = model.Buffers(tensor.Buffer()).DataAsNumpy()
            if isinstance(data, np.ndarray) and data.size:
                dtype = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
                         tflite.TensorType.INT32: np.int32}[tensor.Type()]
                consts[i] = data.view(dtype).reshape(shapes[i])
        self._steps: list[tuple[Callable[..., torch.Tensor], list[int], int]] = []
        self.subsets: dict[int, list[int]] = {}
        """Mesh vertices around which each refinement looks, by the first vertex of its level line."""
        for k in range(graph.OperatorsLength()):
            op = graph.Operators(k)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
            ins = [int(i) for i in op.InputsAsNumpy() if i >= 0]
            out = int(op.Outputs(0))
            if name == "DEQUANTIZE":
                consts[out] = consts[ins[0]].astype(np.float32)
                continue
            if name == "CUSTOM":
                custom = code.CustomCode().decode()
                opts = flexbuffers.Loads(bytes(op.CustomOptionsAsNumpy())) if op.CustomOptionsLength() else {}
                if custom == "Landmarks2TransformMatrix":
                    self.subsets[opts["left_rotation_idx"]] = list(opts["subset_idxs"])
                fn = self._custom(custom, code.Version(), opts)
                self._steps.append((fn, ins, out))
                continue
            runtime = [i for i in ins if i not in consts]
            fn = self._make(name, op, ins, shapes, consts, len(self._steps))
            self._steps.append((fn, runtime if name in ("ADD", "MUL") else ins[:1], out))

    def _param(self, name: str, value: np.ndarray) -> torch.Tensor:
        self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))
        return getattr(self, name)

    def _make(self, name: str, op: Any, ins: list[int], shapes: dict[int, list[int]],
              consts: dict[int, np.ndarray], k: int) -> Callable[..., torch.Tensor]:
        import tflite

        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            opts: Any = tflite.Conv2DOptions() if name == "CONV_2D" else tflite.DepthwiseConv2DOptions()
            table = op.BuiltinOptions()
            opts.Init(table.Bytes, table.Pos)
            assert opts.DilationHFactor() == 1 and opts.DilationWFactor() == 1
            w = consts[ins[1]]
            if name == "CONV_2D":
                weight, groups = w.transpose(0, 3, 1, 2), 1  # OHWI -> OIHW
            else:
                assert opts.DepthMultiplier() in (0, 1), "depth multiplier"
                weight, groups = w.transpose(3, 0, 1, 2), w.shape[3]  # 1HWC -> C1HW
            wt = self._param(f"w{k}", weight)
            bt = self._param(f"b{k}", consts[ins[2]])
            _, h, wd, _ = shapes[ins[0]]
            sh, sw = opts.StrideH(), opts.StrideW()
            pad = self._padding(opts.Padding(), h, wd, weight.shape[2], weight.shape[3], sh, sw)
            act = self._activation(opts.FusedActivationFunction())
            left, right, top, bottom = pad
            if left == right and top == bottom:  # the convolution's own padding: no Pad op, no copy
                return lambda x: act(F.conv2d(x, wt, bt, stride=(sh, sw), padding=(top, left), groups=groups))
            return lambda x: act(F.conv2d(F.pad(x, pad), wt, bt, stride=(sh, sw), groups=groups))
        if name == "PRELU":
            # not as PRelu: onnxruntime's PRelu kernel broadcasts slowly and blocks its blocked-layout
            # convolutions (the model ran 7x slower with it). x + (a - 1) * min(x, 0) is three
            # element-wise ops, a fifth less time for the whole mesh than the two ReLUs it equals
            beta = self._param(f"a{k}", consts[ins[1]].reshape(1, -1, 1, 1) - 1.0)
            return lambda x: x + beta * torch.clamp(x, max=0.0)
        if name in ("ADD", "MUL"):
            opts = tflite.AddOptions() if name == "ADD" else tflite.MulOptions()
            table = op.BuiltinOptions()
            opts.Init(table.Bytes, table.Pos)
            act = self._activation(opts.FusedActivationFunction())
            fixed = [self._param(f"c{k}_{j}", consts[i]) for j, i in enumerate(ins) if i in consts]
            both = fixed[0] if fixed else None
            if name == "ADD":
                return (lambda a: act(a + both)) if both is not None else (lambda a, b: act(a + b))
            return (lambda a: act(a * both)) if both is not None else (lambda a, b: act(a * b))
        if name == "MAX_POOL_2D":
            opts = tflite.Pool2DOptions()
            table = op.BuiltinOptions()
            opts.Init(table.Bytes, table.Pos)
            _, h, wd, _ = shapes[ins[0]]
            fh, fw, sh, sw = opts.FilterHeight(), opts.FilterWidth(), opts.StrideH(), opts.StrideW()
            pad = self._padding(opts.Padding(), h, wd, fh, fw, sh, sw)
            assert pad == (0, 0, 0, 0), "padded max pool"
            return lambda x: F.max_pool2d(x, (fh, fw), (sh, sw))
        if name == "PAD":
            p = consts[ins[1]].astype(int)  # NHWC rows of (before, after)
            nchw = (int(p[2, 0]), int(p[2, 1]), int(p[1, 0]), int(p[1, 1]), int(p[3, 0]), int(p[3, 1]))
            assert p[0].sum() == 0
            return lambda x: F.pad(x, nchw)
        if name == "RESHAPE":
            src, dst = shapes[ins[0]], shapes[int(op.Outputs(0))]
            # only 1x1-pixel activations change rank here, where NHWC and NCHW orders agree
            assert len(src) != 4 or src[1:3] == [1, 1], "reshape of a spatial activation"
            if len(dst) == 4:
                assert dst[1:3] == [1, 1], "reshape to a spatial activation"
                return lambda x: x.reshape(-1, dst[3], 1, 1)
            return lambda x: x.reshape([-1] + dst[1:])
        if name == "STRIDED_SLICE":
            begin, end, strides = (consts[i] for i in ins[1:4])
            assert not begin.any() and (end == shapes[ins[0]]).all() and (strides == 1).all(), "a slice that cuts"
            return lambda x: x
        raise ValueError(f"TFLite op {name} is not supported by this conversion")

    @staticmethod
    def _custom(name: str, version: int, opts: dict[str, Any]) -> Callable[..., torch.Tensor]:
        if name == "Landmarks2TransformMatrix" and version == 2:
            return functools.partial(_landmarks_to_matrix, **opts)
        if name == "TransformTensorBilinear" and version == 2:
            return functools.partial(_sample_bilinear, height=opts["output_height"], width=opts["output_width"])
        if name == "TransformLandmarks" and version == 2:
            return _transform_landmarks
        raise ValueError(f"custom op {name} v{version} is not supported by this conversion")

    @staticmethod
    def _padding(mode: int, h: int, w: int, kh: int, kw: int, sh: int, sw: int) -> tuple[int, int, int, int]:
        import tflite

        if mode == tflite.Padding.VALID:
            return (0, 0, 0, 0)
        top, bottom = _same_pad(h, kh, sh)
        left, right = _same_pad(w, kw, sw)
        return (left, right, top, bottom)

    @staticmethod
    def _activation(code: int) -> Callable[[torch.Tensor], torch.Tensor]:
        import tflite

        if code == tflite.ActivationFunctionType.NONE:
            return lambda x: x
        if code == tflite.ActivationFunctionType.RELU:
            return F.relu
        if code == tflite.ActivationFunctionType.RELU6:
            return lambda x: F.hardtanh(x, 0.0, 6.0)
        raise ValueError(f"fused activation {code} is not supported by this conversion")

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        values: dict[int, torch.Tensor] = {self._graph_in: image}
        for fn, ins, out in self._steps:
            values[out] = fn(*(values[i] for i in ins))
        return [values[i] for i in self._graph_out]


def _landmarks_to_matrix(points: torch.Tensor, left_rotation_idx: int, right_rotation_idx: int,
                         subset_idxs: list[int], output_width: int, output_height: int, scale_x: float,
                         scale_y: float, target_rotation_radians: float) -> torch.Tensor:
    """``[N, 4, 4]``: output grid (x, y, 0, 1) -> input map; the box of ``subset_idxs`` turned so that
    the rotation points lie level, ``scale`` times its size, spread over the output grid."""
    assert target_rotation_radians == 0.0
    d = points[:, right_rotation_idx, :2] - points[:, left_rotation_idx, :2]
    norm = torch.sqrt((d * d).sum(dim=1, keepdim=True))
    cos, sin = d[:, :1] / norm, -d[:, 1:] / norm  # the rotation that levels them: minus their angle
    sub = points[:, subset_idxs, :2]
    rx = cos * sub[..., 0] - sin * sub[..., 1]
    ry = sin * sub[..., 0] + cos * sub[..., 1]
    x0, x1 = rx.min(dim=1, keepdim=True).values, rx.max(dim=1, keepdim=True).values
    y0, y1 = ry.min(dim=1, keepdim=True).values, ry.max(dim=1, keepdim=True).values
    mx, my = (x0 + x1) / 2, (y0 + y1) / 2
    cx, cy = cos * mx + sin * my, -sin * mx + cos * my  # the box centre turned back
    sx, sy = scale_x * (x1 - x0) / output_width, scale_y * (y1 - y0) / output_height
    # shift(c) . rotation(-r) . scale(s) . shift(-out / 2), rows 0 and 1 (rows 2 and 3 are identity)
    a, b, c, e = cos * sx, sin * sy, -sin * sx, cos * sy
    tx = cx - a * (output_width / 2) - b * (output_height / 2)
    ty = cy - c * (output_width / 2) - e * (output_height / 2)
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    rows = [a, b, zero, tx, c, e, zero, ty, zero, zero, one, zero, zero, zero, zero, one]
    return torch.cat(rows, dim=1).reshape(-1, 4, 4)


def _sample_bilinear(features: torch.Tensor, matrix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[N, C, height, width]`` sampled from NCHW ``features`` at ``matrix`` x (pixel centre), zero where
    the sample falls outside the map (the kernel's align-corners correction included)."""
    h, w = features.shape[2], features.shape[3]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=features.dtype), torch.arange(width, dtype=features.dtype),
                            indexing="ij")
    xs, ys = (xs + 0.5).reshape(1, -1), (ys + 0.5).reshape(1, -1)
    tx = matrix[:, 0, :1] * xs + matrix[:, 0, 1:2] * ys + matrix[:, 0, 3:4] - 0.5
    ty = matrix[:, 1, :1] * xs + matrix[:, 1, 1:2] * ys + matrix[:, 1, 3:4] - 0.5
    inside = ((tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)).to(features.dtype)
    grid = torch.stack([tx / (w - 1) * 2 - 1, ty / (h - 1) * 2 - 1], dim=-1).reshape(-1, height, width, 2)
    out = F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out * inside.reshape(-1, 1, height, width)


def _transform_landmarks(points: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``[N, K, 2]`` points mapped by the first two rows of ``matrix`` (z taken as 0)."""
    x, y = points[..., :1], points[..., 1:2]
    return torch.cat([matrix[:, None, 0, :1] * x + matrix[:, None, 0, 1:2] * y + matrix[:, None, 0, 3:4],
                      matrix[:, None, 1, :1] * x + matrix[:, None, 1, 1:2] * y + matrix[:, None, 1, 3:4]], dim=-1)


REFINED = {"output_left_eye": 33, "output_right_eye": 362}
"""The attention mesh's refined outputs kept, by the level-line vertex of their region: each point i
of an output replaces the x, y of mesh vertex ``subsets[...][i]`` (MediaPipe's landmark refinement;
z stays the mesh's). The lips and irises are left out, and their branches with them (a third less
work): the pipeline reads the lids, and the mouth never bounds the face box."""


class FaceMeshNet(torch.nn.Module):
    """A face mesh graph with the outputs the run time reads: ``landmarks`` [N, 468, 3] and ``presence`` [N, 1].

    The attention graph's refined eyes are written over the mesh's own points.
    """

    def __init__(self, graph: TfliteGraph) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = dict(zip(self.graph.output_names, self.graph(image)))
        mesh_name = "output_mesh_identity" if "output_mesh_identity" in outs else "conv2d_21"
        mesh = outs[mesh_name].reshape(-1, POINTS, 3)
        presence = outs["conv_faceflag" if "conv_faceflag" in outs else "conv2d_31"].reshape(-1, 1)
        if "output_left_eye" not in outs:
            return mesh, presence
        xy, z = mesh[..., :2], mesh[..., 2:]
        for name, first in REFINED.items():
            idx = torch.tensor(self.graph.subsets[first])
            xy = xy.index_copy(1, idx, outs[name].reshape(-1, len(idx), 2))
        return torch.cat([xy, z], dim=-1), presence


def convert(tflite_path: Path, onnx_path: Path) -> None:
    model = FaceMeshNet(TfliteGraph(tflite_path)).eval()
    dummy = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
    torch.onnx.export(model, (dummy,), str(onnx_path), input_names=["image"], output_names=["landmarks", "presence"],
                      dynamic_axes={"image": {0: "batch"}, "landmarks": {0: "batch"}, "presence": {0: "batch"}},
                      opset_version=17, dynamo=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tflite", type=Path, help="face_landmark.tflite from the mediapipe 0.10.14 wheel")
    parser.add_argument("onnx", type=Path, help="where to write the ONNX model")
    args = parser.parse_args()
    convert(args.tflite, args.onnx)
    print(f"wrote {args.onnx}")


if __name__ == "__main__":
    main()
