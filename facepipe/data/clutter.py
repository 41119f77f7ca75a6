"""Procedural clutter: drawn backdrops with the textures that real ones confuse with hair and skin.

The wallpaper photos that `backgrounds` gathers from Debian's packages are mostly smooth abstract art;
few show grass, leaves or branches up close. A network trained on them learns "fine strokes next to
a face = hair": on the robustness benchmark, dry grass behind a head becomes hair, in grayscale most of
all. These drawings put strokes, leaves and out-of-focus lights behind the faces instead, in natural and
in arbitrary colours, so that texture alone stops meaning hair. Measured on the default student
(docs/results.md, "Grayscale or F1"): backdrop turned hair falls, but grayscale hair is then taken for
backdrop more often, so the default's recipe does not use them. They are drawn from a seed with Pillow
and numpy: no file is downloaded, and the same seed gives the same pixels.

Kinds:
  grass    thousands of thin, slightly bent strokes, mostly upright (or at any angle: straw, twigs);
  foliage  overlapping leaf-shaped ellipses at many sizes, with dark gaps between them;
  bokeh    out-of-focus discs of light over a blurred gradient;
  mixed    foliage behind grass.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

KINDS = ("grass", "foliage", "bokeh", "mixed")
# Natural palettes (greens, dry grass, browns, greys) most of the time; any colour the rest.
_NATURE = ((70, 120, 40), (150, 160, 60), (190, 170, 110), (120, 90, 50), (140, 140, 135), (40, 80, 45))


def clutter(kind: str, seed: int, width: int = 640, height: int = 480) -> np.ndarray:
    """(height, width, 3) uint8 drawing of `kind`, a pure function of (kind, seed, size)."""
    if kind not in KINDS:
        raise ValueError(f"unknown clutter kind {kind!r}; known: {', '.join(KINDS)}")
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    base = _palette(rng)
    im = _gradient(rng, base, width, height)
    if kind in ("foliage", "mixed"):
        _leaves(im, rng, base)
    if kind in ("grass", "mixed"):
        _strokes(im, rng, base, upright=rng.random() < 0.7)
    if kind == "bokeh":
        im = _bokeh(im, rng, base)
    sigma = float(rng.uniform(0, 1.2))  # some in focus, some soft
    if sigma > 0.3:
        im = im.filter(ImageFilter.GaussianBlur(sigma))
    return np.asarray(im)


def _palette(rng) -> np.ndarray:
    if rng.random() < 0.75:
        c = np.array(_NATURE[rng.integers(len(_NATURE))], float)
        return np.clip(c * rng.uniform(0.6, 1.3) + rng.normal(0, 12, 3), 0, 255)
    return rng.uniform(20, 235, 3)


def _shade(rng, base, spread: float = 0.45) -> tuple[int, int, int]:
    """A colour near `base`: brighter or darker, a little off in hue."""
    c = base * rng.uniform(1 - spread, 1 + spread) + rng.normal(0, 14, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _gradient(rng, base, w: int, h: int) -> Image.Image:
    top, bottom = np.array(_shade(rng, base, 0.6), float), np.array(_shade(rng, base, 0.6), float)
    t = np.linspace(0, 1, h)[:, None, None]
    arr = (top * (1 - t) + bottom * t) * np.ones((1, w, 1))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _strokes(im: Image.Image, rng, base, upright: bool) -> None:
    d = ImageDraw.Draw(im)
    w, h = im.size
    for _ in range(int(rng.integers(1500, 4000))):
        x, y = rng.uniform(-20, w + 20), rng.uniform(-20, h + 40)
        length = rng.uniform(15, 160)
        angle = rng.normal(-math.pi / 2, 0.35) if upright else rng.uniform(0, 2 * math.pi)
        bend = rng.normal(0, 0.25)
        pts = []
        for k in range(5):  # a gently bent blade: the angle drifts along it
            a = angle + bend * k / 4
            pts.append((x, y))
            x, y = x + math.cos(a) * length / 4, y + math.sin(a) * length / 4
        pts.append((x, y))
        d.line(pts, fill=_shade(rng, base), width=int(rng.integers(1, 5)))


def _leaves(im: Image.Image, rng, base) -> None:
    d = ImageDraw.Draw(im)
    w, h = im.size
    for _ in range(int(rng.integers(300, 1200))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        a, b = rng.uniform(6, 45), rng.uniform(3, 18)
        th = rng.uniform(0, math.pi)
        t = np.linspace(0, 2 * math.pi, 16, endpoint=False)
        px = cx + a * np.cos(t) * math.cos(th) - b * np.sin(t) * math.sin(th)
        py = cy + a * np.cos(t) * math.sin(th) + b * np.sin(t) * math.cos(th)
        d.polygon(list(zip(px.tolist(), py.tolist())), fill=_shade(rng, base, 0.6))


def _bokeh(im: Image.Image, rng, base) -> Image.Image:
    im = im.filter(ImageFilter.GaussianBlur(8))
    layer = im.copy()
    d = ImageDraw.Draw(layer)
    w, h = im.size
    for _ in range(int(rng.integers(20, 120))):
        r = rng.uniform(8, 70)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_shade(rng, base, 0.8))
    return Image.blend(im, layer.filter(ImageFilter.GaussianBlur(rng.uniform(2, 6))), 0.7)
