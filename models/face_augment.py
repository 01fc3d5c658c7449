"""Training-time augmentation of face crops: geometry, lighting, and synthetic attacks.

Everything works on a float batch ``(N, 3, H, W)`` of BGR values in 0..255, before the
model's own normalisation, because that is where real lighting changes act. Randomness
comes from one ``torch.Generator`` so a seed reproduces a run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """What the experiments switch on and off."""

    photometric: bool = True
    """Brightness, contrast, gamma, colour cast, light gradient, noise, blur."""
    synthetic: float = 0.0
    """Fraction of live crops in a batch turned into synthetic print/screen attacks."""
    erase: float = 0.0
    """Probability of blanking a random rectangle, so no single region (the room) decides."""
    fourier: float = 0.0
    """Weight of the auxiliary Fourier-spectrum loss (``face_net.FourierHead``); 0 = off."""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _u(g: torch.Generator, n: int, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand((n, *shape), generator=g)


def _logu(g: torch.Generator, n: int, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return torch.exp(_u(g, n, math.log(lo), math.log(hi), *shape))


def geometric(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Flip, small zoom, shift and rotation: the aligner's jitter, not new poses."""
    n = x.shape[0]
    angle = _u(g, n, -0.12, 0.12)
    zoom = _u(g, n, 0.9, 1.1)
    flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, _u(g, n, -0.08, 0.08)], 1),
                         torch.stack([sin * flip, cos, _u(g, n, -0.08, 0.08)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def photometric(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Lighting the model must not rely on: dim/bright rooms, colour temperature, webcam noise."""
    n, _, h, w = x.shape
    y = x / 255.0
    y = y.clamp(0, 1) ** _logu(g, n, 0.5, 2.0, 1, 1, 1)
    y = y * _logu(g, n, 0.35, 1.6, 1, 1, 1) * _logu(g, n, 0.8, 1.25, 3, 1, 1)
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = mean + (y - mean) * _logu(g, n, 0.6, 1.5, 1, 1, 1)
    # Light from one side: a linear ramp across the crop.
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    a = _u(g, n, 0, 2 * math.pi, 1, 1)
    ramp = torch.cos(a) * xx + torch.sin(a) * yy
    y = y * (1 + _u(g, n, 0, 0.4, 1, 1) * ramp)[:, None]
    blur = torch.rand(n, generator=g) < 0.25
    if blur.any():
        y[blur] = F.avg_pool2d(y[blur], 3, 1, 1, count_include_pad=False)
    y = y + torch.randn(y.shape, generator=g) * _u(g, n, 0, 0.03, 1, 1, 1)
    return (y * 255.0).clamp(0, 255)


def _halftone(y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Print: a rotated dot screen, lost dynamic range and saturation."""
    n, _, h, w = y.shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    a, period = _u(g, n, 0, math.pi / 2, 1, 1), _u(g, n, 2.2, 4.0, 1, 1)
    u = (torch.cos(a) * xx + torch.sin(a) * yy) * 2 * math.pi / period
    v = (-torch.sin(a) * xx + torch.cos(a) * yy) * 2 * math.pi / period
    dots = 1 - _u(g, n, 0.05, 0.2, 1, 1) * (0.5 + 0.5 * torch.cos(u) * torch.cos(v))
    grey = y.mean(dim=1, keepdim=True)
    y = grey + (y - grey) * _u(g, n, 0.4, 0.9, 1, 1, 1)
    return (_u(g, n, 0.05, 0.2, 1, 1, 1) + y * _u(g, n, 0.6, 0.85, 1, 1, 1)) * dots[:, None]


def _screen(y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Screen: a pixel grid, moire bands, display gamma and a glare spot."""
    n, _, h, w = y.shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    period = _u(g, n, 2.0, 3.5, 1, 1)
    cells = (torch.sin(xx * math.pi / period) ** 2) * (torch.sin(yy * math.pi / period) ** 2)
    grid = 1 - _u(g, n, 0.05, 0.2, 1, 1) * cells
    a, f = _u(g, n, 0, math.pi, 1, 1), _u(g, n, 0.05, 0.3, 1, 1)
    moire = _u(g, n, 0.03, 0.1, 1, 1) * torch.sin((torch.cos(a) * xx + torch.sin(a) * yy) * f * 2 * math.pi)
    y = y.clamp(0, 1) ** _logu(g, n, 0.6, 1.6, 1, 1, 1)
    cx, cy, r = _u(g, n, 0, w, 1, 1), _u(g, n, 0, h, 1, 1), _u(g, n, 0.1 * w, 0.4 * w, 1, 1)
    glare = _u(g, n, 0, 0.5, 1, 1) * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r**2))
    return (y * grid[:, None] + moire[:, None] + glare[:, None])


def synthetic_attacks(x: torch.Tensor, labels: torch.Tensor, fraction: float, g: torch.Generator
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn ``fraction`` of the live crops into print or screen attacks (label 1).

    Teaches the texture of a reproduction, which does not change with the room's light.
    """
    live = torch.nonzero((labels == 0) & (torch.rand(len(labels), generator=g) < fraction)).flatten()
    if not len(live):
        return x, labels
    x, labels = x.clone(), labels.clone()
    y = x[live] / 255.0
    kind = torch.rand(len(live), generator=g) < 0.5
    out = torch.empty_like(y)
    if kind.any():
        out[kind] = _halftone(y[kind], g)
    if (~kind).any():
        out[~kind] = _screen(y[~kind], g)
    x[live] = (out * 255.0).clamp(0, 255)
    labels[live] = 1
    return x, labels


def random_erase(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    """Fill a random rectangle (10-40% of the side each way) with noise in ``p`` of the crops."""
    n, c, h, w = x.shape
    x = x.clone()
    hit = torch.rand(n, generator=g) < p
    sizes = (_u(g, n, 0.1, 0.4, 2) * torch.tensor([h, w])).long()
    corners = (torch.rand((n, 2), generator=g) * (torch.tensor([h, w]) - sizes)).long()
    for i in torch.nonzero(hit).flatten().tolist():
        (y0, x0), (dy, dx) = corners[i].tolist(), sizes[i].tolist()
        x[i, :, y0:y0 + dy, x0:x0 + dx] = torch.rand((c, dy, dx), generator=g) * 255.0
    return x


def augment(x: torch.Tensor, labels: torch.Tensor, cfg: AugmentConfig, g: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole training augmentation; synthetic attacks first so they get lit like real ones."""
    x = geometric(x, g)
    if cfg.synthetic > 0:
        x, labels = synthetic_attacks(x, labels, cfg.synthetic, g)
    if cfg.photometric:
        x = photometric(x, g)
    if cfg.erase > 0:
        x = random_erase(x, cfg.erase, g)
    return x, labels
