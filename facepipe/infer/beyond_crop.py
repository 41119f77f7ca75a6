"""Hair beyond the face's crop: long hair, or a turned head's back, that runs out of the aligned crop.

The network sees only its crop, so parse used to stop the hair at the crop's straight edge (long hair
ending in a horizontal line at the chin). A second pass of the same network over a zoomed-out crop
(`ZOOM` = 1.5 times as wide, same centre, so the face is 2/3 of its size in the first: near the edge of
what training's scale jitter shows; at 2.0 the second pass labelled plain walls beside dark hair as hair)
sees where the hair goes. From that pass only hair is taken, and only hair that continues the face's
own hair across the crop's edge:

- seeds: the first pass's hair components that touch the face (a pixel of any class but background and
  hair next to them); hair blobs on a curtain or in foliage are not seeds, so they are not extended;
- the second pass's hair outside the first crop is kept where it is connected to a seed, through hair,
  below the crop's top edge or beside the crop: hair runs out of the crop downward (long hair) or
  sideways (the back of a turned head). The template leaves room above the crown, and where hair
  touched the top edge on the selection set it was a cut-off strip or dark clutter, not more hair;
- the kept pixels are painted as hair only where no face's first crop reaches: inside the crops the
  first pass decides, as before;
- hair that runs on out of the second crop's bottom edge (long hair down to the waist) is followed once
  more, the same way, by a third pass over a crop FAR_ZOOM = 2.25 times as wide: seeded by all the hair
  the first two passes gave, it keeps only hair connected to it outside the second crop, below its top
  edge. Hair that leaves the second crop only by a side does not start it: on the example photos that
  hair was a backdrop or a wall clock beside a small face in a group photo (docs/results.md, "Where hair
  beyond the crop goes wrong").
- with the face's colours on (parse's default), each pass's added hair is judged piece by piece by them
  before the third pass is seeded (infer.face_colours.drop_unlike_hair, the callers' step): a piece that
  looks more like the face's backdrop than like its hair (a dress or a sweater below the hair) is left
  out (docs/results.md, "Hair beyond the crop judged by the face's colours").

Everything happens in the zoomed-out crop (S x S), so the cost does not grow with the photo. Pure numpy
and scipy: the masks are made where the network ran and warped into the photo by the writing worker.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from facepipe.util.geometry import STRIP_PIXELS, footprint, warp_image

ZOOM = 1.5  # the second crop's side over the first's (2.0 lost on the selection set: docs/results.md)
FAR_ZOOM = ZOOM * ZOOM  # the third crop's: ZOOM times the second's, so each pass relates to the last alike


def outer_matrix(matrix: np.ndarray, size: int, zoom: float = ZOOM) -> np.ndarray:
    """photo -> zoomed-out crop: the same centre, `zoom` times the side."""
    return zoom_matrix(size, zoom) @ np.asarray(matrix, np.float64)


def zoom_matrix(size: int, zoom: float) -> np.ndarray:
    """first crop -> zoomed-out crop (pixel centres: the crop's centre is (size - 1) / 2)."""
    c = (size - 1) / 2.0
    return np.array([[1 / zoom, 0, c - c / zoom], [0, 1 / zoom, c - c / zoom], [0, 0, 1]], np.float64)


def outer_heatmap(heatmap: np.ndarray, zoom: float = ZOOM) -> np.ndarray:
    """The first crop's landmark heatmap as the zoomed-out crop sees it: shrunk, as training's zoom-out
    shrinks it (the squares too), zeros around."""
    return warp_image(heatmap, zoom_matrix(heatmap.shape[0], zoom), heatmap.shape[0])


def _inner_box(size: int, zoom: float) -> tuple[int, int]:
    """[lo, hi) of the zoomed-out crop's rows (and columns) that the first crop covers."""
    c = (size - 1) / 2.0
    half = size / (2.0 * zoom)
    return int(np.floor(c - half + 0.5)), int(np.ceil(c + half - 0.5)) + 1


def reaches_edge(first: np.ndarray, hair: int) -> bool:
    """Whether the first pass has hair on the crop's bottom or side edges: without it `hair_beyond` adds
    nothing (its hair can only continue across those edges), so the second pass need not run."""
    return bool((first[-1] == hair).any() or (first[:, 0] == hair).any() or (first[:, -1] == hair).any())


def face_hair(labels: np.ndarray, hair: int) -> np.ndarray:
    """The hair pixels of a first-pass label map (S x S) whose 8-connected component touches the face."""
    is_hair = labels == hair
    face = (labels != 0) & ~is_hair
    comp, n = ndimage.label(is_hair, structure=np.ones((3, 3), bool))
    if n == 0:
        return is_hair
    touching = np.unique(comp[ndimage.binary_dilation(face, structure=np.ones((3, 3), bool)) & is_hair])
    return np.isin(comp, touching[touching > 0])


def into_outer(mask: np.ndarray, zoom: float = ZOOM) -> np.ndarray:
    """A mask of a crop (S x S) as the crop `zoom` times as wide around the same centre sees it (nearest
    pixel centres; False around)."""
    s = mask.shape[0]
    lo, hi = _inner_box(s, zoom)
    idx = np.clip(np.floor((np.arange(lo, hi) - (s - 1) / 2.0) * zoom + (s - 1) / 2.0 + 0.5), 0, s - 1).astype(int)
    out = np.zeros((s, s), bool)
    out[lo:hi, lo:hi] = mask[np.ix_(idx, idx)]
    return out


def hair_beyond(first: np.ndarray | None, second: np.ndarray, hair: int, zoom: float = ZOOM,
                above: bool = False, seed: np.ndarray | None = None) -> np.ndarray:
    """Boolean S x S mask, in the zoomed-out crop, of the hair to add outside the first crop.

    first: the first pass's labels (S x S, its own crop); second: the zoomed-out pass's labels; above:
    also above the crop's top edge (off in parse; kept for tools/beyond_crop_select.py). seed: the hair
    to follow, in the inner crop, instead of first's hair touching the face (the third pass: all the
    hair of the first two, in the second crop)."""
    s = second.shape[0]
    lo, hi = _inner_box(s, zoom)
    seeds = into_outer(face_hair(first, hair) if seed is None else seed, zoom)
    outside = np.ones((s, s), bool)
    outside[lo:hi, lo:hi] = False
    if not above:
        outside[:lo] = False  # nothing above the crop's top edge (why: the module's docstring)
    grow = (second == hair) & outside
    comp, n = ndimage.label(grow | seeds, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros((s, s), bool)
    keep = np.unique(comp[seeds])
    return np.isin(comp, keep[keep > 0]) & outside


def far_seed(first: np.ndarray, beyond: np.ndarray, hair: int) -> np.ndarray | None:
    """The hair a third pass follows, in the second crop: the first pass's hair touching the face and the
    second's added hair (`beyond`, hair_beyond's mask); None when that hair does not reach the second
    crop's bottom edge (no third pass)."""
    if not beyond[-1].any():
        return None
    return beyond | into_outer(face_hair(first, hair))


def _crop_coords(m: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop (row, col) of the photo pixels [y0, y1) x [x0, x1) under matrix m (photo -> crop)."""
    m = np.asarray(m, np.float64)
    x = np.arange(x0, x1, dtype=np.float64)[None, :]
    y = np.arange(y0, y1, dtype=np.float64)[:, None]
    return m[1, 0] * x + (m[1, 1] * y + m[1, 2]), m[0, 0] * x + (m[0, 1] * y + m[0, 2])


def paint_beyond(labels: np.ndarray, masks: list, outer_matrices: list, first_matrices: list, size: int,
                 hair: int, over: int | None = None) -> int:
    """Set `labels` (the photo's, in place) to `hair` (the class painted) where a mask (zoomed-out crop;
    matrix photo -> that crop) says so and no face's first crop reaches (crop coordinates in (-1, size)
    for any of `first_matrices`: where label_warp labels from the first pass, zeros interpolated at the
    rim), and, with `over`, only where the label is that class. A strip of rows at a time, over each
    mask's footprint. Returns how many pixels changed."""
    h, w = labels.shape
    painted = 0
    # Each first crop's footprint, wide enough for its rim (crop coordinates down to -1: one crop pixel,
    # in photo pixels 1 / the crop's scale).
    firsts = [(fm, footprint(fm, size, (h, w), margin=2 + int(np.ceil(1 / np.sqrt(abs(np.linalg.det(
        np.asarray(fm, np.float64)[:2, :2]))))))) for fm in first_matrices]
    for mask, m in zip(masks, outer_matrices):
        if mask is None or not mask.any():
            continue
        y0, y1, x0, x1 = footprint(m, size, (h, w))
        if y1 <= y0 or x1 <= x0:
            continue
        # Only the first crops that overlap this footprint can keep pixels of it (a group photo's faces
        # are mostly far apart: testing each against all made the painting quadratic in faces).
        near = [fm for fm, (a, b, c, d) in firsts if a < y1 and b > y0 and c < x1 and d > x0]
        rows = max(1, STRIP_PIXELS // (x1 - x0))
        for sy in range(y0, y1, rows):
            ey = min(y1, sy + rows)
            r, c = _crop_coords(m, sy, ey, x0, x1)
            r, c = np.floor(r + 0.5).astype(np.int64), np.floor(c + 0.5).astype(np.int64)  # nearest pixel
            ok = (r >= 0) & (r < size) & (c >= 0) & (c < size)
            hit = np.zeros(ok.shape, bool)
            hit[ok] = mask[r[ok], c[ok]]
            if not hit.any():
                continue
            for fm in near:
                fr, fc = _crop_coords(fm, sy, ey, x0, x1)
                hit &= ~((fr > -1) & (fr < size) & (fc > -1) & (fc < size))
            strip = labels[sy:ey, x0:x1]
            if over is not None:
                hit &= strip == over
            painted += int((hit & (strip != hair)).sum())  # once per pixel, where masks overlap too
            strip[hit] = hair
    return painted
