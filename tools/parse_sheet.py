"""Side-by-side contact sheet of two `facepipe parse` outputs over the same photos (before | after).

    python tools/parse_sheet.py runs/sheet/before runs/sheet/after docs/figures/wild-before-after.jpg \
        --photos examples_obama examples_two_people ...

Each row: one photo's overlay from BEFORE and from AFTER, cropped to its faces (3x the face box, within
the photo) and scaled to one height. Photos are given by stem; without --photos, every stem both hold.
BEFORE may be the word `photo`: the photo itself beside AFTER's overlay (what a parse still gets wrong).
"""
import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def crop_box(rec: dict) -> tuple[int, int, int, int]:
    boxes = np.array([f["box"] for f in rec["faces"]]) if rec["faces"] else None
    w, h = rec["width"], rec["height"]
    if boxes is None:
        return 0, 0, w, h
    l, t, r, b = boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()
    cx, cy, side = (l + r) / 2, (t + b) / 2, max(r - l, b - t) * 3
    return (int(max(0, cx - side / 2)), int(max(0, cy - side / 2 - side * 0.05)),
            int(min(w, cx + side / 2)), int(min(h, cy + side / 2)))


def tile(folder: Path, stem: str, box, height: int, photo: bool = False) -> Image.Image:
    rec = json.loads((folder / f"{stem}.json").read_text())
    src = rec.get("photo_abs", rec["photo"]) if photo else folder / rec["overlay"]
    im = Image.open(src).convert("RGB").crop(box)
    return im.resize((max(1, round(im.width * height / im.height)), height), Image.BILINEAR)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("out")
    ap.add_argument("--photos", nargs="*")
    ap.add_argument("--height", type=int, default=220)
    ap.add_argument("--titles", nargs=2, default=("before", "after"))
    a = ap.parse_args()
    photo = a.before == "photo"  # the photo itself on the left, from AFTER's records
    before, after = Path(a.after if photo else a.before), Path(a.after)
    stems = a.photos or sorted({p.stem for p in before.glob("*.json")} & {p.stem for p in after.glob("*.json")})
    rows = []
    for s in stems:
        if not (before / f"{s}.json").exists() or not (after / f"{s}.json").exists():
            continue
        rec = json.loads((after / f"{s}.json").read_text())
        if "overlay" not in rec:
            continue
        box = crop_box(rec)
        rows.append((s, tile(before, s, box, a.height, photo), tile(after, s, box, a.height)))
    pairs = [(s, b, c) for s, b, c in rows]
    cols = 2  # two photos (four tiles) per sheet row
    tw = max(b.width + c.width for _, b, c in pairs) + 12
    grid_rows = (len(pairs) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * tw, grid_rows * (a.height + 18) + 20), "white")
    d = ImageDraw.Draw(sheet)
    d.text((4, 4), f"each pair: {a.titles[0]} (left) | {a.titles[1]} (right)", fill="black")
    for i, (s, b, c) in enumerate(pairs):
        x, y = (i % cols) * tw, 20 + (i // cols) * (a.height + 18)
        d.text((x + 2, y), s[:48], fill="black")
        sheet.paste(b, (x, y + 14))
        sheet.paste(c, (x + b.width + 2, y + 14))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(a.out)
    print(f"{a.out}: {len(pairs)} photos")


if __name__ == "__main__":
    main()
