"""Skin beyond the crop: the neck below the face's crop, followed by the face's own skin colour.

The aligned crop ends a little below the chin, so parse used to stop a visible neck in a straight line
there (FASSEG, like most face-parsing sets without a neck class, labels the neck skin). The network's
second pass over the zoomed-out crop does not help: it calls a shadowed neck background as often as
skin. The face's colours do: the skin the first pass is sure of gives a Gaussian over (Y, B-Y, R-Y), as
in infer.face_colours, and the neck continues it.

In the zoomed-out crop (infer.beyond_crop: ZOOM times as wide, same centre; no network pass needed, its
pixels are cut anyway), a pixel below the first crop is a candidate when
- the skin Gaussian explains it better than the background's and the hair's (the sure pixels of each in
  the first crop, as face_colours fits them), and
- it lies within MAX_DISTANCE (squared Mahalanobis distance) of the skin's colours: a beige wall that
  is merely nearer to skin than to a grey backdrop is not skin;
- and it lies in the columns under the skin that reaches the crop's bottom edge, widened by WIDEN of
  that span on each side (a neck is no wider than the jaw above it; shoulders are mostly clothed).
Candidates are opened (3x3) so that thin bridges (a collar's edge, a strand between two regions) do not
carry the growth, and the candidate blobs connected to the bottom edge's skin of the face's main skin
component are kept. parse paints them only over background, and only where no face's first crop
reaches (the same rule as the hair beyond the crop), so a face below keeps its own labels.

Only schemas with skin and without a neck class of their own (CelebAMask-HQ labels necks apart) get it.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from facepipe.infer.beyond_crop import ZOOM, _inner_box, into_outer
from facepipe.infer.face_colours import MIN_SEEDS, RIDGE, SEED_PROB, gaussian_log_density, ycc

MAX_DISTANCE = 16.0  # squared Mahalanobis distance from the skin's mean: 4 standard deviations
WIDEN = 0.25  # the bottom edge's skin span, widened by this share of itself on each side
_EIGHT = np.ones((3, 3), bool)


def applies(classes) -> bool:
    return {"background", "hair", "skin"} <= set(classes) and "neck" not in classes


def bottom_skin(labels: np.ndarray, skin: int) -> np.ndarray | None:
    """The bottom row's pixels of the face's main (largest) skin component, or None when fewer than two
    of them reach the crop's bottom edge (nothing to continue)."""
    if not (labels[-1] == skin).any():  # the common case, decided without labelling blobs
        return None
    comp, n = ndimage.label(labels == skin, structure=_EIGHT)
    main = np.argmax(np.bincount(comp.ravel())[1:]) + 1
    row = comp[-1] == main
    return row if row.sum() >= 2 else None


def skin_beyond(probs: np.ndarray, labels: np.ndarray, crop: np.ndarray, outer: np.ndarray,
                classes) -> np.ndarray | None:
    """Boolean S x S mask, in the zoomed-out crop, of the skin that continues the face's below its crop,
    or None. probs, labels: the first pass's (after the face rules); crop, outer: the two crops' RGB."""
    bg, hair, skin = (list(classes).index(c) for c in ("background", "hair", "skin"))
    row = bottom_skin(labels, skin)
    if row is None:
        return None
    seeds = {c: (labels == c) & (probs[c] > SEED_PROB) for c in (bg, hair, skin)}
    if seeds[skin].sum() < MIN_SEEDS:
        return None
    others = [c for c in (bg, hair) if seeds[c].sum() >= MIN_SEEDS]
    if not others:
        return None
    s = labels.shape[0]
    lo, hi = _inner_box(s, ZOOM)
    cols = np.flatnonzero(row)
    span = cols[-1] - cols[0] + 1
    c0 = max(0, int(np.floor(lo + (cols[0] - WIDEN * span) / ZOOM)))
    c1 = min(s, int(np.ceil(lo + (cols[-1] + WIDEN * span) / ZOOM)) + 1)
    zone = np.zeros((s, s), bool)
    zone[hi:, c0:c1] = True
    if not zone.any():
        return None
    feat = ycc(outer, zone)
    sk = ycc(crop, seeds[skin])
    dens = gaussian_log_density(feat, sk)
    # gaussian_log_density is -q/2 - log|cov|/2: q, the squared Mahalanobis distance, from it.
    q = -2.0 * dens - np.linalg.slogdet(np.cov(sk) + RIDGE * np.eye(3))[1]
    best_other = np.max([gaussian_log_density(feat, ycc(crop, seeds[c])) for c in others], 0)
    cand = np.zeros((s, s), bool)
    cand[zone] = (dens > best_other) & (q < MAX_DISTANCE)
    cand = ndimage.binary_opening(cand, structure=_EIGHT)
    edge = np.zeros((s, s), bool)
    edge[-1] = row
    seed = into_outer(edge)
    comp, n = ndimage.label(cand | seed, structure=_EIGHT)
    keep = np.unique(comp[seed])
    grown = np.isin(comp, keep[keep > 0]) & zone
    # The seed row too: where the first crop's warp back ends, its rim pixels interpolate to background,
    # and a line of them would cut the neck in two.
    return grown | seed if grown.any() else None
