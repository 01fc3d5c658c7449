"""The face model: the pretrained MiniFASNet pair and a linear head, exported as one ONNX graph.

Input: a batch of published crops, ``(N, 80, 160, 3)`` BGR 0..255, the 2.7x view then the
4.0x view side by side (``liveness.face.face_views``). Output: ``(N, 1)`` spoof probability.
The pair stays frozen. Its own score is one minus the mean of its two live probabilities (how
its authors use it); a head, where ``liveness train face`` chose one, is a logistic regression on
the two 128-d embeddings, either alone or only able to raise the pair's score (``monotone``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from liveness.models.minifasnet import V1SE, V2, MiniFASNet, load

PRETRAINED = Path(__file__).resolve().parent.parent.parent / "shared" / "pretrained" / "minifasnet"
"""Where the pretrained tensors are read (``../shared`` beside the repository)."""

WEIGHTS = (("minifasnet_v2_scale2.7_80x80.safetensors", V2), ("minifasnet_v1se_scale4.0_80x80.safetensors", V1SE))
"""The pair, in the order of the views (2.7x, then 4.0x)."""

VIEW = 80
"""Side of each view, pixels."""


def pretrained_pair(root: str | Path = PRETRAINED) -> list[MiniFASNet]:
    """The two networks with their authors' tensors, in evaluation mode."""
    return [load(Path(root) / name, widths) for name, widths in WEIGHTS]


class FaceModel(nn.Module):
    """Crops in, spoof probability out: each view through its network, then the pair's own score,
    a head on both embeddings, or the larger of the two (``monotone``: a head that can only make a
    face more of an attack than the pair says, never less)."""

    def __init__(self, nets: list[MiniFASNet], weight: np.ndarray | None = None, bias: float = 0.0,
                 monotone: bool = False) -> None:
        super().__init__()
        if monotone and weight is None:
            raise ValueError("a monotone face model needs a head")
        self.nets = nn.ModuleList(nets)
        self.monotone = monotone
        self.head: nn.Linear | None = None
        if weight is not None:
            self.head = nn.Linear(weight.size, 1)
            with torch.no_grad():
                self.head.weight.copy_(torch.from_numpy(weight.astype(np.float32)).reshape(1, -1))
                self.head.bias.fill_(float(bias))

    def embeddings(self, crops: torch.Tensor) -> torch.Tensor:
        """``(N, 80, 160, 3)`` crops -> ``(N, 256)``: both networks' embeddings."""
        x = crops.permute(0, 3, 1, 2)
        # nn.ModuleList items are typed as Module, whose attributes torch types as Tensor | Module
        return torch.cat([net.features(x[:, :, :, VIEW * i:VIEW * (i + 1)])  # type: ignore[operator]
                          for i, net in enumerate(self.nets)], 1)

    def pair_spoof(self, emb: torch.Tensor) -> torch.Tensor:
        """``(N, 256)`` embeddings -> ``(N, 1)``: one minus the mean of the two networks' live probabilities."""
        live = [torch.softmax(net.prob(emb[:, 128 * i:128 * (i + 1)]), 1)[:, 1:2]  # type: ignore[operator]
                for i, net in enumerate(self.nets)]
        return 1.0 - (live[0] + live[1]) / 2.0

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        emb = self.embeddings(crops)
        if self.head is None:
            return self.pair_spoof(emb)
        head = torch.sigmoid(self.head(emb))
        return torch.maximum(head, self.pair_spoof(emb)) if self.monotone else head


@torch.no_grad()
def embeddings(nets: list[MiniFASNet], crops: np.ndarray, batch: int = 256) -> np.ndarray:
    """Both networks' embeddings of every crop, ``(N, 256)`` float32 (what the head is fitted on)."""
    model = FaceModel(nets).eval()
    out = [model.embeddings(torch.from_numpy(crops[i:i + batch]).float()).numpy() for i in range(0, len(crops), batch)]
    return np.concatenate(out) if out else np.zeros((0, 256), np.float32)


def export_onnx(model: FaceModel, path: str | Path, metadata: dict[str, str], check: np.ndarray) -> float:
    """Write the ONNX graph with a dynamic batch and ``liveness.*`` metadata; returns the largest
    difference from torch on ``check`` crops (the export is refused above 1e-4)."""
    import onnx
    import onnxruntime as ort

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dummy = torch.from_numpy(check[:2]).float()
    torch.onnx.export(model, (dummy,), str(path), input_names=["crops"], output_names=["spoof"],
                      dynamic_axes={"crops": {0: "batch"}, "spoof": {0: "batch"}}, opset_version=17, dynamo=False)
    proto = onnx.load(str(path))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    with torch.no_grad():
        want = model(torch.from_numpy(check).float()).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"crops": check.astype(np.float32)})[0]
    diff = float(np.abs(want - got).max())
    if diff > 1e-4:
        raise RuntimeError(f"{path}: onnxruntime differs from torch by {diff}")
    return diff
