"""Alignment geometry: the 5-point template, similarity fits and warps both ways.

Matrices are 3x3 and map photo pixel coordinates (x, y) to crop coordinates. Crops are warped with
bilinear interpolation, label maps with nearest neighbour; `warp_to_photo` is the inverse used to put
a prediction back onto the original photo.
"""
from __future__ import annotations

import numpy as np
from skimage.transform import SimilarityTransform, warp

# Canonical 5 points: left eye centre, right eye centre (as seen in the image), nose tip, mouth corners.
# Shape from the widely used 112x112 face-recognition template, rescaled so the eye distance is
# `iod` of the crop and centred lower than recognition crops: parsing needs the hair above the face.
# Defaults chosen on FASSEG train+test geometry: with iod 0.25 and centre y 0.55, 2.8% of the V2 test
# photos' labelled (non-background) pixels fell outside the crop, almost all hair at the top, which
# caps pixel accuracy in photo coordinates at 97.2%; iod 0.22 with centre y 0.60 leaves 0.04% outside.
# The training photos alone pick the same setting (9.3% -> 2.9% of their labelled pixels outside).
_REF = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                 [41.5493, 92.3655], [70.7299, 92.2041]]) / 112.0
_REF_IOD = float(np.linalg.norm(_REF[1] - _REF[0]))


def template(size: int, iod: float = 0.22, center=(0.5, 0.60)) -> np.ndarray:
    """The 5 template points in pixels of a size x size crop."""
    pts = (_REF - _REF.mean(0)) * (iod / _REF_IOD) + np.asarray(center)
    return pts * size


def five_from(points: np.ndarray) -> np.ndarray:
    """Canonical 5 points from a landmark set, by its size: 5 (already canonical), 68 (iBUG), 106 (LaPa)."""
    p = np.asarray(points, np.float64)
    n = len(p)
    if n == 5:
        return p
    if n == 68:
        return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])
    if n == 106:  # LaPa / JD-landmark: pupils 104, 105; nose tip 46; mouth corners 84, 90
        return np.stack([p[104], p[105], p[46], p[84], p[90]])
    raise ValueError(f"cannot derive 5 alignment points from {n} landmarks (known: 5, 68, 106)")


def fit_similarity(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) src -> dst as a 3x3 matrix."""
    try:
        if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
            m = np.asarray(SimilarityTransform.from_estimate(src_pts, dst_pts).params, np.float64)
        else:
            m = np.asarray(_estimate(src_pts, dst_pts).params, np.float64)
    except Exception:  # failed estimation raises on .params in new scikit-image
        raise ValueError("degenerate landmarks") from None
    if not np.all(np.isfinite(m)) or abs(np.linalg.det(m[:2, :2])) < 1e-12:
        raise ValueError("degenerate landmarks")
    return m


def _estimate(src, dst):
    t = SimilarityTransform()
    if not t.estimate(src, dst):
        raise ValueError("degenerate landmarks")
    return t


# Where a detector box goes in the crop when the face's landmarks cannot be trusted (box_matrix), in
# units of the template's eye distance from the template's centre (mean of its 5 points). Measured on
# dlib CNN boxes of the 40 FASSEG V3 train photos at 0 and +-15 degrees of yaw whose landmarks are
# trusted: aligned from their landmarks, the box is 2.36 eye distances wide (sd 0.21) and its centre
# 0.30 above the template centre (sd 0.12); sideways it is taken as centred (the box of a profile has
# no side to prefer). So a box-aligned face lands at the scale and place of a landmark-aligned one.
BOX_WIDTH_IN_IOD = 2.36
BOX_CENTER_DY_IN_IOD = -0.30


def box_matrix(box, tmpl: np.ndarray, width_in_iod: float = BOX_WIDTH_IN_IOD) -> np.ndarray:
    """Photo -> crop matrix from a face box [l, t, r, b] alone: scale from the box size (mean of its width
    and height; the box becomes `width_in_iod` template eye distances wide), box centre onto the
    template's point for it, no rotation. For faces whose landmarks cannot be trusted (profiles on
    dlib's CNN boxes); `tmpl` is `template(size, iod)`."""
    l, t, r, b = (float(v) for v in box)
    side = ((r - l) + (b - t)) / 2
    if not (np.isfinite(side) and side > 0):
        raise ValueError(f"degenerate face box {list(box)}")
    tmpl = np.asarray(tmpl, np.float64)
    iod = float(np.linalg.norm(tmpl[1] - tmpl[0]))
    s = width_in_iod * iod / side
    tx, ty = tmpl.mean(0) + np.array([0.0, BOX_CENTER_DY_IN_IOD * iod])
    return np.array([[s, 0, tx - s * (l + r) / 2], [0, s, ty - s * (t + b) / 2], [0, 0, 1]], np.float64)


