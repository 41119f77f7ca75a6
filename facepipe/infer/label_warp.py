"""A face's class scores, warped from its crop back into the photo as one label per pixel: the label
map `parse` writes.

The label of a photo pixel is the argmax of the crop's scores interpolated bilinearly at the pixel's
place in the crop (skimage's `warp`, order 1, zeros outside the crop: what parse always did). Doing
that for every class over a face's whole footprint was parse's slowest step after detection on large
photos (a face filling a 24 MP photo: 11 classes x 16 M pixels in float64). Most of it is not needed:

- Convexity. A bilinear value is a weighted mean of the 4 crop pixels around it. If those 4 pixels
  share their argmax c, then every class's interpolated score is a mean of values that are each <= the
  same pixel's score for c, so c stays the argmax (rounding is monotone, so this holds in floats too,
  ties apart). So in a crop cell whose 4 corners agree, every photo pixel takes that label without
  interpolating anything.
- Only pixels that land in a cell whose corners disagree (a class boundary), or that touch the crop's
  edge (some neighbours outside, interpolated with zeros), are interpolated, with skimage's formula.

`pack_scores` (in the process that ran the network) keeps what the warp needs: the crop's argmax and
the scores of the pixels at the corners of those cells (a tenth of the crop, typically), instead of
shipping every class at every crop pixel (2.9 MB a face at 256 px) to the writing worker;
`labels_in_photo` (in the worker) does the rest. Pure numpy, no torch.
"""
from __future__ import annotations

import numpy as np

from facepipe.util.geometry import STRIP_PIXELS, footprint, shifted, warp_to_photo

# Cell codes in `FaceScores.cells`, besides the labels 0..253.
INTERPOLATE = 255  # corners disagree or touch the crop's edge: interpolate
OUTSIDE = 254  # all 4 neighbours outside the crop: not covered by this face


def _corner_cells(labels: np.ndarray) -> np.ndarray:
    """(S+3)x(S+3) cell codes indexed by floor(row) + 2, floor(col) + 2 for floor in [-2, S]: the label
    of interior cells whose 4 corners agree, INTERPOLATE for the others and for cells with a corner
    outside the crop, OUTSIDE where every corner is outside."""
    s = labels.shape[0]
    a, b, c, d = labels[:-1, :-1], labels[:-1, 1:], labels[1:, :-1], labels[1:, 1:]
    inner = np.where((a == b) & (a == c) & (a == d), a, INTERPOLATE).astype(np.uint8)
    cells = np.full((s + 3, s + 3), OUTSIDE, np.uint8)
    cells[1:s + 2, 1:s + 2] = INTERPOLATE  # cells -1..S-1: at least one corner inside
    cells[2:s + 1, 2:s + 1] = inner  # cells 0..S-2: all four corners inside
    return cells


class FaceScores:
    """What the warp back needs of one face's scores (C x S x S, the network's softmax): the argmax
    cells, the scores of the crop pixels that interpolated pixels read, and, for photos with several
    faces, the background score everywhere (overlaps are settled by it)."""

    def __init__(self, probs: np.ndarray, keep_background: bool = False, labels: np.ndarray | None = None):
        """labels: probs' argmax, when the caller has it (parse does: one argmax per face)."""
        probs = np.asarray(probs, np.float32)
        self.classes, self.size = probs.shape[0], probs.shape[1]
        if self.classes > OUTSIDE:
            raise ValueError(f"{self.classes} classes: label maps hold at most {OUTSIDE}")
        labels = (probs.argmax(0) if labels is None else labels).astype(np.uint8)
        self.cells = _corner_cells(labels)
        need = self.cells[1:-1, 1:-1] == INTERPOLATE  # cells -1..S: which crop pixels they read
        read = np.zeros((self.size, self.size), bool)
        for dy in (0, 1):
            for dx in (0, 1):
                read |= need[dy:dy + self.size, dx:dx + self.size]
        self.index = np.flatnonzero(read).astype(np.int32)
        self.scores = np.ascontiguousarray(probs.reshape(self.classes, -1)[:, self.index].T)  # N x C
        self.background = probs[0].copy() if keep_background else None

    def dense(self) -> np.ndarray:
        """S x S x C scores, zero where no interpolated pixel reads them (made once, on first use)."""
        if getattr(self, "_dense", None) is None:
            d = np.zeros((self.size * self.size, self.classes), np.float32)
            d[self.index] = self.scores
            self._dense = d.reshape(self.size, self.size, self.classes)
        return self._dense

    def __getstate__(self):  # the dense copy stays where it was made: not pickled to the writer
        return {k: v for k, v in self.__dict__.items() if k != "_dense"}


