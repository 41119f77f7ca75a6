"""CelebAMask-HQ (Lee et al. 2020) release layout.

root/CelebA-HQ-img/<id>.jpg (1024x1024) and root/CelebAMask-HQ-mask-anno/<id // 2000>/<%05d id>_<part>.png:
one 512x512 binary mask per part present (> 0 is the part, a missing file means the part is absent).
The masks are merged in the official order (g_mask.py: each part sets its id where its mask is set, later
parts overwrite earlier ones), going through part names so the ids are CELEBAMASK_HQ's whatever order
another project uses.

Label size: the label is 512x512 while the photo is 1024x1024. An Item's image is a path copied as
released, so the label is brought to the photo instead: upsampled with nearest neighbour (each label
pixel becomes a 2x2 block), which adds no new values and loses nothing; label[::2, ::2] is the released
512x512 map again. The official protocol scores at 512x512, so evaluation should resize the photo to
512 (antialiased) and compare against that subsampled map.

Split: CelebA-HQ-to-CelebA-mapping.txt (`idx orig_idx orig_file`) joined on orig_file with CelebA's
list_eval_partition.txt (`000001.jpg 0`; 0 train, 1 val, 2 test; put it in root or root/Eval/). The
second file is not part of the CelebAMask-HQ download: without either, every image is "unlisted".
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from facepipe.data.importers.common import Item, read_split_text
from facepipe.util.errors import BadImage, FacepipeError
from facepipe.util.ids import safe_id
from facepipe.util.images import load_rgb_raw
from facepipe.util.schema import CELEBAMASK_HQ

log = logging.getLogger(__name__)

SCHEMA = CELEBAMASK_HQ
IMAGES, MASKS = "CelebA-HQ-img", "CelebAMask-HQ-mask-anno"
MAPPING, PARTITION = "CelebA-HQ-to-CelebA-mapping.txt", "list_eval_partition.txt"
# The official merge order (CelebAMask-HQ face_parsing/Data_preprocessing/g_mask.py).
PARTS = ("skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth", "u_lip",
         "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth")
PARTITION_SPLITS = {0: "train", 1: "val", 2: "test"}

LAYOUT = (f"expected {IMAGES}/<id>.jpg and {MASKS}/<id // 2000>/<%05d id>_<part>.png; see docs/datasets.md")


def mask_dir(root: Path, idx: int) -> Path:
    return Path(root) / MASKS / str(idx // 2000)


def read_label(folder, idx: int, size: tuple[int, int] | None) -> np.ndarray:
    """Merge one image's part masks into ids, then upsample (nearest) to `size` = (width, height)."""
    labels = None
    for part in PARTS:
        path = Path(folder) / f"{idx:05d}_{part}.png"
        if not path.exists():
            continue
        # Any channel > 0: masks are grey 0/255, sometimes saved as RGB.
        mask = load_rgb_raw(path).max(axis=2) > 0
        if labels is None:
            labels = np.zeros(mask.shape, np.uint8)
        elif mask.shape != labels.shape:
            raise BadImage(f"{idx}: mask {path.name} is {mask.shape[1]}x{mask.shape[0]}, "
                           f"other masks are {labels.shape[1]}x{labels.shape[0]}")
        labels[mask] = SCHEMA.index(part)
    if labels is None:
        raise BadImage(f"{idx}: no mask files {idx:05d}_<part>.png in {folder}")
    if size is not None and (size[1], size[0]) != labels.shape:
        w, h = size
        rows = np.arange(h) * labels.shape[0] // h
        cols = np.arange(w) * labels.shape[1] // w
        labels = labels[rows[:, None], cols[None, :]]
    return np.ascontiguousarray(labels)


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the header only; None if unreadable (conversion then reports the image)."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:
        return None


def _key(file_name: str):
    """CelebA file names compare as numbers: `000001.jpg` and `1.jpg` are the same photo."""
    stem = Path(file_name.strip()).stem
    return int(stem) if stem.isdigit() else stem


def _splits(src: Path) -> dict[int, str]:
    """CelebA-HQ idx -> split, or {} when the mapping or partition file is absent."""
    mapping = src / MAPPING
    partition = next((p for p in (src / PARTITION, src / "Eval" / PARTITION) if p.exists()), None)
    if not mapping.exists() or partition is None:
        missing = MAPPING if not mapping.exists() else PARTITION
        log.warning("%s not found in %s: every image gets split 'unlisted'.", missing, src)
        return {}
    part: dict = {}
    for line in read_split_text(partition).splitlines():
        toks = line.split()
        if len(toks) >= 2 and toks[1].isdigit():
            part[_key(toks[0])] = PARTITION_SPLITS.get(int(toks[1]), "unlisted")
    out: dict[int, str] = {}
    for line in read_split_text(mapping).splitlines():
        toks = line.split()
        if len(toks) >= 3 and toks[0].isdigit():  # the header line `idx orig_idx orig_file` is skipped
            out[int(toks[0])] = part.get(_key(toks[2]), "unlisted")
    return out


def items(src) -> list[Item]:
    src = Path(src)
    images = src / IMAGES
    if not (images.is_dir() and (src / MASKS).is_dir()):
        raise FacepipeError(f"{src} does not look like CelebAMask-HQ: {LAYOUT}.")
    splits = _splits(src)
    paths = [p for p in images.iterdir() if p.is_file() and p.stem.isdigit() and p.suffix.lower() in (".jpg", ".png")]
    out = []
    for img in sorted(paths, key=lambda p: int(p.stem)):
        idx = int(img.stem)
        out.append(Item(id=safe_id(str(idx)), image=img, split=splits.get(idx, "unlisted"), label_fn=read_label,
                        label_args=(mask_dir(src, idx), idx, _image_size(img)), source=f"{IMAGES}/{img.name}"))
    if not out:
        raise FacepipeError(f"{images} holds no <id>.jpg images: {LAYOUT}.")
    return out
