"""Contact sheets: grids of faces with label overlays and heatmaps, for people to look at."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from facepipe.util.schema import LabelSchema


def overlay(rgb: np.ndarray, labels: np.ndarray, schema: LabelSchema, alpha: float = 0.5) -> np.ndarray:
    """Blend the label colours over the photo (ignore pixels left as they are)."""
    col = schema.colorize(labels).astype(np.float32)
    out = rgb.astype(np.float32)
    m = ((labels != 255) & (labels != 0))[..., None]  # background (id 0) left untinted
    out = np.where(m, (1 - alpha) * out + alpha * col, out)
    return np.clip(out, 0, 255).astype(np.uint8)


def heat_overlay(rgb: np.ndarray, heat: np.ndarray) -> np.ndarray:
    out = rgb.astype(np.float32) * 0.6
    out[..., 0] = np.maximum(out[..., 0], heat.astype(np.float32))
    out[..., 1] = np.maximum(out[..., 1], heat.astype(np.float32) * 0.8)
    return out.astype(np.uint8)


def grid(tiles: list[list[np.ndarray]], captions: list[str] | None = None, tile: int = 160) -> Image.Image:
    """Rows of equally sized tiles; one caption per row drawn on its first tile."""
    rows, cols = len(tiles), max(len(r) for r in tiles)
    sheet = Image.new("RGB", (cols * tile, rows * tile), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(tiles):
        for c, t in enumerate(row):
            im = Image.fromarray(t).resize((tile, tile), Image.BILINEAR)
            sheet.paste(im, (c * tile, r * tile))
        if captions and r < len(captions) and captions[r]:
            draw.rectangle([0, r * tile, min(cols * tile, 8 + 7 * len(captions[r])), r * tile + 14], fill=(0, 0, 0))
            draw.text((3, r * tile + 1), captions[r], fill=(255, 255, 255))
    return sheet
