"""A contact sheet of a cache (`facepipe show`): sample faces with their label and heatmap overlays."""
from __future__ import annotations

import numpy as np
from PIL import Image

from facepipe.data.face_cache import FaceCache
from facepipe.util.schema import FASSEG
from facepipe.util.sheets import grid, heat_overlay, overlay


def cache_sheet(path, n: int = 12, seed: int = 0, split: str | None = None) -> Image.Image:
    """Sample faces of a cache: crop | label overlay | heatmap overlay, several faces per row."""
    ds = FaceCache(path, split=split, need_labels=False)
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(ds), size=min(n, len(ds)), replace=False))
    schema = ds.schema or FASSEG
    tiles, caps, row, cap = [], [], [], []
    per_row = 3
    for k, i in enumerate(pick):
        r = ds.raw(int(i))
        row += [r["image"]]
        if r["label"] is not None:
            row.append(overlay(r["image"], r["label"], schema))
        row.append(heat_overlay(r["image"], r["heatmap"]))
        cap.append(ds.ids[int(ds.indices[int(i)])][:22])
        if (k + 1) % per_row == 0 or k == len(pick) - 1:
            tiles.append(row)
            caps.append(" | ".join(cap))
            row, cap = [], []
    return grid(tiles, caps)
