"""Background, hair and skin moved onto the photo's own edges: a guided filter of their probabilities.

The network decides at a quarter of the crop's resolution and its class scores are resized bilinearly,
so the boundaries between the large regions (hair against the backdrop, hair against the forehead, the
jaw against the collar) are smooth curves that cut across strands and edges. The guided filter (He, Sun
and Tang, "Guided image filtering", ECCV 2010) fits, in every window of (2 RADIUS + 1)^2 pixels, each
class's probability as a linear function of the crop's RGB, and averages the fits that cover a pixel:
where the photo has an edge the probability may change across it, where the photo is flat it may not.

Only background, hair and skin are filtered, and their summed probability is kept at every pixel: eyes,
nose and mouth are small, drawn again by the landmark prior later, and filtering them too cost eye F1
0.01 to 0.07 (docs/results.md, "Class boundaries on the crop's edges").

It runs for networks whose classifier works at stride 4 or coarser (coarse_head: the students, so the
bundled default and both its branches): it gained them 0.03 to 0.67 points of pixel accuracy on every
variant of the benchmark. The teacher (`accurate`) classifies at stride 2 and has less to gain: +0.34
on recoloured hair, but -0.11 to -0.20 on gray, sepia and light hair in gray photos, so it is left as
it was.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import uniform_filter

from facepipe.infer.predict import AtSide

# Chosen on three training-split sets (FASSEG train plain, pasted with a margin, pasted with recoloured
# hair) as the setting whose smallest gain over the three was largest (docs/results.md). EPS is in units
# of the guide's variance (RGB in 0..1): a window whose colours vary less than that is treated as flat.
RADIUS = 4
EPS = 1e-3
MIN_STRIDE = 4  # coarse_head: the classifier's stride from which the filter is applied


def head_stride(net) -> int | None:
    """The stride of the map a network classifies on, from its config (kept through BatchNorm folding);
    the finer of the two for a two-branch model (coarse only if both are); None for an architecture that
    does not say."""
    if isinstance(net, AtSide):
        return head_stride(net.net)
    color, gray = getattr(net, "color", None), getattr(net, "gray", None)
    if color is not None and gray is not None:  # models.gray_route.GrayRoute
        both = [head_stride(color), head_stride(gray)]
        return None if None in both else min(both)
    cfg = getattr(net, "config", None) or {}
    if "head_stride" in cfg:  # models.student
        return int(cfg["head_stride"])
    if "refine" in cfg:  # models.teacher: stride 2, or full resolution with its refine stage
        return 1 if cfg["refine"] else 2
    return None


def coarse_head(net) -> bool:
    """Whether parse and eval move this network's background, hair and skin onto the crop's edges."""
    s = head_stride(net)
    return s is not None and s >= MIN_STRIDE


def _box(a: np.ndarray, radius: int) -> np.ndarray:
    """Mean over each (2r+1)^2 window of the last two axes (edges repeated), for one map or a stack."""
    size = (1,) * (a.ndim - 2) + (2 * radius + 1,) * 2
    return uniform_filter(a, size=size, mode="nearest")


def _half(a: np.ndarray) -> np.ndarray:
    """Each 2x2 block of the last two axes averaged (sides even)."""
    return 0.25 * (a[..., ::2, ::2] + a[..., 1::2, ::2] + a[..., ::2, 1::2] + a[..., 1::2, 1::2])


def _double(a: np.ndarray) -> np.ndarray:
    """Bilinear 2x upsampling of the last two axes, pixel centres aligned (edges repeated): the inverse
    geometry of _half. torch's kernel: numpy's strided interleaving took 8 ms a face."""
    t = torch.from_numpy(np.ascontiguousarray(a)).reshape(-1, 1, *a.shape[-2:])
    return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False).reshape(
        *a.shape[:-2], 2 * a.shape[-2], 2 * a.shape[-1]).numpy()


def guided_filter(p: np.ndarray, rgb: np.ndarray, radius: int = RADIUS, eps: float = EPS,
                  fast: bool = True) -> np.ndarray:
    """(K, H, W) maps p filtered with the colour image rgb (H, W, 3 uint8) as guide; float32.

    fast (even sides only): the linear coefficients are fitted on the guide and maps halved, in windows
    of half the radius, and brought back to full size bilinearly before they are applied to the
    full-size guide (He and Sun, "Fast guided filter", 2015): a quarter of the work, edges kept sharp
    because the guide itself is never halved in the output."""
    full = rgb.astype(np.float32).transpose(2, 0, 1) / 255
    p = p.astype(np.float32, copy=False)
    fast = fast and full.shape[1] % 2 == 0 and full.shape[2] % 2 == 0
    guide, p, radius = (_half(full), _half(p), max(1, radius // 2)) if fast else (full, p, radius)
    box = lambda a: _box(a, radius)  # noqa: E731 (one radius for every mean below)
    mean_i = box(guide)
    # The guide's 3x3 covariance in each window, eps on the diagonal, and its inverse by cofactors
    # (symmetric: six entries). eps > 0 keeps it invertible on flat and gray windows.
    pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    prods = box(np.stack([guide[i] * guide[j] for i, j in pairs]))
    c = {ij: prods[k] - mean_i[ij[0]] * mean_i[ij[1]] + (eps if ij[0] == ij[1] else 0)
         for k, ij in enumerate(pairs)}
    c00, c01, c02, c11, c12, c22 = (c[ij] for ij in pairs)
    inv = np.stack([c11 * c22 - c12 * c12, c02 * c12 - c01 * c22, c01 * c12 - c02 * c11,
                    c00 * c22 - c02 * c02, c01 * c02 - c00 * c12, c00 * c11 - c01 * c01])
    det = c00 * inv[0] + c01 * inv[1] + c02 * inv[2]
    inv /= det
    i00, i01, i02, i11, i12, i22 = inv
    rows = ((i00, i01, i02), (i01, i11, i12), (i02, i12, i22))
    mean_p = box(p)
    ab = []
    for k in range(len(p)):
        cov_ip = box(guide * p[k]) - mean_i * mean_p[k]  # (3, h, w)
        a = np.stack([r0 * cov_ip[0] + r1 * cov_ip[1] + r2 * cov_ip[2] for r0, r1, r2 in rows])
        b = mean_p[k] - (a * mean_i).sum(0)
        ab.append(np.concatenate([a, b[None]]))
    ab = box(np.stack(ab))  # (K, 4, h, w): each coefficient averaged over the windows covering a pixel
    if fast:
        ab = _double(ab)
    return (ab[:, :3] * full[None]).sum(1) + ab[:, 3]


def _argmax0(p: np.ndarray) -> np.ndarray:
    """p.argmax(0) (first of equal maxima) for a few rows, by comparisons row after row: numpy's and torch's
    argmax down a short outer axis took 2-6 ms for a 6 x 256 x 256 crop, this 0.5 ms."""
    best, idx = p[0].copy(), np.zeros(p.shape[1:], np.intp)
    for k in range(1, len(p)):
        m = p[k] > best
        np.copyto(best, p[k], where=m)
        idx[m] = k
    return idx


def snap_to_edges(probs: np.ndarray, rgb: np.ndarray, classes: list[int], labels: np.ndarray | None = None,
                  radius: int = RADIUS, eps: float = EPS, fast: bool = True) -> int:
    """Filter the probabilities of `classes` (rows of probs, C x S x S, changed in place) with the crop rgb
    as guide, clipped at 0 and rescaled so that at every pixel they sum to what they summed to before
    (a pixel where the filter leaves all of them at 0 keeps the network's split). labels: probs' argmax,
    when the caller has it; it is kept up to date. Returns how many pixels' argmax changed."""
    if len(classes) < 2:
        return 0
    p = probs[classes]
    q = np.clip(guided_filter(p, rgb, radius, eps, fast), 0, None)
    total = q.sum(0)
    ok = total > 1e-6
    probs[classes] = np.where(ok, q * (p.sum(0) / np.where(ok, total, 1)), p)
    if labels is None:
        return 0
    now = _argmax0(probs)
    changed = int((now != labels).sum())
    labels[...] = now
    return changed