# A turned face aligned from its landmarks: the similarity fit centres the crop on the eyes, nose and
# mouth, so the back of the head falls out of it (FASSEG V3, crop ceiling at |yaw| 45-90: 64-95% of the
# photo's pixels against 99% frontal). The nose tip's sideways offset from the template's nose, in eye
# distances, tells how far and which way the head is turned (0.01 +-0.04 frontal, 0.20 at 30 degrees,
# 0.31 at 45, 0.39 at 75), and the head's centre sits about 3.2 times that offset behind it. So the
# crop moves toward the back of the head by `gain` x the offset beyond a dead zone that leaves frontal
# crops as they were, at most TURN_SHIFT_MAX eye distances. gain 4 and dead zone 0.05 were chosen on
# the training persons (01-05, V2 train) by the crop ceiling; docs/results.md "Turned faces".
TURN_DEAD_ZONE_IN_IOD = 0.05
TURN_SHIFT_MAX_IN_IOD = 1.5


def turn_shift(matrix: np.ndarray, five: np.ndarray, tmpl: np.ndarray, gain: float) -> np.ndarray:
    """`matrix` (photo -> crop, from the five points `five` in photo pixels) moved sideways toward the
    back of a turned head; unchanged when `gain` is 0 or the face looks straight on."""
    if not gain:
        return matrix
    tmpl = np.asarray(tmpl, np.float64)
    iod = float(np.linalg.norm(tmpl[1] - tmpl[0]))
    nose = (apply(matrix, np.asarray(five, np.float64)[2:3])[0, 0] - tmpl[2, 0]) / iod
    shift = gain * np.sign(nose) * max(abs(nose) - TURN_DEAD_ZONE_IN_IOD, 0.0)
    shift = float(np.clip(shift, -TURN_SHIFT_MAX_IN_IOD, TURN_SHIFT_MAX_IN_IOD)) * iod
    # The nose points the way the face looks; the head's bulk is on the other side, so the crop's
    # content moves the nose's way and what was cut off behind the head comes in.
    return np.array([[1.0, 0, shift], [0, 1.0, 0], [0, 0, 1.0]]) @ matrix


def letterbox_matrix(height: int, width: int, size: int) -> np.ndarray:
    """Fit the whole photo into the crop (kept aspect, centred): used when no face is found."""
    s = size / max(height, width)
    return np.array([[s, 0, (size - s * width) / 2], [0, s, (size - s * height) / 2], [0, 0, 1]], np.float64)


