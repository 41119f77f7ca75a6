"""A user's own labelled set: SRC/images/, SRC/labels/ (single-channel ids, same stem), SRC/schema.json.

Optional: SRC/splits.json ({"train": [stems], "test": [...]}) or SRC/<split>.txt files listing stems;
without them every image is "train". Optional SRC/landmarks/<stem>.txt (N, then N "x y" lines).
Images without a label file are imported unlabelled.
"""
from __future__ import annotations

import json
from pathlib import Path

from facepipe.data.importers.common import Item, read_split_text, require_dir
from facepipe.util.errors import BadImage, FacepipeError
from facepipe.util.ids import safe_id
from facepipe.util.images import IMAGE_SUFFIXES, load_ids
from facepipe.util.landmark_txt import read_landmark_txt
from facepipe.util.schema import load_schema


def schema_for(src):
    path = Path(src) / "schema.json"
    if not path.exists():
        raise FacepipeError(
            f"{src} has no schema.json: expected images/, labels/ (single-channel ids, same stems) and a "
            'schema.json such as {"name": "mine", "classes": ["background", "skin"], '
            '"colors": [[0, 0, 0], [255, 200, 150]]}.')
    return load_schema(path)


def read_label(path, num_classes: int):
    ids = load_ids(path)
    bad = (ids >= num_classes) & (ids != 255)
    if bad.any():
        raise BadImage(f"{Path(path).name}: label id {int(ids[bad][0])} is not in the schema "
                       f"({num_classes} classes)")
    return ids


def _splits(src: Path) -> dict[str, str]:
    """stem -> split."""
    out = {}
    sj = src / "splits.json"
    if sj.exists():
        try:
            d = json.loads(read_split_text(sj))
            for split, stems in d.items():
                for s in stems:
                    out[str(s)] = str(split)
        except (ValueError, AttributeError, TypeError) as e:
            raise FacepipeError(f"{sj} is not a valid splits file ({e}).") from None
        return out
    for txt in sorted(src.glob("*.txt")):
        for line in read_split_text(txt).splitlines():
            if line.strip():
                out[line.strip()] = txt.stem
    return out


def items(src) -> list[Item]:
    src = Path(src)
    images = require_dir(src / "images", "images/ folder")
    labels = src / "labels"
    schema = schema_for(src)
    splits = _splits(src)
    out = []
    for img in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        lab = next((labels / (img.stem + s) for s in (".png", ".bmp", ".tif", ".tiff")
                    if (labels / (img.stem + s)).exists()), None)
        lm_path = src / "landmarks" / f"{img.stem}.txt"
        out.append(Item(
            id=safe_id(img.stem), image=img, split=splits.get(img.stem, "train" if not splits else "unlisted"),
            label_fn=read_label if lab else None, label_args=(lab, schema.num_classes) if lab else (),
            landmarks=read_landmark_txt(lm_path) if lm_path.exists() else None))
    return out
