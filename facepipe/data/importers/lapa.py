"""LaPa (Liu et al. 2020) release layout.

root/{train,val,test}/images/<n>.jpg, labels/<n>.png (single-channel ids 0..10, Helen's classes) and
landmarks/<n>.txt (106, then 106 `x y` pairs). SRC may hold any subset of the three split folders.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facepipe.data.importers.common import Item
from facepipe.util.errors import BadImage, FacepipeError
from facepipe.util.ids import safe_id
from facepipe.util.images import IMAGE_SUFFIXES, load_ids
from facepipe.util.landmark_txt import read_landmark_txt
from facepipe.util.schema import IGNORE, LAPA

SCHEMA = LAPA
SPLITS = ("train", "val", "test")

LAYOUT = ("expected train/, val/ or test/, each holding images/<n>.jpg, labels/<n>.png and landmarks/<n>.txt; "
          "see docs/datasets.md")


def read_label(path, problem: str | None = None) -> np.ndarray:
    """Label ids of one image. `problem` carries a landmark error found while listing, raised here so
    that the item is skipped with its reason instead of the whole listing failing."""
    if problem:
        raise BadImage(problem)
    ids = load_ids(path)
    bad = (ids >= SCHEMA.num_classes) & (ids != IGNORE)
    if bad.any():
        raise BadImage(f"{Path(path).name}: label id {int(ids[bad][0])} is not a LaPa class "
                       f"(0..{SCHEMA.num_classes - 1})")
    return ids


def items(src) -> list[Item]:
    src = Path(src)
    out: list[Item] = []
    found = False
    for split in SPLITS:
        images = src / split / "images"
        if not images.is_dir():
            continue
        found = True
        for img in sorted(p for p in images.iterdir()
                          if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")):
            landmarks, problem = None, None
            lm_path = src / split / "landmarks" / f"{img.stem}.txt"
            if lm_path.exists():
                try:
                    landmarks = read_landmark_txt(lm_path)
                except BadImage as e:
                    problem = f"{split}/landmarks/{e}"
            out.append(Item(id=safe_id(f"{split}_{img.stem}"), image=img, split=split, label_fn=read_label,
                            label_args=(src / split / "labels" / f"{img.stem}.png", problem),
                            landmarks=landmarks, source=f"{split}/images/{img.name}"))
    if not found:
        raise FacepipeError(f"{src} does not look like LaPa: {LAYOUT}.")
    if not out:
        raise FacepipeError(f"{src} holds no images: {LAYOUT}.")
    return out