def apply(matrix: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.asarray(pts, np.float64)
    h = np.c_[p, np.ones(len(p))] @ np.asarray(matrix).T
    return h[:, :2] / h[:, 2:3]


def _warp(arr: np.ndarray, inverse: np.ndarray, shape, order: int, cval: float) -> np.ndarray:
    out = warp(arr, inverse_map=inverse, output_shape=shape, order=order, mode="constant", cval=cval,
               preserve_range=True, clip=False)
    return out


def warp_image(rgb: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Photo -> size x size crop, bilinear; outside the photo is black."""
    out = _warp(rgb.astype(np.float32), np.linalg.inv(matrix), (size, size), 1, 0.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def warp_labels(ids: np.ndarray, matrix: np.ndarray, size: int, fill: int = 255) -> np.ndarray:
    """Label ids photo -> crop, nearest neighbour; outside the photo gets `fill` (255 = ignore)."""
    out = _warp(ids.astype(np.float32), np.linalg.inv(matrix), (size, size), 0, float(fill))
    return out.astype(np.uint8)


def warp_to_photo(arr: np.ndarray, matrix: np.ndarray, shape: tuple[int, int], order: int = 0,
                  fill: float = 0.0) -> np.ndarray:
    """Crop -> photo (the inverse warp). `arr` is HxW ids (order 0) or HxWxC scores (order 1)."""
    dtype = arr.dtype
    out = _warp(arr.astype(np.float32), np.asarray(matrix, np.float64), tuple(shape[:2]), order, fill)
    return out.astype(dtype) if order == 0 else out.astype(np.float32)


def inside_photo(matrix: np.ndarray, size: int, photo_hw) -> np.ndarray:
    """Boolean size x size mask of the crop pixels that lie wholly inside the photo (height, width) that
    `matrix` (photo -> crop) cut them from: their bilinear sample mixes in none of warp_image's black fill."""
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    inv = np.linalg.inv(np.asarray(matrix, np.float64))
    x = inv[0, 0] * u + inv[0, 1] * v + inv[0, 2]
    y = inv[1, 0] * u + inv[1, 1] * v + inv[1, 2]
    h, w = (float(t) for t in photo_hw)
    return (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)


def inside_or_none(matrix: np.ndarray, size: int, photo_hw) -> np.ndarray | None:
    """inside_photo's mask, or None when the whole crop lies inside the photo (its four corners do: most
    faces of most photos, which then cost four points instead of a size x size grid)."""
    inv = np.linalg.inv(np.asarray(matrix, np.float64))
    corners = inv @ np.array([[0, size - 1, 0, size - 1], [0, 0, size - 1, size - 1], [1, 1, 1, 1]], np.float64)
    h, w = (float(t) for t in photo_hw)
    if (corners[0] >= 0).all() and (corners[0] <= w - 1).all() and (corners[1] >= 0).all() and (
            corners[1] <= h - 1).all():
        return None
    return inside_photo(matrix, size, photo_hw)


def crop_mask_in_photo(matrix: np.ndarray, size: int, shape: tuple[int, int]) -> np.ndarray:
    """Boolean HxW mask of the photo pixels that the crop covers."""
    ones = np.ones((size, size), np.float32)
    return warp_to_photo(ones, matrix, shape, order=0, fill=0.0) > 0.5


STRIP_PIXELS = 1 << 20  # photo pixels warped back at a time: the temporaries stay ~50 MB whatever the face size


def footprint(matrix: np.ndarray, size: int, shape, margin: int = 0) -> tuple[int, int, int, int]:
    """Photo-pixel bounding box (y0, y1, x0, x1) of the crop's area, `margin` pixels wider, clipped to
    the photo."""
    inv = np.linalg.inv(matrix)
    c = apply(inv, np.array([[0, 0], [size, 0], [0, size], [size, size]], float))
    h, w = shape[:2]
    x0, y0 = np.floor(c.min(0)).astype(int) - margin
    x1, y1 = np.ceil(c.max(0)).astype(int) + 1 + margin
    return max(0, y0), min(h, y1), max(0, x0), min(w, x1)


def shifted(matrix: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """The matrix for a sub-image whose (0, 0) is the photo's (x0, y0)."""
    return np.asarray(matrix, np.float64) @ np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], np.float64)


def crop_face(rgb: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """`warp_image` on the part of the photo the crop can see: same pixels, without converting a 24 MP
    photo to floats for every face (that made parse slow and took 1.8 GB on a 6000x4000 photo)."""
    y0, y1, x0, x1 = footprint(matrix, size, rgb.shape, margin=2)  # + the bilinear neighbours
    if y1 <= y0 or x1 <= x0:
        return np.zeros((size, size, 3), np.uint8)
    return warp_image(rgb[y0:y1, x0:x1], shifted(matrix, x0, y0), size)


def box_iou(a, b) -> float:
    """Intersection over union of two boxes (left, top, right, bottom)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
