"""Photos without faces that training pastes faces onto (the wild recipe in facepipe.learn.augment).

A `BackgroundBank` holds square tiles cut from the photos of a `facepipe backgrounds` output
(`load_bank`) and draws random backdrops from them, each draw driven by the caller's random numbers so
that a run is reproducible and ranks stay in step.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from facepipe.util.images import load_rgb
from facepipe.util.manifest import read_manifest


def gauss_blur(x, sigma: float):
    """Separable Gaussian blur of (N,C,H,W), edge pixels repeated as padding."""
    r = max(1, int(3 * sigma + 0.5))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, device=x.device, dtype=x.dtype) / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, 0, 0), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = F.pad(x, (0, 0, r, r), mode="replicate")
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


class BackgroundBank:
    """Background photos (uint8 (M,3,S,S) on the CPU) that faces are pasted onto during training."""

    def __init__(self, tiles: torch.Tensor, source: str = ""):
        self.tiles, self.source = tiles, source

    def __len__(self):
        return len(self.tiles)

    def draw(self, n: int, h: int, w: int, r: torch.Tensor, dev) -> torch.Tensor:
        """n random backgrounds as (n,3,h,w) float [0,1]: a tile, a random crop of 50-100% of it,
        mirrored at random, and out of focus at random (sigma 0..3 px), as backdrops are."""
        out = []
        m, s = len(self.tiles), self.tiles.shape[-1]
        for i in range(n):
            t = self.tiles[min(m - 1, int(r[i, 0] * m))].float() / 255
            side = int(s * (0.5 + 0.5 * float(r[i, 1])))
            oy = int((s - side) * float(r[i, 2]))
            ox = int((s - side) * ((float(r[i, 1]) * 7.31) % 1))
            t = t[:, oy:oy + side, ox:ox + side]
            if float(r[i, 3]) < 0.5:
                t = t.flip(-1)
            t = F.interpolate(t[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)
            sigma = 3 * ((float(r[i, 3]) * 13.7) % 1)
            if sigma > 0.3:
                t = gauss_blur(t, sigma)
            out.append(t[0])
        return torch.stack(out).to(dev)


def load_bank(folder, size: int, tiles_per_photo: int = 4, seed: int = 0) -> BackgroundBank:
    """A BackgroundBank of `tiles_per_photo` square tiles per photo of a `backgrounds` output, each a
    random square of 40-100% of the photo's short side, resized to size x size."""
    folder = Path(folder)
    read_manifest(folder, "backgrounds", what="--backgrounds")
    recs = [json.loads(l) for l in (folder / "sources.jsonl").read_text().splitlines() if l.strip()]
    rng = np.random.default_rng(seed)
    tiles = []
    for r in recs:
        im = Image.fromarray(load_rgb(folder / r["image"]))
        w, h = im.size
        for _ in range(tiles_per_photo):
            side = min(w, h) * (0.4 + 0.6 * rng.random())
            x0, y0 = rng.random() * (w - side), rng.random() * (h - side)
            t = im.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
            tiles.append(torch.from_numpy(np.asarray(t).copy()).permute(2, 0, 1))
    return BackgroundBank(torch.stack(tiles), source=str(folder.resolve()))
