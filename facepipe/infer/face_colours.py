"""Each face's own colours settle the pixels the network is unsure of between background, hair and skin.

The network has learned these classes from 202 studio faces, mostly dark hair on light skin before a
plain wall, and on a face unlike them (light or grey hair, a gray or toned photo, a cluttered backdrop)
it hesitates between them. The face itself says what its hair, its skin and its surroundings look like:
the pixels the network is sure of (probability above SEED_PROB) are samples of each. A Gaussian over
(Y, B-Y, R-Y) is fitted to each class's sure pixels. On every pixel the network labels one of the
classes, colour speaks between that class and its runner-up among them: their log-likelihood ratio,
clipped to +-TAU and weighted by BETA, is added to the network's log-odds of the two, and the two
classes' summed probability is split again. Other classes (eyes, nose, mouth) are untouched.

BETA and TAU were chosen on three training-split sets (FASSEG train plain, pasted with a margin, and
pasted with recoloured hair) as the setting whose smallest gain over the three was largest, then tested
on FASSEG V2 test (docs/results.md, "Each face's own colours"). A stronger weight helps recoloured hair
more and costs real hair (its lighter strands are closer to skin than to the hair's sure core), so the
weight is small (at most half a nat): a sure network is never overruled by colour. Colour cannot tell
a backdrop from hair of the same colour, nor white hair from a lit forehead; there it does not help,
and a backdrop the network already hesitated on can get more hair.

Stray hair (drop_stray_hair): a hair blob that touches no part of the face is judged as a whole, by the
mean over its pixels of the same log-likelihood ratio, hair against background: one that looks more like
the face's backdrop than like its hair (fur on a collar, foliage, a painting, a brown backdrop) is not
hair. A long strand lying apart from the head keeps the hair's colours and stays. Judged per blob, the
evidence of hundreds of pixels adds up, so this step is decisive where the per-pixel weight is not.
"Touches no part of the face" alone, without the colour test, also took a strand of long hair away
(docs/results.md, "Tried and left: hair must touch the face").

Hair beyond the crop (drop_unlike_hair): the hair that parse's zoomed-out passes add outside the crop
(infer.beyond_crop) is judged the same way, piece by piece, in the crop that pass saw, with the first
crop's samples: a dress or a sweater below the hair goes, long hair stays. Like the stray blobs, dark
clothing below dark hair looks like hair and stays.
"""
from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from facepipe.util.schema import LabelSchema

CLASSES = ("background", "hair", "skin")  # the classes a face's colours speak for, where a schema has them
SEED_PROB = 0.9  # a pixel the network is this sure of is a sample of its class's colours
MIN_SEEDS = 200  # a class with fewer sure pixels (a bald head, a face filling the crop) gets no say
BETA, TAU = 0.125, 4.0
# A hair blob apart from the face whose pixels' mean log-likelihood ratio, hair against background, is
# below this looks more like the backdrop than like the face's hair (drop_stray_hair).
STRAY_MARGIN = 0.0
RIDGE = 4.0  # added to each variance (grey levels squared): gray photos have no chroma at all


