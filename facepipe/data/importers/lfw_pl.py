"""LFW Part Labels (Kae et al. 2013) release layout.

root/lfw_funneled/<Person>/<Person>_NNNN.jpg (250x250 funneled photos) and
root/parts_lfw_funneled_gt_images/<Person>_NNNN.ppm, colour-coded hair (255,0,0), skin (0,255,0),
background (0,0,255), read by argmax over RGB. Splits: parts_train.txt (train), parts_validation.txt
(val), parts_test.txt (test), lines `<Person_Name> <number>` with the number not always zero-padded.
Only listed images that have a ground-truth image are imported: the other ~10,000 LFW photos have no
part labels. The superpixel files (parts_lfw_funneled_superpixels_mat/, parts_lfw_funneled_gt/*.dat)
are not needed and ignored.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facepipe.data.importers.common import Item, read_split_text
from facepipe.util.errors import FacepipeError
from facepipe.util.ids import safe_id
from facepipe.util.images import load_rgb_raw
from facepipe.util.schema import LFW_PL

SCHEMA = LFW_PL
SPLIT_FILES = (("parts_train.txt", "train"), ("parts_validation.txt", "val"), ("parts_test.txt", "test"))
IMAGES, GT = "lfw_funneled", "parts_lfw_funneled_gt_images"

LAYOUT = (f"expected {IMAGES}/<Person>/<Person>_NNNN.jpg, {GT}/<Person>_NNNN.ppm and "
          "parts_train.txt / parts_validation.txt / parts_test.txt; see docs/datasets.md")

# RGB channel (argmax) -> schema id: R is hair, G skin, B background.
_CHANNEL_TO_ID = np.array([LFW_PL.index("hair"), LFW_PL.index("skin"), LFW_PL.index("background")], np.uint8)


def read_label(path) -> np.ndarray:
    return _CHANNEL_TO_ID[load_rgb_raw(path).argmax(axis=2)]


def read_split_file(path: Path) -> list[tuple[str, str]]:
    """`<Person_Name> <number>` lines -> (person, image name `<Person_Name>_NNNN`)."""
    names = []
    for lineno, line in enumerate(read_split_text(path).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            person, number = parts[0], int(parts[1])
        except (IndexError, ValueError):
            raise FacepipeError(f"{path}:{lineno}: expected `<Person_Name> <number>`, got {line.strip()!r}.") from None
        names.append((person, f"{person}_{number:04d}"))
    return names


def items(src) -> list[Item]:
    src = Path(src)
    split_files = [(src / f, split) for f, split in SPLIT_FILES if (src / f).exists()]
    if not ((src / IMAGES).is_dir() and (src / GT).is_dir() and split_files):
        raise FacepipeError(f"{src} does not look like LFW Part Labels: {LAYOUT}.")
    out: list[Item] = []
    seen: set[str] = set()
    for path, split in split_files:
        for person, name in read_split_file(path):
            gt = src / GT / f"{name}.ppm"
            if name in seen or not gt.exists():
                continue
            seen.add(name)
            img = src / IMAGES / person / f"{name}.jpg"
            # A listed image whose photo is missing is kept: load_rgb reports it as skipped, with the path.
            out.append(Item(id=safe_id(name), image=img, split=split, label_fn=read_label, label_args=(gt,),
                            source=f"{IMAGES}/{person}/{name}.jpg"))
    if not out:
        raise FacepipeError(f"no image listed in {', '.join(p.name for p, _ in split_files)} has a ground-truth "
                            f"image in {src / GT}: {LAYOUT}.")
    return out
