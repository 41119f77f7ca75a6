"""Side by side: the crops of two caches of the same photos (e.g. `align --turn-shift 0` and `4`).

Usage: python tools/turn_crops.py A.h5 B.h5 OUT.jpg [--ids ID ...] [--split test] [--titles "A" "B"]

Each row is one face: A's crop, then B's, with the crop's labels drawn as a thin outline of the head
(non-background), so what each crop cuts off shows.
"""
from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw

from facepipe.data.face_cache import CacheFile


def _crop(cf: CacheFile, j: int) -> Image.Image:
    img = np.asarray(cf.read("images", j)).copy()
    lab = cf.read("labels", j)
    fg = (lab != 0) & (lab != 255)
    edge = fg ^ np.roll(fg, 1, 0) | fg ^ np.roll(fg, 1, 1)
    img[edge] = (0, 255, 0)
    return Image.fromarray(img)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("out")
    ap.add_argument("--ids", nargs="*")
    ap.add_argument("--split", default="test")
    ap.add_argument("--titles", nargs=2, default=None)
    ap.add_argument("--cols", type=int, default=3)
    args = ap.parse_args()
    a, b = CacheFile(args.a), CacheFile(args.b)
    rows_a = {a.ids[j]: j for j in a.rows(args.split)}
    rows_b = {b.ids[j]: j for j in b.rows(args.split)}
    ids = args.ids or sorted(rows_a)[:6]
    size = a.size
    tiles = []
    for i in ids:
        pair = Image.new("RGB", (2 * size + 4, size), (255, 255, 255))
        pair.paste(_crop(a, rows_a[i]), (0, 0))
        pair.paste(_crop(b, rows_b[i]), (size + 4, 0))
        ImageDraw.Draw(pair).text((4, 4), i, fill=(255, 255, 255))
        tiles.append(pair)
    cols = min(args.cols, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    top = 16 if args.titles else 0
    tw, th = tiles[0].size
    sheet = Image.new("RGB", (cols * (tw + 8), top + rows * (th + 8)), (255, 255, 255))
    if args.titles:
        ImageDraw.Draw(sheet).text((4, 2), f"left of each pair: {args.titles[0]}   right: {args.titles[1]}",
                                   fill=(0, 0, 0))
    for k, t in enumerate(tiles):
        sheet.paste(t, ((k % cols) * (tw + 8), top + (k // cols) * (th + 8)))
    sheet.save(args.out, quality=88)


if __name__ == "__main__":
    main()
