"""MiniFASNetV2 and MiniFASNetV1SE: the pretrained pair of the face model, as torch modules.

Minivision's two networks (Apache-2.0, ``../shared/pretrained/minifasnet``) were trained on
many thousands of people; their tensors load here strictly, so a file with a missing, extra
or misshapen tensor is refused with its name. Both are the same MobileFaceNet-like stack of
inverted-residual blocks on an 80x80 BGR crop (0..255, no normalisation); they differ in the
widths of the expansions and in the squeeze-excitation of V1SE at the end of each stage.
Output: 3 logits, class 1 = live face, classes 0 and 2 = two kinds of attack.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from liveness.errors import ModelError


@dataclass(frozen=True)
class Widths:
    """The expansion width of each inverted-residual block, stage by stage."""

    stage3: tuple[int, ...]
    stage4: tuple[int, ...]
    stage5: tuple[int, ...]
    se: bool


V2 = Widths(stage3=(13, 13, 13, 13), stage4=(231, 52, 26, 77, 26, 26), stage5=(26, 26), se=False)
V1SE = Widths(stage3=(13, 26, 13, 52), stage4=(154, 52, 26, 52, 26, 26), stage5=(26, 26), se=True)


class PReLU(nn.PReLU):
    """PReLU written as ``max(x, a * x)``, exact for slopes up to 1 (the pretrained ones lie in
    -0.36..0.59), else as ``relu(x) - a * relu(-x)``: the same values and tensor, but onnxruntime's
    own PRelu cost 45 % of the model's time, and the max form, two elementwise passes instead of
    five, cost 4-9 % less a crop than the relu form (2026-12-03, batches of 1 and 8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.weight.view(1, -1, 1, 1)
        if bool((self.weight <= 1).all()):
            return torch.maximum(x, a * x)
        return torch.relu(x) - a * torch.relu(-x)


class ConvBn(nn.Sequential):
    """Convolution without bias, batch norm, and a PReLU unless ``act`` is False."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        layers: dict[str, nn.Module] = {
            "conv": nn.Conv2d(cin, cout, k, stride, 1 if k == 3 else 0, groups=groups, bias=False),
            "bn": nn.BatchNorm2d(cout)}
        if act:
            layers["prelu"] = PReLU(cout)
        super().__init__(OrderedDict(layers))


class SqueezeExcite(nn.Module):
    """Channel gates from the block's mean activation (V1SE, last block of each stage)."""

    def __init__(self, c: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // reduction, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c // reduction)
        self.fc2 = nn.Conv2d(c // reduction, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x.mean(dim=(2, 3), keepdim=True)
        g = self.bn2(self.fc2(torch.relu(self.bn1(self.fc1(g)))))
        return x * torch.sigmoid(g)


class InvertedResidual(nn.Module):
    """1x1 expansion, 3x3 depthwise, 1x1 projection; a shortcut when the shape is kept."""

    def __init__(self, cin: int, hidden: int, cout: int, stride: int = 1, residual: bool = False,
                 se: bool = False) -> None:
        super().__init__()
        self.conv = ConvBn(cin, hidden)
        self.conv_dw = ConvBn(hidden, hidden, 3, stride, groups=hidden)
        self.project = ConvBn(hidden, cout, act=False)
        self.residual = residual
        self.se_module = SqueezeExcite(cout) if se else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        if self.se_module is not None:
            y = self.se_module(y)
        return x + y if self.residual else y


class Stage(nn.Module):
    """Residual blocks at one width; with SE, the last block carries the gates."""

    def __init__(self, c: int, hidden: tuple[int, ...], se: bool) -> None:
        super().__init__()
        self.model = nn.Sequential(*[InvertedResidual(c, h, c, residual=True, se=se and i == len(hidden) - 1)
                                     for i, h in enumerate(hidden)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MiniFASNet(nn.Module):
    """One network of the pair: (N, 3, 80, 80) BGR 0..255 -> (N, 3) logits."""

    def __init__(self, widths: Widths) -> None:
        super().__init__()
        self.conv1 = ConvBn(3, 32, 3, 2)
        self.conv2_dw = ConvBn(32, 32, 3, 1, groups=32)
        self.conv_23 = InvertedResidual(32, 103, 64, stride=2)
        self.conv_3 = Stage(64, widths.stage3, widths.se)
        self.conv_34 = InvertedResidual(64, 231, 128, stride=2)
        self.conv_4 = Stage(128, widths.stage4, widths.se)
        self.conv_45 = InvertedResidual(128, 308, 128, stride=2)
        self.conv_5 = Stage(128, widths.stage5, widths.se)
        self.conv_6_sep = ConvBn(128, 512)
        self.conv_6_dw = ConvBn(512, 512, 5, groups=512, act=False)
        self.linear = nn.Linear(512, 128, bias=False)
        self.bn = nn.BatchNorm1d(128)
        self.drop = nn.Dropout(0.2)
        self.prob = nn.Linear(128, 3, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 128-d embedding before the classifier."""
        for stage in (self.conv1, self.conv2_dw, self.conv_23, self.conv_3, self.conv_34, self.conv_4,
                      self.conv_45, self.conv_5, self.conv_6_sep, self.conv_6_dw):
            x = stage(x)
        return self.bn(self.linear(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prob(self.drop(self.features(x)))


def load(path: str | Path, widths: Widths) -> MiniFASNet:
    """A network with the tensors of a ``.safetensors`` file, checked name by name and shape by shape."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise ModelError(f"{path}: not a readable safetensors file: {e}") from None
    net = MiniFASNet(widths)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing:
        raise ModelError(f"{path}: tensor {missing[0]!r} missing ({len(missing)} in all)")
    if extra:
        raise ModelError(f"{path}: unexpected tensor {extra[0]!r} ({len(extra)} in all)")
    for name, want in expected.items():
        if tensors[name].shape != want.shape:
            raise ModelError(f"{path}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                             f"expected {tuple(want.shape)}")
    net.load_state_dict(tensors, strict=True)
    return net.eval()
