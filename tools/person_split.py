"""An imported FASSEG set re-split by person: FASSEG V3 persons held out for testing, all their poses.

Usage: python tools/person_split.py IMPORTED OUT [--test-persons 06,07]

IMPORTED is `facepipe import fasseg ...` output. OUT gets the layout `facepipe import folder` reads
(images/ and labels/ as links to IMPORTED's, schema.json, splits.json) with three splits:
  train  V2 train + the V3 photos of every other person   (what a model may learn from)
  test   the V3 photos of the held-out persons, all 13 poses (unseen persons and poses)
  v2test V2 test, unchanged (the frontal studio photos, for comparison)
FASSEG's own split puts every V3 photo in train, so a model trained on it has seen every person and
pose; this split is how unseen poses are measured (docs/results.md, "Unseen persons and poses").
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

PERSON = re.compile(r"^v3_train_[+-]?\d+_personne(\d\d)")


def person_splits(ids: list[str], test_persons: set[str]) -> dict[str, list[str]]:
    out = {"train": [], "test": [], "v2test": []}
    for i in sorted(ids):
        m = PERSON.match(i)
        if m:
            out["test" if m.group(1) in test_persons else "train"].append(i)
        elif i.startswith("v2_test_"):
            out["v2test"].append(i)
        elif i.startswith("v2_train_"):
            out["train"].append(i)
        else:
            raise SystemExit(f"{i}: not a FASSEG V2/V3 id of `facepipe import fasseg`")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("imported", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--test-persons", default="06,07", help="two-digit V3 person numbers, comma-separated")
    a = ap.parse_args()
    ids = [p.stem for p in sorted((a.imported / "labels").glob("*.png"))]
    if not ids:
        raise SystemExit(f"{a.imported} has no labels/: give a `facepipe import fasseg` output")
    splits = person_splits(ids, {p.strip() for p in a.test_persons.split(",")})
    if not splits["test"]:
        raise SystemExit(f"no V3 photo of persons {a.test_persons} in {a.imported}")
    a.out.mkdir(parents=True, exist_ok=True)
    for sub in ("images", "labels"):
        link = a.out / sub
        if not link.exists():
            link.symlink_to((a.imported / sub).resolve(), target_is_directory=True)
    shutil.copy(a.imported / "schema.json", a.out / "schema.json")
    (a.out / "splits.json").write_text(json.dumps(splits, indent=1))
    print(f"{a.out}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))


if __name__ == "__main__":
    main()
