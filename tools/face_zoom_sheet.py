"""Contact sheet of single faces, zoomed in: the photo, BEFORE's overlay and AFTER's overlay, cropped
around each face's landmarks (1.6 eye distances from their centre). Faces are the ones AFTER's records
say the landmark prior (`prior_pixels`) or the face's colours (`--key colour_pixels`) changed most, or
those named with --faces STEM:INDEX.

    python tools/face_zoom_sheet.py runs/sheet/prior-off runs/sheet/prior-on docs/figures/landmark-prior-sheet.jpg \
        --top 16 --min-pixels 90
"""
import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SKIP = {"summary.json", "manifest.json"}


def faces_changed(after: Path, min_pixels: int, key: str = "prior_pixels") -> list[tuple[int, str, int]]:
    """(pixels changed, stem, face index) for every face of AFTER whose record's `key` (prior_pixels:
    the landmark prior; colour_pixels: the face's colours) is at least min_pixels."""
    found = []
    for p in sorted(after.glob("*.json")):
        if p.name in SKIP:
            continue
        for i, f in enumerate(json.loads(p.read_text())["faces"]):
            if f.get(key, 0) >= min_pixels:
                found.append((f[key], p.stem, i))
    return sorted(found, reverse=True)


def face_box(face: dict) -> tuple[int, int, int, int]:
    lm = np.array(face["landmarks68"], float)
    c = lm.mean(0)
    half = 1.6 * np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0))
    return tuple(int(round(v)) for v in (c[0] - half, c[1] - half, c[0] + half, c[1] + half))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("out")
    ap.add_argument("--top", type=int, default=16)
    ap.add_argument("--min-pixels", type=int, default=1)
    ap.add_argument("--key", default="prior_pixels", help="the per-face count to rank by: prior_pixels, colour_pixels")
    ap.add_argument("--faces", nargs="*", default=[], help="STEM:INDEX faces to show after the top ones")
    ap.add_argument("--tile", type=int, default=160)
    ap.add_argument("--columns", type=int, default=2, help="faces per row")
    a = ap.parse_args()
    before, after, w = Path(a.before), Path(a.after), a.tile
    picks = [(s, i) for _, s, i in faces_changed(after, a.min_pixels, a.key)[:a.top]]
    picks += [(s, int(i)) for s, _, i in (f.rpartition(":") for f in a.faces)]
    rows = (len(picks) + a.columns - 1) // a.columns
    sheet = Image.new("RGB", (3 * w * a.columns, rows * w), "black")
    for n, (stem, i) in enumerate(picks):
        rec = json.loads((after / f"{stem}.json").read_text())
        box = face_box(rec["faces"][i])
        ims = [Image.open(rec["photo"]).convert("RGB"), Image.open(before / f"{stem}.overlay.png").convert("RGB"),
               Image.open(after / f"{stem}.overlay.png").convert("RGB")]
        x0, y0 = (n % a.columns) * 3 * w, (n // a.columns) * w
        for k, im in enumerate(ims):
            sheet.paste(im.crop(box).resize((w, w), Image.BILINEAR), (x0 + k * w, y0))
        ImageDraw.Draw(sheet).text((x0 + 3, y0 + 2), stem[:24], fill=(255, 255, 0))
    sheet.save(a.out, quality=88)
    print(f"{len(picks)} faces -> {a.out}")


if __name__ == "__main__":
    main()
