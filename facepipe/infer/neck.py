"""The neck, which the aligned crop cuts and the network often misses, followed by the face's skin colour.

FASSEG, like most face-parsing sets without a neck class, labels the neck skin. The aligned crop ends a
little below the chin, so parse stopped a visible neck in a straight line there, and inside the crop
the network calls a shadowed neck background as often as skin (its zoomed-out second pass too). The
face's colours settle it: the skin the first pass is sure of gives a Gaussian over (Y, B-Y, R-Y), as in
infer.face_colours, and the neck continues it. A pixel is skin-like when
- the skin Gaussian explains it better than the background's and the hair's (the sure pixels of each in
  the first crop, as face_colours fits them), and
- it lies within MAX_DISTANCE (squared Mahalanobis distance) of the skin's colours: a beige wall that
  is merely nearer to skin than to a grey backdrop is not skin.
Skin-like pixels are opened (3x3) so that thin bridges (a collar's edge, a strand) do not carry the
growth, and only those connected to the face's main skin are kept. Two places:

- neck_in_crop, in the crop (a step of parse's face colours): background pixels below the chin
  (landmark 8) and between the jaw's ends (landmarks 4 and 12) become skin. It needs trusted landmarks.
- neck_below, below the crop (a step of parse's beyond-crop passes; no network pass: the zoomed-out crop
  is cut anyway, ZOOM times as wide around the same centre): in the columns under the skin that reaches
  the crop's bottom edge, widened by WIDEN of that span on each side (a neck is no wider than the jaw
  above it; shoulders are mostly clothed). parse paints these pixels only over background, and only
  where no other face's first crop reaches (the rule of the hair beyond the crop), so a face below keeps
  its own labels.

Only schemas with skin and without a neck class of their own (CelebAMask-HQ labels necks apart) get it.
In a gray or toned crop (the faces a gray branch takes) the test reads brightness only, and a white collar
passes it; there a skin-like pixel must also be no brighter than the skin's mean luma plus GRAY_CAP of its
standard deviations.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from facepipe.infer.beyond_crop import ZOOM, _inner_box, into_outer
from facepipe.infer.face_colours import MIN_SEEDS, RIDGE, SEED_PROB, gaussian_log_density, ycc
from facepipe.models.gray_route import colourless

MAX_DISTANCE = 16.0  # squared Mahalanobis distance from the skin's mean: 4 standard deviations
# In a crop without colour, no brighter than the skin's mean luma plus this many of its standard deviations
# (docs/results.md, "Black-and-white photos": 1 kept white collars out and shadowed necks in; 0.5 lost necks).
GRAY_CAP = 1.0
WIDEN = 0.25  # the bottom edge's skin span, widened by this share of itself on each side
_EIGHT = np.ones((3, 3), bool)
CHIN, JAW = 8, slice(4, 13)  # dlib's 68 points: the chin's tip; the jaw from below one ear to the other


def applies(classes) -> bool:
    return {"background", "hair", "skin"} <= set(classes) and "neck" not in classes


def bottom_skin(labels: np.ndarray, skin: int) -> np.ndarray | None:
    """The bottom row's pixels of the face's main (largest) skin component, or None when fewer than two
    of them reach the crop's bottom edge (nothing to continue)."""
    if not (labels[-1] == skin).any():  # the common case, decided without labelling blobs
        return None
    row = _main_skin(labels, skin)[-1]
    return row if row.sum() >= 2 else None


def _colours(probs: np.ndarray, labels: np.ndarray, crop: np.ndarray, classes):
    """(skin samples, [background and hair samples], luma cap or None) from the crop's sure pixels (3 x N
    each, ycc), or None when skin, or both others, have fewer than MIN_SEEDS. The cap, for a crop without
    colour (gray or toned: gray_route.colourless), is the skin's mean luma plus GRAY_CAP of its standard
    deviations: there brightness is all the test reads, and a white collar or a light shirt below the chin
    passes a two-sided test; a neck lies in the face's shadow, not above its brightness."""
    bg, hair, skin = (list(classes).index(c) for c in ("background", "hair", "skin"))
    seeds = {c: (labels == c) & (probs[c] > SEED_PROB) for c in (bg, hair, skin)}
    if seeds[skin].sum() < MIN_SEEDS:
        return None
    others = [ycc(crop, seeds[c]) for c in (bg, hair) if seeds[c].sum() >= MIN_SEEDS]
    if not others:
        return None
    samples = ycc(crop, seeds[skin])
    cap = float(samples[0].mean() + GRAY_CAP * samples[0].std()) if colourless(crop) else None
    return samples, others, cap


