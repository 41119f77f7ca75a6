"""A grayscale branch: a second network for faces with next to no colour, chosen per face.

One network of the default student's width reaches the same accuracy on grayscale faces whether it is
trained on a mix or on grayscale alone (docs/results.md, "A grayscale branch"): its gray gap is its
width's, not a colour/gray trade. A wider network trained on grayscale faces closes it, and since it
runs only on grayscale faces, colour photos keep the narrow network's speed and outputs exactly.

The choice is made on the aligned crop the network is given, so eval, pseudolabel and parse choose the
same way: a face whose mean saturation (HSV: (max - min) / max of its RGB, over the pixels brighter
than 10% so the crop's black border and dark hair do not dilute it) is below GRAY_SATURATION runs the
gray branch, on its luma (ITU-R 601) in all three channels, which is what the branch was trained on.

A toned photo (sepia, selenium, cyanotype) can be as saturated as a colour one, but its colour is a
function of brightness alone. A model packed with a `toned` cut also sends a face to the gray branch when
the chroma left over once each brightness band's mean chroma is taken away (toned_residual) is below it:
in a colour face the same brightness carries different colours (lips and skin, hair and background).
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from facepipe.util.input_norm import LUMA, MEAN, STD

# Measured on aligned crops (docs/results.md, "A grayscale branch"): FASSEG's colour faces, the palest
# studio photos included, lie at 0.104 and above, utkface-5k's colour photos at 0.106 and above, the 159
# faces of the example photos at 0.082 and above (a colour film still graded nearly gray, the only one
# below 0.12). Black-and-white photos lie at 0 to 0.04, tinted and sepia ones up to 0.1: the cut takes
# the gray and near-gray ones and leaves a margin to the palest colour face; toned photos of any
# saturation are the toned rule's (TONED_RESIDUAL).
GRAY_SATURATION = 0.05
# Chroma residual (toned_residual, 0..255 units) below which a face counts as toned, measured on aligned
# crops (docs/results.md, "Toned photos take the gray branch"): synthetic sepia 0.8-1.9 (3.2 at most once
# saved as JPEG at quality 90), the toned prints among utkface-5k's colour-routed faces from 0.7 (31 of
# its 33 faces below 3.5 are toned by eye, 2 doubtful), and colour faces 5.9 and above (the 159 faces of
# the example photos, the near-gray film still at 6.4) and 6.1 and above (FASSEG, hair recoloured
# included). utkface-5k's faces between 3.5 and 4.8 mix toned prints and pale colour photos: a toned
# print there stays on the colour network, as every toned print did before the rule.
TONED_RESIDUAL = 3.5
_BANDS = 16  # luma bands of 1/16 of the range each: the toning curve is close to constant chroma within one
_STEP = 4  # every 4th pixel each way: the same mean to +-0.008 on our crops, and 16x less work than all
_BRIGHT = 0.1  # pixels darker than this (border, black hair) say nothing about colour


@functools.lru_cache(maxsize=8)
def _stats(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """MEAN and STD in 0..1, shaped to broadcast over a (N,3,H,W) batch; built once per dtype and device
    (the router runs before every face's network, where each small op counts)."""
    def as_x(v):
        return torch.as_tensor(v / 255, dtype=dtype, device=device).view(1, 3, 1, 1)
    with torch.inference_mode(False):  # kept for later calls, which may be outside inference mode
        return as_x(MEAN), as_x(STD)


def _rgb01(x: torch.Tensor) -> torch.Tensor:
    """The RGB channels of a normalised input batch (data.face_cache.to_input) back in [0, 1]."""
    mean, std = _stats(x.dtype, x.device)
    return (x[:, :3] * std + mean).clamp(0, 1)


# MEAN and STD in 0..1 and the luma weights, shaped to broadcast over (N,3,P) grids
_MEAN01, _STD01 = (np.asarray(v / 255, np.float32).reshape(1, 3, 1) for v in (MEAN, STD))
_LUMA3 = np.asarray(LUMA, np.float32).reshape(1, 3, 1)


def _grid(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What both rules read, on a grid of every _STEP-th pixel of a normalised batch: (N,3,P) RGB in [0, 1],
    with each pixel's largest channel (N,P) and whether it is brighter than _BRIGHT (N,P).

    Why numpy: the router runs before every face's network, and its cost is the number of small
    operations on a 64x64 grid. In torch, each of its ~60 ATen calls cost 3-15 us of dispatch (336 us a
    face on the AVX2 EPYC); the same rule in numpy took 200 us (docs/results.md, "The last resize in
    rows, the router in numpy"). The grid is a few kB, so a GPU batch is copied to the host for it."""
    v = x[:, :3, ::_STEP, ::_STEP].detach().to("cpu", torch.float32).numpy()
    rgb = np.ascontiguousarray(v).reshape(v.shape[0], 3, -1) * _STD01 + _MEAN01
    np.clip(rgb, 0, 1, out=rgb)
    hi = rgb.max(1)
    return rgb, hi, hi > _BRIGHT


def _saturation(rgb: np.ndarray, hi: np.ndarray, bright: np.ndarray) -> np.ndarray:
    sat = (hi - rgb.min(1)) / np.maximum(hi, 1e-6) * bright  # 0 where not bright
    return sat.sum(1) / np.maximum(bright.sum(1), 1)


def _residual(rgb: np.ndarray, bright: np.ndarray) -> np.ndarray:
    n = rgb.shape[0]
    y = (rgb * _LUMA3).sum(1)  # (N,P)
    w = bright.astype(np.float32)
    cb, cr = (rgb[:, 2] - y) * w, (rgb[:, 0] - y) * w  # B - Y and R - Y of the bright pixels
    # Each face's bands numbered apart, so that one bincount per sum serves the whole batch (float64 sums)
    band = (np.minimum((y * _BANDS).astype(np.int64), _BANDS - 1) + _BANDS * np.arange(n)[:, None]).ravel()
    s0, s1, s2, q1, q2 = (np.bincount(band, v.ravel(), n * _BANDS).reshape(n, _BANDS)
                          for v in (w, cb, cr, cb * cb, cr * cr))
    within = (q1 - s1 ** 2 / np.maximum(s0, 1) + q2 - s2 ** 2 / np.maximum(s0, 1)).sum(1)
    return np.sqrt(np.maximum(within, 0) / np.maximum(s0.sum(1), 1)) * 255


def mean_saturation(x: torch.Tensor) -> torch.Tensor:
    """(N,) mean HSV saturation over each crop's pixels brighter than _BRIGHT (0 when none is), on a grid
    of every _STEP-th pixel; on the CPU."""
    rgb, hi, bright = _grid(x)
    return torch.from_numpy(_saturation(rgb, hi, bright))


def toned_residual(x: torch.Tensor) -> torch.Tensor:
    """(N,) RMS, over each crop's pixels brighter than _BRIGHT (the same grid as mean_saturation), of the
    chroma (B - Y, R - Y; 0..255 units) less the mean chroma of the pixels in the same luma band (_BANDS):
    near 0 when colour is a function of brightness (gray or toned), large when one brightness carries
    several colours. 0 when no pixel is bright. On the CPU."""
    rgb, _, bright = _grid(x)
    return torch.from_numpy(_residual(rgb, bright))


def colourless(crop: np.ndarray) -> bool:
    """Whether an aligned crop (S x S x 3 uint8 RGB) is one the router sends to a gray branch, by both of its
    rules at their bundled cuts (gray: mean saturation; toned: the chroma residual): a face whose colour says
    nothing that its brightness does not. For rules that read colour beside any model (infer.neck)."""
    v = np.ascontiguousarray(crop[::_STEP, ::_STEP, :3], np.float32).reshape(1, -1, 3).transpose(0, 2, 1) / 255
    hi = v.max(1)
    bright = hi > _BRIGHT
    return bool(_saturation(v, hi, bright)[0] < GRAY_SATURATION or _residual(v, bright)[0] < TONED_RESIDUAL)


def luma_input(x: torch.Tensor) -> torch.Tensor:
    """The same normalised batch with its RGB replaced by luma in all three channels (heatmap kept)."""
    w = torch.as_tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    y = (_rgb01(x) * w).sum(1, keepdim=True).expand(-1, 3, -1, -1)
    mean, std = _stats(x.dtype, x.device)
    return torch.cat([(y - mean) / std, x[:, 3:]], 1)


class GrayRoute(nn.Module):
    """`color` for colour faces, `gray` for the rest (see the module docstring); same output shape.
    toned: the toned_residual cut, or None (files packed before it existed route by saturation alone)."""

    def __init__(self, color: nn.Module, gray: nn.Module, threshold: float = GRAY_SATURATION,
                 toned: float | None = None):
        super().__init__()
        self.color, self.gray, self.threshold = color, gray, float(threshold)
        self.toned = None if toned is None else float(toned)

    def routes(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) bool: which faces of the batch run the gray branch (the grid read once for both rules)."""
        rgb, hi, bright = _grid(x)
        g = _saturation(rgb, hi, bright) < self.threshold
        if self.toned is not None and not g.all():
            g = g | (_residual(rgb, bright) < self.toned)
        return torch.from_numpy(g).to(x.device)

    def forward(self, x: torch.Tensor, routes: torch.Tensor | None = None) -> torch.Tensor:
        """routes: `self.routes(x)` when the caller has it already (parse records it: routed once)."""
        g = self.routes(x) if routes is None else routes
        n_gray = int(g.sum())
        if n_gray == 0:
            return self.color(x)
        if n_gray == len(g):
            return self.gray(luma_input(x))
        yc, yg = self.color(x[~g]), self.gray(luma_input(x[g]))
        out = yc.new_empty((x.shape[0],) + yc.shape[1:])
        out[~g], out[g] = yc, yg.to(yc.dtype)
        return out


def one_branch(model: nn.Module) -> nn.Module:
    """The network one face runs: the colour branch of a GrayRoute, else the model itself (what a
    parameter count or an ONNX graph of a two-branch model stands for; each branch is one such)."""
    return model.color if isinstance(model, GrayRoute) else model
