"""The common imported layout every dataset is converted into.

OUT/
  images/<id>.(jpg|png)   the photo, EXIF rotation applied (clean RGB JPEGs are copied byte for byte)
  labels/<id>.png         uint8 label ids of the dataset's schema (255 = ignore); absent if unlabelled
  landmarks/<id>.txt      dataset landmarks when the release has them: "N" then N lines "x y"
  items.jsonl             one line per item: id, image, label, split, width, height, source
  splits.json             {"train": [...], "test": [...], ...}
  schema.json             the label schema
  manifest.json           written last

A format module yields `Item`s: what to read and how to turn its label into ids. The conversion
runs in worker processes, so label readers are plain module-level functions with picklable args.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from facepipe.util.atomic import atomic_path, save_image, write_json, write_text
from facepipe.util.errors import BadImage, FacepipeError
from facepipe.util.images import load_rgb
from facepipe.util.landmark_txt import read_small_text, write_landmark_txt
from facepipe.util.manifest import StageOutput, config_dict
from facepipe.util.pool import run_jobs
from facepipe.util.progress import SILENT, Reporter
from facepipe.util.schema import LabelSchema


@dataclass
class Item:
    id: str
    image: Path
    split: str
    label_fn: Callable | None = None  # label_fn(*label_args) -> HxW uint8 ids
    label_args: tuple = ()
    landmarks: np.ndarray | None = None  # (N, 2) dataset landmarks
    source: str = ""


@dataclass(frozen=True)
class ImportConfig:
    format: str
    src: str
    out: str = field(metadata={"identity": False})
    workers: int = field(default=0, metadata={"identity": False})
    max_bad: float = field(default=0.1, metadata={"identity": False})
    force: bool = field(default=False, metadata={"identity": False})


def _is_clean_jpeg(path: Path) -> bool:
    if path.suffix.lower() not in (".jpg", ".jpeg"):
        return False
    try:
        with Image.open(path) as im:
            return im.mode == "RGB" and im.getexif().get(0x0112, 1) == 1
    except Exception:
        return False


def convert_item(item: Item, out: Path) -> dict:
    """Write one item into the common layout; returns its items.jsonl record. Raises BadImage."""
    rgb = load_rgb(item.image)
    h, w = rgb.shape[:2]
    rec = {"id": item.id, "split": item.split, "width": w, "height": h, "source": item.source or str(item.image)}
    labels = None
    if item.label_fn is not None:
        labels = item.label_fn(*item.label_args)
        if labels.shape != (h, w):
            raise BadImage(f"{item.id}: label is {labels.shape[1]}x{labels.shape[0]} but image is {w}x{h}")
    if _is_clean_jpeg(item.image):
        name = f"images/{item.id}.jpg"
        with atomic_path(out / name) as tmp:
            shutil.copyfile(item.image, tmp)
    else:
        name = f"images/{item.id}.png"
        save_image(out / name, rgb)
    rec["image"] = name
    if item.landmarks is not None:
        write_landmark_txt(out / f"landmarks/{item.id}.txt", item.landmarks)
        rec["landmarks"] = f"landmarks/{item.id}.txt"
    if labels is not None:
        # Written last: its presence marks the item complete for resume.
        save_image(out / f"labels/{item.id}.png", labels.astype(np.uint8))
        rec["label"] = f"labels/{item.id}.png"
    write_json(out / f"records/{item.id}.json", rec)
    return rec


def _convert_safe(args):
    item, out = args
    try:
        return item.id, convert_item(item, out), None
    except BadImage as e:
        return item.id, None, str(e)


def run_import(cfg: ImportConfig, items: list[Item], schema: LabelSchema, reporter: Reporter = SILENT) -> dict:
    """Convert `items` into cfg.out; resumable; returns the manifest."""
    out = Path(cfg.out)
    if not items:
        raise FacepipeError(f"no images found in {cfg.src} for format {cfg.format}.")
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise FacepipeError(f"two images map to the same id {dup!r} in {cfg.src}.")
    with StageOutput(out, "import", config_dict(cfg), force=cfg.force) as so:
        if so.state == "done":
            return so.manifest
        todo, records = [], {}
        for it in items:
            rec_path = out / "records" / f"{it.id}.json"
            if rec_path.exists():
                records[it.id] = json.loads(rec_path.read_text())
            else:
                todo.append(it)
        skipped = []
        workers = cfg.workers or min(os.cpu_count() or 1, 8)
        with reporter.task(f"import {cfg.format}", len(items)) as advance:
            advance(len(items) - len(todo))
            for result in run_jobs(_convert_safe, [(it, out) for it in todo], workers, min_jobs=9, chunksize=4):
                _collect(*result, records, skipped)
                advance()
        bad = len(skipped)
        if bad > cfg.max_bad * len(items):
            raise FacepipeError(
                f"{bad} of {len(items)} images could not be imported (first: {skipped[0]['reason']}); "
                "is this the right format and folder?")
        ordered = [records[i] for i in ids if i in records]
        write_text(out / "items.jsonl", "".join(json.dumps(r) + "\n" for r in ordered))
        splits: dict[str, list[str]] = {}
        for r in ordered:
            splits.setdefault(r["split"], []).append(r["id"])
        write_json(out / "splits.json", splits)
        schema.save(out / "schema.json")
        counts = {"images": len(ordered), "labelled": sum("label" in r for r in ordered), "skipped": bad}
        counts.update({f"split_{k}": len(v) for k, v in splits.items()})
        return so.finish(inputs={"src": str(Path(cfg.src).resolve())}, counts=counts, skipped=skipped,
                         extra={"schema": schema.name, "format": cfg.format})


def _collect(iid, rec, err, records, skipped):
    if err is None:
        records[iid] = rec
    else:
        skipped.append({"id": iid, "reason": err})


def read_items(folder) -> list[dict]:
    """items.jsonl of an imported folder."""
    path = Path(folder) / "items.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_split_text(path) -> str:
    """A split or mapping file (CelebA's partition list is ~3 MB); unreadable ones are one clear error."""
    try:
        return read_small_text(path, 64 << 20)
    except OSError as e:
        raise FacepipeError(f"cannot read {path}: {e.strerror or e}.") from None


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FacepipeError(f"{what} not found: expected folder {path}.")
    return path
