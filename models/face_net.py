"""The face liveness network: input normalisation inside the model, then a small ResNet.

The model takes what the worker has after decoding a crop: BGR, float, 0..255, NCHW,
112x112. Everything else (per-crop normalisation, the high-frequency channel) is part of
the graph, so the worker cannot get it subtly wrong and the ONNX file is the whole model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

INPUT_SIZE = 112
"""Side of the square crop the model takes (the ingest crop size)."""


def input_format(crop_scale: float) -> str:
    """The ``liveness.input`` metadata: what the worker must feed, and which crop it expects."""
    return (f"crops: float32 [N, 3, {INPUT_SIZE}, {INPUT_SIZE}], BGR channel order, values 0..255 (no scaling, "
            f"no mean/std: the model normalises each crop itself); crop = liveness.face.align_crop with "
            f"size {INPUT_SIZE}, scale {crop_scale:g}, JPEG round trip allowed. Output spoof: float32 [N], "
            f"P(attack); attack when >= liveness.threshold")


@dataclass(frozen=True)
class NetConfig:
    """What the experiments vary; saved in the ONNX metadata so a model says how it was built."""

    norm: str = "crop"
    """'crop': per-crop, per-channel standardisation; 'grey': the same on grey only (no colour);
    'fixed': x / 255 - 0.5 (lighting kept)."""
    dog: bool = True
    """Add a grey difference-of-Gaussians channel, standardised per crop (print texture)."""
    widths: tuple[int, ...] = (16, 24, 32, 64)
    dropout: float = 0.2
    mixstyle: float = 0.0
    """Training only: probability of mixing feature statistics between crops after the stem and
    the first block (``MixStyle``); 0 = off. The exported graph is the same either way."""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _gaussian(sigma: float, size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps."""
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _blur_matrix(sigma: float, size: int, n: int = INPUT_SIZE) -> torch.Tensor:
    """(n, n) banded matrix B with ``B @ x`` = x convolved with the Gaussian along one axis,
    zero padded (as ``conv2d(padding=size // 2)``).

    Why a matrix: a one-channel 9x9 convolution is the worst case for onnxruntime's convolution
    kernels (it took a third of the model's time); ``B @ grey @ B.T`` is the same separable blur
    as two small matrix products, several times faster.
    """
    g, r = _gaussian(sigma, size), size // 2
    b = torch.zeros(n, n)
    for i in range(n):
        lo, hi = max(0, i - r), min(n, i + r + 1)
        b[i, lo:hi] = g[lo - i + r:hi - i + r]
    return b


class Preprocess(nn.Module):
    """BGR 0..255 -> standardised channels (+ a DoG channel); fixed weights, no training."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("grey_w", torch.tensor([0.114, 0.587, 0.299]).view(1, 3, 1, 1))
        self.register_buffer("blur1", _blur_matrix(0.8, 5), persistent=False)
        self.register_buffer("blur2", _blur_matrix(2.0, 9), persistent=False)

    @property
    def channels(self) -> int:
        return (1 if self.cfg.norm == "grey" else 3) + int(self.cfg.dog)

    @staticmethod
    def _standardise(x: torch.Tensor, eps: float) -> torch.Tensor:
        """Zero mean, unit spread per crop and channel: removes brightness, contrast, colour cast."""
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = ((x - mean) ** 2).mean(dim=(2, 3), keepdim=True).sqrt()
        return (x - mean) / (std + eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = (x * self.grey_w).sum(dim=1, keepdim=True)
        if self.cfg.norm == "crop":
            out = self._standardise(x, 4.0)
        elif self.cfg.norm == "grey":
            out = self._standardise(grey, 4.0)
        else:
            out = x / 255.0 - 0.5
        if not self.cfg.dog:
            return out
        dog = self.blur1 @ grey @ self.blur1.T - self.blur2 @ grey @ self.blur2.T
        return torch.cat([out, self._standardise(dog, 0.5)], dim=1)


class Block(nn.Module):
    """ResNet basic block; stride 2 halves the map and the shortcut follows with a 1x1 conv."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(y)) + self.short(x))


