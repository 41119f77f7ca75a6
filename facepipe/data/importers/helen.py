"""Helen (Smith et al. 2013), the "SmithCVPR2013_dataset_resized" release layout.

root/images/<name>.jpg and root/labels/<name>/<name>_lbl00.png .. _lbl10.png: eleven grayscale label
probability maps per image (0 = 0.0, 255 = 1.0). The label map is their argmax, ties going to the
lowest index (np.argmax's rule), so a pixel where every map is 0 is background. Splits come from
exemplars.txt (train), tuning.txt (val) and testing.txt (test), lines `<index> , <name>`; images in
none of them are imported with split "unlisted".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facepipe.data.importers.common import Item, read_split_text
from facepipe.util.errors import BadImage, FacepipeError
from facepipe.util.ids import safe_id
from facepipe.util.images import IMAGE_SUFFIXES, load_rgb_raw
from facepipe.util.schema import HELEN

SCHEMA = HELEN
SPLIT_FILES = (("exemplars.txt", "train"), ("tuning.txt", "val"), ("testing.txt", "test"))

LAYOUT = ("expected images/<name>.jpg, labels/<name>/<name>_lbl00.png .. _lbl10.png and exemplars.txt / "
          "tuning.txt / testing.txt (SmithCVPR2013_dataset_resized); see docs/datasets.md")


def read_label(label_dir, name: str) -> np.ndarray:
    """Argmax over the 11 probability maps of one image."""
    maps = []
    for k in range(SCHEMA.num_classes):
        path = Path(label_dir) / f"{name}_lbl{k:02d}.png"
        if not path.exists():
            raise BadImage(f"{name}: probability map {path.name} is missing from {Path(label_dir)}")
        # Through load_rgb_raw so palette or 16-bit maps still read as 0..255 intensities.
        m = load_rgb_raw(path)[..., 0]
        if maps and m.shape != maps[0].shape:
            raise BadImage(f"{name}: {path.name} is {m.shape[1]}x{m.shape[0]} but "
                           f"{name}_lbl00.png is {maps[0].shape[1]}x{maps[0].shape[0]}")
        maps.append(m)
    return np.stack(maps).argmax(axis=0).astype(np.uint8)


def read_split_file(path: Path) -> list[str]:
    """Names from `<index> , <name>` lines; spacing around the comma does not matter."""
    names = []
    for line in read_split_text(path).splitlines():
        line = line.strip()
        if not line:
            continue
        name = line.split(",", 1)[1] if "," in line else line.split()[-1]
        name = name.strip()
        if Path(name).suffix.lower() in IMAGE_SUFFIXES:
            name = Path(name).stem
        if name:
            names.append(name)
    return names


def _splits(src: Path) -> dict[str, str]:
    """name -> split (the first split file listing a name wins)."""
    out: dict[str, str] = {}
    for fname, split in SPLIT_FILES:
        path = src / fname
        if path.exists():
            for name in read_split_file(path):
                out.setdefault(name, split)
    return out


def items(src) -> list[Item]:
    src = Path(src)
    images, labels = src / "images", src / "labels"
    if not (images.is_dir() and labels.is_dir()):
        raise FacepipeError(f"{src} does not look like Helen: {LAYOUT}.")
    splits = _splits(src)
    out = [
        Item(id=safe_id(img.stem), image=img, split=splits.get(img.stem, "unlisted"), label_fn=read_label,
             label_args=(labels / img.stem, img.stem), source=f"images/{img.name}")
        for img in sorted(p for p in images.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    ]
    if not out:
        raise FacepipeError(f"{images} holds no images: {LAYOUT}.")
    return out
