"""How much of a photo's parse changes when the photo loses its colour: a check of gray photos without labels.

    python tools/gray_agreement.py copies ../shared/data/unlabeled/{dlib-faces,dlib-johns,face-recognition} \
        --out runs/gray98/photos                     # black-and-white copies (luma in all three channels)
    facepipe parse ../shared/data/unlabeled/dlib-faces --out runs/gray98/colour/dlib-faces -q   # each folder
    facepipe parse runs/gray98/photos/dlib-faces --out runs/gray98/gray/dlib-faces -q            # each folder
    python tools/gray_agreement.py agree runs/gray98/colour runs/gray98/gray
    python tools/gray_agreement.py moved runs/gray98/colour runs/gray98/gray runs/gray98/gray-new

`agree REF OTHER`: the pixels whose label differs between two parse folders (label maps matched by their
path under each folder), in all and as a share of the pixels either calls a face class, with the largest
kinds of change and the photos that change most. `moved REF OLD NEW`: of the pixels that differ between
OLD and NEW, what REF calls them; REF is the colour photos' parse, standing in for the truth.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

NAMES = ("background", "hair", "skin", "eyes", "nose", "mouth")  # FASSEG's ids, the bundled models'
PHOTOS = (".jpg", ".jpeg", ".png")


def copies(folders: list[str], out: str) -> None:
    for folder in map(Path, folders):
        for f in sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTOS):
            dst = Path(out) / folder.name / f.relative_to(folder).with_suffix(".png")
            dst.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(f) as im:  # upright as parse reads it, then luma (ITU-R 601) in all three channels
                ImageOps.exif_transpose(im).convert("L").convert("RGB").save(dst)


def pairs(a: Path, *others: Path):
    """(relative path, label maps) of every label map in `a` that each of `others` holds too."""
    for f in sorted(a.rglob("*.labels.png")):
        rel = f.relative_to(a)
        if all((o / rel).exists() for o in others):
            yield rel, [np.asarray(Image.open(p)) for p in (f, *(o / rel for o in others))]


def agree(ref: Path, other: Path) -> None:
    n = len(NAMES)
    cm, per = np.zeros((n, n), np.int64), []
    for rel, (x, y) in pairs(ref, other):
        m = np.bincount(x.ravel().astype(np.int64) * n + y.ravel(), minlength=n * n).reshape(n, n)
        cm += m
        per.append((str(rel), (m.sum() - np.trace(m)) / max(m.sum() - m[0, 0], 1)))
    if not per:
        sys.exit(f"no label maps (*.labels.png) that both {ref} and {other} hold: give two `facepipe parse` folders")
    differ = cm.sum() - np.trace(cm)
    print(f"{len(per)} photos: {100 * differ / cm.sum():.2f}% of the pixels differ, "
          f"{100 * differ / (cm.sum() - cm[0, 0]):.2f}% of those either calls a face class")
    kinds = sorted(((cm[i, j], i, j) for i in range(n) for j in range(n) if i != j), reverse=True)[:6]
    print("  " + "; ".join(f"{NAMES[i]} -> {NAMES[j]} {100 * v / differ:.0f}%" for v, i, j in kinds))
    for rel, share in sorted(per, key=lambda t: -t[1])[:8]:
        print(f"  {rel}: {100 * share:.1f}% of its face-class pixels")


def moved(ref: Path, old: Path, new: Path) -> None:
    tally: dict[tuple, int] = {}
    for _, (w, r, o) in pairs(new, ref, old):
        d = o != w
        if d.any():
            keys, counts = np.unique(np.stack([o[d], w[d], r[d]], 1), axis=0, return_counts=True)
            for k, c in zip(map(tuple, keys), counts):
                tally[k] = tally.get(k, 0) + int(c)
    if not any(True for _ in pairs(new, ref, old)):
        sys.exit(f"no label maps (*.labels.png) that {ref}, {old} and {new} all hold: give three `facepipe parse` folders")
    total = sum(tally.values())
    print(f"{total} pixels moved")
    for (o, w, r), c in sorted(tally.items(), key=lambda t: -t[1])[:8]:
        print(f"  {NAMES[o]} -> {NAMES[w]} where the reference says {NAMES[r]}: {c} ({100 * c / max(total, 1):.1f}%)")
    right = sum(c for (o, w, r), c in tally.items() if w == r)
    lost = sum(c for (o, w, r), c in tally.items() if o == r)
    print(f"now as the reference: {right}; as the reference before, not now: {lost}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("copies")
    c.add_argument("folders", nargs="+")
    c.add_argument("--out", required=True)
    a = sub.add_parser("agree")
    a.add_argument("ref", type=Path)
    a.add_argument("other", type=Path)
    m = sub.add_parser("moved")
    for k in ("ref", "old", "new"):
        m.add_argument(k, type=Path)
    args = ap.parse_args()
    if args.cmd == "copies":
        copies(args.folders, args.out)
    elif args.cmd == "agree":
        agree(args.ref, args.other)
    else:
        moved(args.ref, args.old, args.new)


if __name__ == "__main__":
    main()