def _grow(rgb: np.ndarray, zone: np.ndarray, seed: np.ndarray, fit) -> np.ndarray:
    """The zone's skin-like pixels connected to `seed`, computed over the zone's bounding box (with a
    2-pixel rim: the same result as over the whole crop, since nothing outside the zone is a candidate)."""
    rows, cols = np.flatnonzero(zone.any(1)), np.flatnonzero(zone.any(0))
    r0, r1 = max(0, rows[0] - 2), min(zone.shape[0], rows[-1] + 3)
    c0, c1 = max(0, cols[0] - 2), min(zone.shape[1], cols[-1] + 3)
    box = np.s_[r0:r1, c0:c1]
    out = np.zeros(zone.shape, bool)
    out[box] = _connected(_skin_like(rgb[box], zone[box], fit), seed[box])
    return out


def _skin_like(rgb: np.ndarray, zone: np.ndarray, fit) -> np.ndarray:
    """Boolean map (rgb's shape) of the zone's pixels that the skin explains best, within MAX_DISTANCE,
    opened 3x3; with a luma cap (a colourless crop), those no brighter than it."""
    skin, others, cap = fit
    feat = ycc(rgb, zone)
    dens = gaussian_log_density(feat, skin)
    # gaussian_log_density is -q/2 - log|cov|/2: q, the squared Mahalanobis distance, from it.
    q = -2.0 * dens - np.linalg.slogdet(np.cov(skin) + RIDGE * np.eye(3))[1]
    best_other = np.max([gaussian_log_density(feat, o) for o in others], 0)
    like = np.zeros(zone.shape, bool)
    like[zone] = (dens > best_other) & (q < MAX_DISTANCE)
    like = ndimage.binary_opening(like, structure=_EIGHT)
    if cap is not None:  # after the opening, as measured (docs/results.md, "Black-and-white photos")
        like[zone] &= feat[0] <= cap
    return like


def _connected(cand: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The pixels of `cand` connected (8-way, through cand) to `seed`."""
    comp, _ = ndimage.label(cand | seed, structure=_EIGHT)
    keep = np.unique(comp[seed])
    return np.isin(comp, keep[keep > 0]) & cand


def _main_skin(labels: np.ndarray, skin: int) -> np.ndarray | None:
    comp, n = ndimage.label(labels == skin, structure=_EIGHT)
    if n == 0:
        return None
    return comp == np.argmax(np.bincount(comp.ravel())[1:]) + 1


def neck_in_crop(probs: np.ndarray, labels: np.ndarray, crop: np.ndarray, points, classes) -> int:
    """The neck inside the crop: background pixels below the chin and between the jaw's ends that are
    skin-like and connected to the face's main skin become skin (their background and skin probabilities
    swapped, so scores and labels agree). probs (C x S x S) and labels change in place; points: the 68
    landmarks in crop pixels (None or another count: nothing is done). Returns how many pixels changed."""
    if points is None or len(points) != 68 or not np.isfinite(points).all():
        return 0
    bg, skin = list(classes).index("background"), list(classes).index("skin")
    s = labels.shape[0]
    x0, x1 = int(np.floor(points[JAW, 0].min())), int(np.ceil(points[JAW, 0].max())) + 1
    y0 = int(np.ceil(points[CHIN, 1]))
    zone = np.zeros((s, s), bool)
    zone[max(0, y0):, max(0, x0):min(s, x1)] = True
    zone &= labels == bg
    if not zone.any():
        return 0
    fit = _colours(probs, labels, crop, classes)
    main = _main_skin(labels, skin)
    if fit is None or main is None:
        return 0
    add = _grow(crop, zone, main, fit)
    if add.any():
        probs[bg][add], probs[skin][add] = probs[skin][add], probs[bg][add]
        labels[add] = skin
    return int(add.sum())


def neck_below(probs: np.ndarray, labels: np.ndarray, crop: np.ndarray, outer: np.ndarray,
               classes) -> np.ndarray | None:
    """Boolean S x S mask, in the zoomed-out crop, of the skin that continues the face's below its crop,
    or None. probs, labels: the first pass's (after the face rules); crop, outer: the two crops' RGB."""
    row = bottom_skin(labels, list(classes).index("skin"))
    if row is None:
        return None
    fit = _colours(probs, labels, crop, classes)
    if fit is None:
        return None
    s = labels.shape[0]
    lo, hi = _inner_box(s, ZOOM)
    cols = np.flatnonzero(row)
    span = cols[-1] - cols[0] + 1
    c0 = max(0, int(np.floor(lo + (cols[0] - WIDEN * span) / ZOOM)))
    c1 = min(s, int(np.ceil(lo + (cols[-1] + WIDEN * span) / ZOOM)) + 1)
    zone = np.zeros((s, s), bool)
    zone[hi:, c0:c1] = True
    edge = np.zeros((s, s), bool)
    edge[-1] = row
    seed = into_outer(edge)
    grown = _grow(outer, zone, seed, fit)
    # The seed row too: where the first crop's warp back ends, its rim pixels interpolate to background,
    # and a line of them would cut the neck in two.
    return grown | seed if grown.any() else None