class FaceColours:
    """The rule for one schema; `apply(probs, rgb)` changes probs (C x S x S) in place."""

    def __init__(self, schema: LabelSchema, beta: float = BETA, tau: float = TAU, stray_hair: bool = True):
        names = list(schema.classes)
        self.names = tuple(names)
        self.classes = [names.index(c) for c in CLASSES if c in names]
        self.beta, self.tau = float(beta), float(tau)
        # Stray hair needs both classes it weighs; schemas without them (or a test of the re-split alone) skip it.
        self.stray = (names.index("background"), names.index("hair")) if (
            stray_hair and {"background", "hair"} <= set(names)) else None

    @property
    def active(self) -> bool:
        return len(self.classes) >= 2

    def apply(self, probs: np.ndarray, rgb: np.ndarray, labels: np.ndarray | None = None,
              inside: np.ndarray | None = None) -> int:
        """Re-split the classes on one crop (probs C x S x S, changed in place; rgb S x S x 3 uint8, the crop
        the network saw), then take hair blobs apart from the face that look like the backdrop away from
        hair. labels: probs' argmax, when the caller has it; it is kept up to date. inside: the crop pixels
        within the photo (util.geometry.inside_photo), when the crop reaches beyond it: only they are
        samples of a class's colours. Returns how many pixels' argmax changed."""
        labels = probs.argmax(0) if labels is None else labels
        changed = self._resplit(probs, rgb, labels, inside)
        if self.stray is not None:
            changed += drop_stray_hair(probs, rgb, labels, *self.stray, self.tau, inside)
        return changed

    def _resplit(self, probs: np.ndarray, rgb: np.ndarray, labels: np.ndarray, inside: np.ndarray | None) -> int:
        seeds = {c: _within((labels == c) & (probs[c] > SEED_PROB), inside) for c in self.classes}
        cls = [c for c in self.classes if seeds[c].sum() >= MIN_SEEDS]
        if len(cls) < 2:
            return 0
        zone = np.isin(labels, cls)
        feat = ycc(rgb, zone)
        dens = np.stack([gaussian_log_density(feat, ycc(rgb, seeds[c])) for c in cls])
        p = np.stack([probs[c][zone] for c in cls])
        # The pixel's own class and its runner-up among these: colour speaks between the two only.
        a, b = _top_two(p)
        col = np.arange(p.shape[1])
        pa, pb = p[a, col], p[b, col]
        say = np.clip(dens[a, col] - dens[b, col], -self.tau, self.tau)
        odds = np.log(pa + 1e-6) - np.log(pb + 1e-6) + self.beta * say
        total = pa + pb
        new_a = total / (1 + np.exp(-odds))
        p[a, col], p[b, col] = new_a, total - new_a
        for k, c in enumerate(cls):
            probs[c][zone] = p[k]
        # The new argmax: the pair's winner, unless it fell below a class outside these (rare: a pixel
        # whose runner-up overall was an eye, say); the third of these never wins (its score is at most
        # the runner-up's, below half the pair's sum).
        keep = new_a >= total - new_a
        now = np.asarray(cls)[np.where(keep, a, b)]
        others = [c for c in range(probs.shape[0]) if c not in cls]
        if others:
            rest = functools.reduce(np.maximum, [probs[c] for c in others])[zone]
            low = np.flatnonzero(np.where(keep, new_a, total - new_a) < rest)
            if len(low):
                flat = np.flatnonzero(zone)[low]
                now[low] = probs.reshape(probs.shape[0], -1)[:, flat].argmax(0)
        changed = int((now != labels[zone]).sum())
        labels[zone] = now  # the caller's argmax stays the argmax
        return changed


def drop_stray_hair(probs: np.ndarray, rgb: np.ndarray, labels: np.ndarray, bg: int, hair: int,
                    tau: float = TAU, inside: np.ndarray | None = None) -> int:
    """Hair blobs (8-connected) that touch no other class than background (within 2 pixels) and whose
    pixels look more like the face's backdrop than like its hair (their mean log-likelihood ratio, each
    clipped to +-tau, below STRAY_MARGIN) are not hair: hair's probability there is zeroed and the
    network's next class taken. Hair seeds come from the hair touching the face only, so that the blobs
    judged do not vouch for themselves. Returns how many pixels changed."""
    is_hair = labels == hair
    blobs, n = ndimage.label(is_hair, structure=np.ones((3, 3), bool))
    if n < 2:
        return 0
    attached = _attached_hair(labels, blobs, bg, hair)
    apart = is_hair & ~attached
    samples = _samples(probs, rgb, labels, attached, bg, hair, inside) if apart.any() else None
    if samples is None:
        return 0
    mask = _unlike(blobs, n, apart, hair_llr(rgb, apart, samples, tau))
    if not mask.any():
        return 0
    probs[hair][mask] = 0
    labels[mask] = probs[:, mask].argmax(0)
    return int(mask.sum())


def hair_samples(probs: np.ndarray, rgb: np.ndarray, labels: np.ndarray, bg: int, hair: int,
                 inside: np.ndarray | None = None):
    """A face's colour samples ((3, M) Y, B-Y, R-Y arrays: its sure hair touching the face, its sure
    background, within the photo) from its crop (probs C x S x S, rgb, labels its argmax), as
    drop_stray_hair takes them; None when either has fewer than MIN_SEEDS pixels (no say)."""
    blobs, _ = ndimage.label(labels == hair, structure=np.ones((3, 3), bool))
    return _samples(probs, rgb, labels, _attached_hair(labels, blobs, bg, hair), bg, hair, inside)


def hair_llr(rgb: np.ndarray, mask: np.ndarray, samples, tau: float = TAU) -> np.ndarray:
    """Per pixel of rgb under mask: log-likelihood of the face's hair over its backdrop (hair_samples),
    clipped to +-tau."""
    feat = ycc(rgb, mask)
    return np.clip(gaussian_log_density(feat, samples[0]) - gaussian_log_density(feat, samples[1]), -tau, tau)


