"""Where a face's parts can be, read from its 68 landmarks, laid over the network's probabilities in the
crop (parse does it by default; `eval --landmark-prior` scores it). Three rules:

- Inside the inner lip contour (points 60-67) is the mouth: the inner mouth, or the lips where the points
  fall short, in every schema facepipe knows, never skin. FASSEG, the only labelled faces here, has no
  open smile, and both bundled networks call the teeth of a broad smile skin, most often on dark-skinned
  faces, whose skin is darker than the teeth (docs/results.md, "The landmark prior"). Inside the contour
  every class outside the mouth group gives its probability to the inner mouth.
- A second blob of eyes, brows, nose or mouth that comes nowhere near the landmarks of that part, while
  the part is found at them (a nose on a scalp, eyes on a grey head, a mouth on a chin), is not that
  part: the class is ruled out on the blob's pixels, which take the network's next choice.
- A blob of skin that comes nowhere near the face (SKIN_REACH_IOD from the hull of all 68 points) and
  is ringed by background (SKIN_RING of the pixels just around it) is not this face's skin: a lamp, a
  hand or a skin-coloured object in the clutter. Its skin probability goes to background (what rings
  it). Skin apart from the face but ringed by hair (a bald patch in thin hair, a scalp seen through it)
  stays.

The reach of the second rule was set from FASSEG's own labels (tools/landmark_prior_check.py): every
labelled part there lies within it of its landmarks. Faces without trusted landmarks (cut from a CNN
box) are left as the network says.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage.draw import polygon as fill_polygon

from facepipe.util.schema import LabelSchema

BROWS, NOSE, EYES, MOUTH = range(17, 27), range(27, 36), range(36, 48), range(48, 68)
INNER_LIPS = range(60, 68)
AGREE = 0.5  # the share of the network's pixels that must agree with the landmarks (see apply)
AGREE_REACH_IOD = 0.1  # "near the lips" for the mouth rule's check, in inter-ocular distances
# By name, as the schemas in util.schema spell them (CelebAMask-HQ's eye_g is eyeglasses: not a part here).
PART_POINTS = {
    **{c: EYES for c in ("eyes", "left_eye", "right_eye", "l_eye", "r_eye")},
    **{c: BROWS for c in ("left_brow", "right_brow", "l_brow", "r_brow")},
    "nose": NOSE,
    **{c: MOUTH for c in ("mouth", "upper_lip", "inner_mouth", "lower_lip", "u_lip", "l_lip")},
}
INNER_MOUTH_NAMES = ("inner_mouth", "mouth")  # the first the schema has takes the inner contour
# A part's blob is kept when any of its pixels lies within this many inter-ocular distances of the convex
# hull of its landmarks. FASSEG's labelled parts touch their hulls, but for one-pixel label specks and the
# parts of two faces with wrong landmarks (tools/landmark_prior_check.py); a nose on a scalp is 1-2 away.
REACH_IOD = 0.35
# A skin blob is the face's when any of its pixels lies within this many inter-ocular distances of the
# hull of all 68 points (ears and a neck below a beard lie within a third of one), or when less than
# SKIN_RING of the pixels ringing it (2 px around) are background.
SKIN_REACH_IOD = 0.5
SKIN_RING = 0.9


class LandmarkPrior:
    """The rules for one schema; `apply(probs, points)` changes probs (C x S x S) in place."""

    def __init__(self, schema: LabelSchema, reach_iod: float = REACH_IOD, inner_mouth: bool = True,
                 strays: bool = True, skin_islands: bool = True):
        names = list(schema.classes)
        self.parts = [(names.index(c), PART_POINTS[c]) for c in names if c in PART_POINTS]
        mouth_group = [names.index(c) for c in names if PART_POINTS.get(c) is MOUTH]
        self.mouth_group = np.array(mouth_group, np.int64)
        inner = next((c for c in INNER_MOUTH_NAMES if c in names), None)
        self.inner = names.index(inner) if inner is not None and inner_mouth else None
        self.donors = [i for i in range(len(names)) if i not in mouth_group]
        self.reach_iod, self.strays = float(reach_iod), bool(strays)
        self.islands = (names.index("skin"), names.index("background")) if (
            skin_islands and {"skin", "background"} <= set(names)) else None

    @property
    def active(self) -> bool:
        return self.inner is not None or (self.strays and bool(self.parts)) or self.islands is not None

    def apply(self, probs: np.ndarray, points: np.ndarray | None, labels: np.ndarray | None = None) -> int:
        """Lay the rules over one crop's probabilities (C x S x S, changed in place) given its 68 landmarks
        in crop pixels (None or any other count: nothing is done); labels: probs' argmax, when the caller
        has it; it is kept up to date. Returns how many pixels' argmax changed.

        Where the landmarks and the network disagree about where a part is, the landmarks are the likelier
        to be wrong (a turned face fitted as a frontal one: 2 of FASSEG's 187 faces), so each rule first
        checks them against the network: each needs most of the network's pixels of the part near its
        landmarks (the mouth rule within AGREE_REACH_IOD of the lips' hull, the blob rule within the reach)."""
        if points is None or len(points) != 68 or not np.isfinite(points).all():
            return 0
        # One argmax of the whole crop (about 1 ms at 256 px) unless given; after that, only the pixels a
        # rule touched are looked at again.
        given = labels is not None
        labels = labels if given else probs.argmax(0)
        now = labels.copy()
        iod = float(np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0)))
        if self.inner is not None:
            inside = polygon_mask(points[list(INNER_LIPS)], labels.shape)
            said = np.argwhere(np.isin(labels, self.mouth_group))
            near = hull_distance(points[list(MOUTH)], said) <= AGREE_REACH_IOD * iod
            if inside.any() and len(said) and near.sum() >= AGREE * len(said):
                probs[self.inner][inside] += probs[self.donors][:, inside].sum(0)
                for d in self.donors:
                    probs[d][inside] = 0
                now[inside] = self.inner
        if self.strays:
            for c, idx in self.parts:
                blobs = stray_blobs(now == c, points[list(idx)], self.reach_iod * iod)
                if blobs is not None:
                    probs[c][blobs] = 0
                    now[blobs] = probs[:, blobs].argmax(0)
        if self.islands is not None:
            skin, bg = self.islands
            blobs = skin_islands(now == skin, now == bg, points, SKIN_REACH_IOD * iod)
            if blobs is not None:  # ringed by background, it is background: skin's probability goes there
                probs[bg][blobs] += probs[skin][blobs]
                probs[skin][blobs] = 0
                now[blobs] = probs[:, blobs].argmax(0)
        changed = int((now != labels).sum())
        if given:
            labels[...] = now
        return changed


