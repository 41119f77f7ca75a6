"""Scores by head pose on a FASSEG cache, in photo coordinates, with the crop's own ceiling.

Usage: python tools/pose_table.py CACHE.h5 [MODEL ...] [--split test] [--json OUT.json]

Faces are grouped by the yaw in their FASSEG V3 id (|yaw| 0-15, 30-45, 60-75, 90; V2 photos are
"frontal V2"). For every group it prints pixel accuracy / overall F1 of
  - "crop ceiling": the cache's own crop labels warped back onto the photo, i.e. the best any model
    can score through this crop (what the crop cuts off, and the 256 px resampling, cost it);
  - each MODEL (run folder, checkpoint or bundled name), scored as `facepipe eval` scores it.
"no face found": faces HOG did not detect, which align fitted whole into the crop (mostly profiles).
"""
from __future__ import annotations

import argparse
import json
import re

import numpy as np

from facepipe.data.face_cache import FaceCache
from facepipe.infer.evaluate import evaluate_model
from facepipe.infer.model import LoadedModel
from facepipe.infer.predict import probs_to_photo
from facepipe.util.errors import FacepipeError
from facepipe.util.metrics import confusion, scores

YAW = re.compile(r"^v3_\w+?_([+-]?\d+)_")
GROUPS = ("frontal V2", "yaw 0-15", "yaw 30-45", "yaw 60-75", "yaw 90")


def pose_group(face_id: str) -> str:
    m = YAW.match(face_id)
    if not m:
        return "frontal V2"
    a = abs(int(m.group(1)))
    return "yaw 0-15" if a <= 15 else "yaw 30-45" if a <= 45 else "yaw 60-75" if a <= 75 else "yaw 90"


def ceiling(cache: str, split: str, schema) -> dict[str, np.ndarray]:
    """Per group, the confusion of the crop labels warped back against the photo labels."""
    ds = FaceCache(cache, split=split)
    f, n = ds.file, schema.num_classes
    out: dict[str, np.ndarray] = {}
    for j in ds.indices:
        crop = f.read("labels", j)
        onehot = (np.arange(n)[:, None, None] == np.where(crop == 255, 0, crop)[None]).astype(np.float32)
        target = f.photo_label(j)
        pred = probs_to_photo(onehot, f.read("matrices", j), target.shape).argmax(-1)
        g = pose_group(ds.ids[j])
        out[g] = out.get(g, 0) + confusion(pred.astype(np.uint8), target, n)
    return out


def model_groups(model: str, cache: str, split: str) -> tuple[dict[str, np.ndarray], object]:
    m = LoadedModel.load(model)
    r = evaluate_model(m, cache, split=split, keep_images=True)
    out: dict[str, np.ndarray] = {}
    for face_id, _, pred, target, _ in r["_images"]:
        g = pose_group(face_id)
        out[g] = out.get(g, 0) + confusion(pred, target, m.schema.num_classes)
    return out, m.schema


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache")
    ap.add_argument("models", nargs="*")
    ap.add_argument("--split", default="test")
    ap.add_argument("--json")
    a = ap.parse_args()
    ds = FaceCache(a.cache, split=a.split)
    fitted: dict[str, list[int]] = {}
    for j in ds.indices:
        c = fitted.setdefault(pose_group(ds.ids[j]), [0, 0])
        c[0] += 1
        c[1] += int(ds.file.read("fitted", j))
    columns = {"crop ceiling": ceiling(a.cache, a.split, ds.schema)}
    for name in a.models:
        columns[name], _ = model_groups(name, a.cache, a.split)
    groups = [g for g in GROUPS if g in fitted]
    table = {}
    for col, cms in columns.items():
        table[col] = {g: scores(cms[g], ds.schema) for g in groups}
        table[col]["all"] = scores(sum(cms[g] for g in groups), ds.schema)
    print(f"{a.cache}, split {a.split}: pixel acc / overall F1 in photo coordinates")
    print("| group | faces | no face found | " + " | ".join(columns) + " |")
    print("|---" * (3 + len(columns)) + "|")
    for g in groups + ["all"]:
        faces = sum(v[0] for v in fitted.values()) if g == "all" else fitted[g][0]
        fit = sum(v[1] for v in fitted.values()) if g == "all" else fitted[g][1]
        cells = [f"{100 * table[c][g]['pixel_acc']:.2f}% / {table[c][g]['overall_f1']:.3f}" for c in columns]
        print(f"| {g} | {faces} | {fit} | " + " | ".join(cells) + " |")
    if a.json:
        slim = {c: {g: {k: s[k] for k in ("pixel_acc", "overall_f1", "per_class_f1") if k in s}
                    for g, s in t.items()} for c, t in table.items()}
        with open(a.json, "w") as fh:
            json.dump({"cache": a.cache, "split": a.split, "fitted": fitted, "scores": slim}, fh, indent=1)


if __name__ == "__main__":
    try:
        main()
    except FacepipeError as e:  # a missing cache or split: one line, as the facepipe commands say it
        raise SystemExit(f"error: {e}") from None
