"""The landmark heatmap input channel (method.md section 2).

Start from zeros, draw a filled square of value 255 at each landmark, Gaussian-blur it. Our choices,
both scaled with the crop size s: square side = max(1, round(s / 64)) px, blur sigma = s / 128 px.
After blurring, the map is rescaled so its maximum is 255 again; otherwise small squares blur into a
faint channel whose strength depends on s.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def square_side(size: int) -> int:
    return max(1, round(size / 64))


def sigma(size: int) -> float:
    return size / 128.0


def draw_heatmap(points: np.ndarray | None, size: int) -> np.ndarray:
    """size x size uint8 heatmap of landmark `points` (crop pixel coordinates); all zero if None."""
    canvas = np.zeros((size, size), np.float32)
    if points is None or len(points) == 0:
        return canvas.astype(np.uint8)
    half = square_side(size) / 2.0
    for x, y in np.asarray(points, np.float64):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        x0, x1 = int(np.floor(x - half + 0.5)), int(np.floor(x + half + 0.5))
        y0, y1 = int(np.floor(y - half + 0.5)), int(np.floor(y + half + 0.5))
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
        if x1 > x0 and y1 > y0:
            canvas[y0:y1, x0:x1] = 255.0
    blurred = gaussian_filter(canvas, sigma(size), mode="constant")
    peak = blurred.max()
    if peak > 0:
        blurred *= 255.0 / peak
    return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)