class MixStyle(nn.Module):
    """Training only: give each crop another crop's channel statistics, partly (Zhou et al., ICLR 2021).

    Why: a room's light and a camera's colour live in the early feature maps' means and spreads;
    mixing them between crops leaves the rest of the map (texture, edges) to decide.
    """

    def __init__(self, p: float, alpha: float = 0.1) -> None:
        super().__init__()
        self.p, self.alpha = p, alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0 or float(torch.rand(1)) > self.p:
            return x
        n = x.shape[0]
        mu = x.mean(dim=(2, 3), keepdim=True).detach()
        sig = (x.var(dim=(2, 3), keepdim=True) + 1e-6).sqrt().detach()
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((n, 1, 1, 1))
        perm = torch.randperm(n)
        return (x - mu) / sig * (lam * sig + (1 - lam) * sig[perm]) + lam * mu + (1 - lam) * mu[perm]


class FaceNet(nn.Module):
    """Spoof logit of a 112x112 crop: a stride-2 stem, then one block per width, each stride 2."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pre = Preprocess(cfg)
        w = cfg.widths
        self.stem = nn.Sequential(nn.Conv2d(self.pre.channels, w[0], 3, 2, 1, bias=False), nn.BatchNorm2d(w[0]),
                                  nn.ReLU())
        self.blocks = nn.Sequential(*[Block(a, b, 2) for a, b in zip(w[:-1], w[1:])])
        self.mix = MixStyle(cfg.mixstyle)
        self.drop = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(w[-1], 1)

    def forward_with_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logit and the second block's feature map (14x14, for the auxiliary Fourier target)."""
        return self.from_channels(self.pre(x))

    def from_channels(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward_with_map`` on channels already made by ``pre`` (an ensemble makes them once)."""
        y = self.mix(self.stem(p))
        mid = y
        for i, block in enumerate(self.blocks):
            y = block(y)
            if i == 0:
                y = self.mix(y)
            if i == 1:
                mid = y
        return self.fc(self.drop(y.mean(dim=(2, 3)))).squeeze(1), mid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_map(x)[0]


class FourierHead(nn.Module):
    """Training only: predicts a crop's log Fourier spectrum from a feature map (as MiniFASNet does).

    Why: a reproduction's spectrum differs from a live face's whatever the light (print dots,
    lost high frequencies), so asking the trunk to carry the spectrum steers it to texture.
    """

    def __init__(self, channels: int, side: int = 14) -> None:
        super().__init__()
        self.side = side
        self.net = nn.Sequential(nn.Conv2d(channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.Conv2d(16, 1, 1))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.net(feature_map).squeeze(1)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """fftshift(log(1 + |FFT(grey)|)), min-max scaled per crop, pooled to ``side`` x ``side``."""
        grey = x.mean(dim=1)
        spec = torch.log1p(torch.fft.fftshift(torch.fft.fft2(grey).abs(), dim=(-2, -1)))
        lo = spec.amin(dim=(1, 2), keepdim=True)
        hi = spec.amax(dim=(1, 2), keepdim=True)
        spec = (spec - lo) / (hi - lo + 1e-6)
        return F.adaptive_avg_pool2d(spec[:, None], self.side).squeeze(1)


class Ensemble(nn.Module):
    """Mean logit of several networks trained with different seeds.

    Why: across sessions the seed-to-seed swing is as large as any modelling choice.
    """

    def __init__(self, nets: list[FaceNet]) -> None:
        super().__init__()
        if any(net.cfg != nets[0].cfg for net in nets):
            raise ValueError("an ensemble's networks must share one NetConfig (they share its preprocessing)")
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The preprocessing has fixed weights, the same in every network: computed once, not once
        # per network (it was a fifth of the exported model's time on one thread).
        p = self.nets[0].pre(x)
        return torch.stack([net.from_channels(p)[0] for net in self.nets]).mean(dim=0)


class SpoofProbability(nn.Module):
    """What is exported: the network followed by a sigmoid, output (N,) in [0, 1]."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


def to_input(crops: np.ndarray) -> np.ndarray:
    """(N, 112, 112, 3) uint8 BGR crops -> the model input; the worker does exactly this."""
    return np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)
