"""FASSEG (Khan et al.): V2 "frontal02" and V3 "multipose01" release layouts.

V2: Train_RGB/, Train_Labels/, Test_RGB/, Test_Labels/ with the same file names.
V3: Train_RGB/<pose>/ and Train_labels/<pose>/ (13 poses, -90..+90). SRC may be the FASSEG root
holding any of V1/V2/V3, a single V folder, or any subset of their Train/Test folders. Labels are noisy
RGB colour images mapped to the nearest palette colour.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facepipe.data.importers.common import Item
from facepipe.util.errors import FacepipeError
from facepipe.util.ids import safe_id
from facepipe.util.images import IMAGE_SUFFIXES, load_rgb_raw, nearest_palette
from facepipe.util.schema import FASSEG

SCHEMA = FASSEG


def read_label(path) -> np.ndarray:
    return nearest_palette(load_rgb_raw(path), np.array(FASSEG.colors), name=Path(path).name)


def _find_ci(folder: Path, name: str) -> Path | None:
    """Case-insensitive child lookup (V2 says Train_Labels, V3 says Train_labels)."""
    for p in folder.iterdir():
        if p.is_dir() and p.name.lower() == name.lower():
            return p
    return None


def _version_dirs(src: Path) -> list[tuple[str, Path]]:
    kids = {p.name.upper(): p for p in src.iterdir() if p.is_dir()}
    found = [(k, kids[k]) for k in ("V1", "V2", "V3") if k in kids]
    if found:
        return found
    # SRC is itself one version folder (or holds only some Train/Test folders).
    return [(src.name.upper() if src.name.upper() in ("V1", "V2", "V3") else "FASSEG", src)]


def items(src) -> list[Item]:
    src = Path(src)
    if not src.is_dir():
        raise FacepipeError(f"FASSEG source {src} is not a folder.")
    out: list[Item] = []
    for version, vdir in _version_dirs(src):
        for split in ("Train", "Test"):
            rgb_dir = _find_ci(vdir, f"{split}_RGB")
            if rgb_dir is None:
                continue
            lab_dir = _find_ci(vdir, f"{split}_Labels")
            if lab_dir is None:
                raise FacepipeError(f"{rgb_dir} has no matching {split}_Labels folder beside it.")
            for img in sorted(p for p in rgb_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
                rel = img.relative_to(rgb_dir)
                lab = _match_label(lab_dir / rel)
                if lab is None:
                    raise FacepipeError(f"no label for {img} in {lab_dir / rel.parent}.")
                pose = rel.parent.as_posix() if rel.parent != Path(".") else ""
                iid = safe_id("_".join(x for x in (version.lower(), split.lower(), pose, img.stem) if x))
                out.append(Item(id=iid, image=img, split=split.lower(), label_fn=read_label,
                                label_args=(lab,), source=f"{version}/{img.relative_to(vdir).as_posix()}"))
    if not out:
        raise FacepipeError(
            f"{src} does not look like FASSEG: expected V2/ or V3/ holding Train_RGB/ and Train_Labels/ "
            "(or Test_*); see docs/datasets.md.")
    return out


def _match_label(path: Path) -> Path | None:
    if path.exists():
        return path
    for suf in IMAGE_SUFFIXES:
        cand = path.with_suffix(suf)
        if cand.exists():
            return cand
    return None
