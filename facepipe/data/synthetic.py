"""Procedurally drawn labelled faces: the embedded default data set and the tests' fixtures.

Nothing is downloaded or committed: faces are drawn from a seed with PIL (background, hair, skin,
eyes, nose, mouth in the FASSEG schema), under a random similarity pose, and carry their own 5
canonical landmarks (eye centres, nose tip, mouth corners), so the pipeline can align them without a
detector. They are cartoons; they prove the plumbing, not accuracy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from facepipe.util.atomic import save_image, write_json, write_text
from facepipe.util.schema import FASSEG

BG, HAIR, SKIN, EYES, NOSE, MOUTH = range(6)


def draw_face(rng: np.random.Generator, width: int = 200, height: int = 240):
    """One face: (rgb HxWx3 uint8, labels HxW uint8, landmarks 5x2 float in photo pixels)."""
    s = 4  # draw at 4x and shrink: smooth edges without anti-aliasing the label map
    W, H = width * s, height * s
    cx, cy = W / 2 + rng.uniform(-0.08, 0.08) * W, H * rng.uniform(0.48, 0.56)
    fw, fh = W * rng.uniform(0.26, 0.34), H * rng.uniform(0.30, 0.36)
    ang = np.deg2rad(rng.uniform(-15, 15))
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])

    def P(x, y):  # face-local (units of the face half-width/height) -> canvas pixels
        v = rot @ np.array([x * fw, y * fh])
        return float(cx + v[0]), float(cy + v[1])

    def ellipse(x, y, rx, ry, n=40):
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return [P(x + rx * np.cos(a), y + ry * np.sin(a)) for a in t]

    bg = tuple(int(v) for v in rng.integers(60, 230, 3))
    hair_c = tuple(int(v) for v in rng.integers(10, 120, 3))
    skin_c = tuple(int(v) for v in np.array([225, 180, 150]) * rng.uniform(0.5, 1.05))
    img = Image.new("RGB", (W, H), bg)
    lab = Image.new("L", (W, H), BG)
    di, dl = ImageDraw.Draw(img), ImageDraw.Draw(lab)

    def fill(poly, colour, cls):
        di.polygon(poly, fill=colour)
        dl.polygon(poly, fill=cls)

    fill(ellipse(0, -0.25, 1.25, 1.05), hair_c, HAIR)
    fill(ellipse(0, 0.08, 1.0, 1.0), skin_c, SKIN)
    ey, ex = -0.18, 0.38
    for sx in (-1, 1):
        fill(ellipse(sx * ex, ey, 0.17, 0.08), (250, 250, 250), EYES)
        di.polygon(ellipse(sx * ex, ey, 0.06, 0.06, 16), fill=(40, 30, 20))
    nose_tip = (0.0, 0.22)
    fill([P(-0.05, -0.12), P(0.05, -0.12), P(0.14, 0.26), P(-0.14, 0.26)],
         tuple(int(c * 0.88) for c in skin_c), NOSE)
    my, mx = 0.50, 0.30
    fill(ellipse(0, my, mx, 0.09), (170, 50, 60), MOUTH)
    lm = np.array([P(-ex, ey), P(ex, ey), P(*nose_tip), P(-mx, my), P(mx, my)]) / s
    img = img.filter(ImageFilter.GaussianBlur(1.5)).resize((width, height), Image.BILINEAR)
    lab = lab.resize((width, height), Image.NEAREST)
    rgb = np.asarray(img).astype(np.int16) + rng.normal(0, 6, (height, width, 3)).astype(np.int16)
    return np.clip(rgb, 0, 255).astype(np.uint8), np.asarray(lab), lm


def write_folder_set(out, n: int = 24, test_fraction: float = 0.25, seed: int = 0, size=(200, 240),
                     labelled: bool = True) -> Path:
    """A set in the `folder` import format (images/, labels/, landmarks/, schema.json, splits.json).

    labelled=False leaves labels/ out (the importer then imports the faces unlabelled) and puts every
    face in "train": the unlabelled pool that pseudolabel and distill take. splits.json is written
    last, so a caller can take it as the sign that the set is complete."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    splits = {"train": [], "test": []}
    n_test = int(round(n * test_fraction)) if labelled else 0
    for i in range(n):
        rgb, lab, lm = draw_face(rng, *size)
        stem = f"face{i:03d}"
        save_image(out / "images" / f"{stem}.png", rgb)
        if labelled:
            save_image(out / "labels" / f"{stem}.png", lab)
        write_text(out / "landmarks" / f"{stem}.txt", "5\n" + "".join(f"{x:.2f} {y:.2f}\n" for x, y in lm))
        splits["test" if i < n_test else "train"].append(stem)
    FASSEG.save(out / "schema.json")
    write_json(out / "splits.json", splits if labelled else {"train": splits["train"]})
    return out
