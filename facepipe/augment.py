"""Batch augmentation on the training device: flips that swap left/right classes, small similarity
jitter (the aligner is not perfect), colour jitter. Images and heatmaps are resampled bilinearly,
labels with nearest neighbour; pixels that come from outside the crop become ignore (255).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    rotate: float = 10.0  # degrees, uniform +-
    scale: float = 0.1  # relative, uniform +-
    shift: float = 0.05  # fraction of the side, uniform +-
    color: float = 0.2  # brightness/contrast jitter


def augment(x: torch.Tensor, y: torch.Tensor | None, flip_perm: torch.Tensor, cfg: AugmentConfig,
            generator: torch.Generator | None = None, soft: torch.Tensor | None = None,
            part: tuple[int, int] | None = None):
    """x: (N,C,H,W) float (normalised RGB [+ heatmap]), y: (N,H,W) long or None, soft: (N,K,H,W) class
    probabilities or None (teacher outputs for distillation; they follow the same flip, with left/right
    channels swapped, and the same warp). Returns (x, y) or (x, y, soft) when soft is given.
    part = (first row, global batch size) when x is one rank's rows of a global batch: the random draws
    are made for the whole global batch and this rank's rows taken, so N ranks augment every face as one
    process would and their generators stay in step."""
    if y is None:
        y = torch.zeros(x.shape[0], x.shape[2], x.shape[3], dtype=torch.long, device=x.device)
    n = x.shape[0]
    dev = x.device

    def rand(*shape):
        if part is None:
            return torch.rand(*shape, generator=generator).to(dev)
        return torch.rand(part[1], *shape[1:], generator=generator)[part[0]:part[0] + shape[0]].to(dev)

    if cfg.flip:
        f = rand(n) < 0.5
        if f.any():
            x = torch.where(f[:, None, None, None], x.flip(-1), x)
            yf = flip_perm.to(dev)[y.flip(-1)]
            y = torch.where(f[:, None, None], yf, y)
            if soft is not None:
                k = soft.shape[1]
                sf = soft.flip(-1)[:, flip_perm[:k].to(dev)]
                soft = torch.where(f[:, None, None, None], sf, soft)
    if cfg.rotate or cfg.scale or cfg.shift:
        a = (rand(n) * 2 - 1) * math.radians(cfg.rotate)
        s = 1 + (rand(n) * 2 - 1) * cfg.scale
        t = (rand(n, 2) * 2 - 1) * cfg.shift * 2  # affine_grid works in [-1, 1]
        theta = torch.zeros(n, 2, 3, device=dev)
        theta[:, 0, 0] = torch.cos(a) / s
        theta[:, 0, 1] = -torch.sin(a) / s
        theta[:, 1, 0] = torch.sin(a) / s
        theta[:, 1, 1] = torch.cos(a) / s
        theta[:, :, 2] = t
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # Shift labels by +1 so that zero padding marks "outside" and can become ignore.
        yy = F.grid_sample((y.float() + 1)[:, None], grid, mode="nearest", padding_mode="zeros",
                           align_corners=False)[:, 0].long() - 1
        y = torch.where(yy < 0, torch.full_like(yy, 255), yy)
        if soft is not None:
            # Outside the crop the teacher said nothing: zero probabilities there mark invalid pixels.
            soft = F.grid_sample(soft, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.color:
        b = (rand(n, 1, 1, 1) * 2 - 1) * cfg.color * 2  # normalised units (~0.45 per 0.1 of range)
        c = 1 + (rand(n, 1, 1, 1) * 2 - 1) * cfg.color
        rgb = x[:, :3]
        mean = rgb.mean(dim=(1, 2, 3), keepdim=True)
        x = torch.cat([(rgb - mean) * c + mean + b, x[:, 3:]], 1)
    return (x, y) if soft is None else (x, y, soft)