def drop_unlike_hair(mask: np.ndarray, rgb: np.ndarray, samples, tau: float = TAU) -> np.ndarray:
    """`mask` (S x S bool: hair a pass beyond the face's crop added, in that pass's crop, whose pixels are
    rgb) without its 8-connected pieces that look more like the face's backdrop than like its hair (mean
    log-likelihood ratio below STRAY_MARGIN, as drop_stray_hair judges a blob): a dress or a sweater below
    long hair. Unchanged without samples (hair_samples' None)."""
    if samples is None or not mask.any():
        return mask
    pieces, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return mask & ~_unlike(pieces, n, mask, hair_llr(rgb, mask, samples, tau))


def _attached_hair(labels: np.ndarray, blobs: np.ndarray, bg: int, hair: int) -> np.ndarray:
    """The hair blobs (ndimage labels of labels == hair) within 2 pixels of a part of the face."""
    face = ndimage.binary_dilation((labels != hair) & (labels != bg), iterations=2)
    near = np.unique(blobs[face & (labels == hair)])
    return np.isin(blobs, near[near > 0])


def _within(mask: np.ndarray, inside: np.ndarray | None) -> np.ndarray:
    """mask without the crop's fill beyond the photo: the black fill is not a colour of the backdrop (as
    a sample it widened the background's Gaussian toward black and dark hair; docs/results.md, "The
    fill beyond the photo is not a colour of the backdrop")."""
    return mask if inside is None else mask & inside


def _samples(probs, rgb, labels, attached, bg: int, hair: int, inside: np.ndarray | None = None):
    hair_seeds = _within(attached & (probs[hair] > SEED_PROB), inside)
    bg_seeds = _within((labels == bg) & (probs[bg] > SEED_PROB), inside)
    if hair_seeds.sum() < MIN_SEEDS or bg_seeds.sum() < MIN_SEEDS:
        return None
    return ycc(rgb, hair_seeds), ycc(rgb, bg_seeds)


def _unlike(pieces: np.ndarray, n: int, where: np.ndarray, llr: np.ndarray) -> np.ndarray:
    """The pixels of `where` in pieces (ndimage labels, n of them) whose mean llr (over where's pixels,
    in order) is below STRAY_MARGIN."""
    ids = pieces[where]
    mean = np.bincount(ids, llr, n + 1) / np.maximum(np.bincount(ids, minlength=n + 1), 1)
    return where & np.isin(pieces, np.flatnonzero(mean < STRAY_MARGIN))


def _top_two(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the largest and second largest of each column of p (2 or 3 rows), by comparisons:
    numpy's argmax down a short axis is slow."""
    hi = (p[1] > p[0]).astype(np.intp)
    lo = 1 - hi
    if len(p) == 2:
        return hi, lo
    top = np.maximum(p[0], p[1])
    low = np.minimum(p[0], p[1])
    third_top = p[2] > top
    a = np.where(third_top, 2, hi)
    b = np.where(third_top, hi, np.where(p[2] > low, 2, lo))
    return a, b


def ycc(rgb: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(3, N) float32 (Y, B-Y, R-Y), 0..255 scale (ITU-R 601 luma), of rgb's pixels (..., 3 uint8) where
    mask is set (all without one). Channels first: numpy is far faster along long rows than across 3."""
    r, g, b = (rgb[..., k] if mask is None else rgb[..., k][mask] for k in range(3))
    r, g, b = (v.astype(np.float32).ravel() for v in (r, g, b))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return np.stack([y, b - y, r - y])


def gaussian_log_density(x: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Log-density at x (3 x N) of the Gaussian fitted to samples (3 x M), up to the shared constant."""
    mu = samples.mean(1)
    cov = np.cov(samples) + RIDGE * np.eye(3)
    ic = np.linalg.inv(cov)
    d = [x[i] - np.float32(mu[i]) for i in range(3)]
    # The quadratic form written out over its 6 terms: each a pass over a contiguous row (a (N, 3) matrix
    # product summed across its short rows took 4x as long).
    q = (np.float32(ic[0, 0]) * d[0] * d[0] + np.float32(ic[1, 1]) * d[1] * d[1] + np.float32(ic[2, 2]) * d[2] * d[2]
         + np.float32(2 * ic[0, 1]) * d[0] * d[1] + np.float32(2 * ic[0, 2]) * d[0] * d[2]
         + np.float32(2 * ic[1, 2]) * d[1] * d[2])
    return -0.5 * q - np.float32(0.5 * np.linalg.slogdet(cov)[1])