def pack_scores(probs: np.ndarray, faces_in_photo: int, labels: np.ndarray | None = None) -> list[FaceScores]:
    """One FaceScores per face of a photo (probs: F x C x S x S; labels: their argmax, F x S x S, if known)."""
    return [FaceScores(p, faces_in_photo > 1, None if labels is None else labels[i]) for i, p in enumerate(probs)]


def union_box(matrices: list, size: int, shape) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) holding every face's footprint: no pixel outside it gets a label."""
    boxes = [b for b in (footprint(m, size, shape) for m in matrices) if b[1] > b[0] and b[3] > b[2]]
    if not boxes:
        return 0, 0, 0, 0
    return min(b[0] for b in boxes), max(b[1] for b in boxes), min(b[2] for b in boxes), max(b[3] for b in boxes)


def _interpolate(dense: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """skimage's bilinear formula (floor and ceil neighbours, zeros outside) at points (r, c): N x C."""
    s = dense.shape[0]
    r0, c0 = np.floor(r), np.floor(c)
    dr, dc = (r - r0)[:, None], (c - c0)[:, None]
    r0, c0 = r0.astype(np.int64), c0.astype(np.int64)
    r1, c1 = np.ceil(r).astype(np.int64), np.ceil(c).astype(np.int64)

    def px(rr, cc):
        ok = (rr >= 0) & (rr < s) & (cc >= 0) & (cc < s)
        v = dense[np.clip(rr, 0, s - 1), np.clip(cc, 0, s - 1)].astype(np.float64)
        v[~ok] = 0.0
        return v

    top = (1 - dc) * px(r0, c0) + dc * px(r0, c1)
    bottom = (1 - dc) * px(r1, c0) + dc * px(r1, c1)
    return ((1 - dr) * top + dr * bottom).astype(np.float32)


def _strip_labels(fs: FaceScores, m: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Labels of a rows x cols block of photo pixels whose (0, 0) maps to the crop by `m` (3x3); OUTSIDE
    where the crop does not reach."""
    m = m.astype(np.float32).astype(np.float64)  # skimage casts the matrix to the scores' float32
    x = np.arange(cols, dtype=np.float64)[None, :]
    y = np.arange(rows, dtype=np.float64)[:, None]
    c = m[0, 0] * x + (m[0, 1] * y + m[0, 2])
    r = m[1, 0] * x + (m[1, 1] * y + m[1, 2])
    hi = fs.size
    # floor(v) + 2 clipped to [0, S + 2]: after the clip and the shift v >= 0, so truncation is the floor
    fi = (np.clip(r, -2, hi) + 2).astype(np.int32)
    fj = (np.clip(c, -2, hi) + 2).astype(np.int32)
    out = fs.cells[fi, fj]
    todo = out == INTERPOLATE
    if todo.any():
        v = _interpolate(fs.dense(), r[todo], c[todo])
        lab = v.argmax(1).astype(np.uint8)
        lab[v.sum(1) < 1e-6] = OUTSIDE  # every neighbour outside or weighted zero, as parse always had it
        out[todo] = lab
    return out


def labels_in_photo(scores: list[FaceScores], matrices: list, size: int, shape) -> np.ndarray:
    """One uint8 label map for all faces: each face's labels warped back over its own footprint, a strip
    of rows at a time; where faces overlap, the face more confident that the pixel is not background
    wins (1 - its interpolated background score; uncovered pixels count 0)."""
    h, w = shape[:2]
    labels = np.zeros((h, w), np.uint8)
    boxes = [footprint(m, size, (h, w)) for m in matrices]
    best, oy, ox = None, 0, 0
    if len(matrices) > 1:  # confidence so far, over the boxes' union only
        oy, y1, ox, x1 = union_box(matrices, size, (h, w))
        best = np.zeros((y1 - oy, x1 - ox), np.float32)
    for fs, m, (y0, y1, x0, x1) in zip(scores, matrices, boxes):
        if y1 <= y0 or x1 <= x0:
            continue
        rows = max(1, STRIP_PIXELS // (x1 - x0))
        for sy in range(y0, y1, rows):
            ey = min(y1, sy + rows)
            ms = shifted(m, x0, sy)
            lab = _strip_labels(fs, ms, ey - sy, x1 - x0)
            covered = lab != OUTSIDE
            if best is None:
                win = covered
            else:
                p0 = warp_to_photo(fs.background, ms, (ey - sy, x1 - x0), order=1, fill=0.0)
                fg = np.where(covered, 1.0 - p0, 0.0)
                b = best[sy - oy:ey - oy, x0 - ox:x1 - ox]
                win = fg > b
                b[win] = fg[win]
            labels[sy:ey, x0:x1][win] = lab[win]
    return labels