def polygon_mask(pts: np.ndarray, shape) -> np.ndarray:
    """Pixels whose centres lie inside the polygon pts (x, y in pixels)."""
    mask = np.zeros(shape, bool)
    rr, cc = fill_polygon(pts[:, 1], pts[:, 0], shape)
    mask[rr, cc] = True
    return mask


def hull_distance(pts: np.ndarray, yx: np.ndarray) -> np.ndarray:
    """Distance (pixels) of each pixel yx (N x 2, row and column) to the convex hull of pts (x, y); 0
    inside it. Only the pixels asked for are measured: a part's few hundred, not the whole crop."""
    try:
        ring = pts[ConvexHull(pts).vertices]  # counter-clockwise in (x, y)
    except (QhullError, ValueError):  # collinear or repeated points: measure to the polyline through them
        ring = pts
    p = yx[:, ::-1].astype(np.float64)[:, None, :]  # N x 1 x (x, y)
    a, b = ring[None], np.roll(ring, -1, 0)[None]
    ab, ap = b - a, p - a
    t = np.clip((ap * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    d = np.linalg.norm(ap - t[..., None] * ab, axis=-1).min(1)
    if len(ring) >= 3 and ring is not pts:
        inside = ((ab[..., 0] * ap[..., 1] - ab[..., 1] * ap[..., 0]) >= 0).all(1)
        d[inside] = 0
    return d


def stray_blobs(mask: np.ndarray, pts: np.ndarray, reach: float) -> np.ndarray | None:
    """The pixels of mask's 8-connected blobs none of whose pixels comes within `reach` pixels of the
    convex hull of pts, when the blobs that do come near hold at least AGREE of the mask's pixels; None
    when there are none. A part found mostly far from its landmarks is left alone: there the landmarks
    are the likelier to be wrong."""
    if not mask.any():
        return None
    blobs, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n < 2:
        return None
    yx = np.argwhere(mask)
    ids = blobs[yx[:, 0], yx[:, 1]]
    kept = np.isin(ids, np.unique(ids[hull_distance(pts, yx) <= reach]))
    if kept.all() or kept.sum() < AGREE * len(ids):
        return None
    stray = np.zeros_like(mask)
    stray[yx[~kept, 0], yx[~kept, 1]] = True
    return stray


def skin_islands(skin: np.ndarray, background: np.ndarray, pts: np.ndarray, reach: float) -> np.ndarray | None:
    """The pixels of skin's 8-connected blobs none of whose pixels comes within `reach` pixels of the convex
    hull of pts (all 68 landmarks) and whose ring (the pixels within 2 of the blob, in the crop) is at least
    SKIN_RING background; None when there are none."""
    if not skin.any():
        return None
    blobs, n = ndimage.label(skin, structure=np.ones((3, 3), bool))
    # Blobs under a landmark are the face's (the face's own skin always is): only the others are measured.
    h, w = skin.shape
    at = np.clip(np.rint(pts).astype(int), 0, [w - 1, h - 1])
    face = set(np.unique(blobs[at[:, 1], at[:, 0]]).tolist())
    if face >= set(range(1, n + 1)):
        return None
    out = np.zeros_like(skin)
    for k, sl in enumerate(ndimage.find_objects(blobs), start=1):
        if k in face or (hull_distance(pts, np.argwhere(blobs[sl] == k) + [sl[0].start, sl[1].start]) <= reach).any():
            continue
        # The blob's box grown by the ring's width, clipped to the crop.
        sl = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in sl)
        blob = blobs[sl] == k
        ring = ndimage.binary_dilation(blob, iterations=2) & ~blob
        if ring.any() and background[sl][ring].mean() >= SKIN_RING:
            out[sl] |= blob
    return out if out.any() else None
