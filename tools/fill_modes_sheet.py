"""What `train` and `distill --outside-photo` teach on the black fill beyond a labelled photo: one row per
face (among the training faces whose hair runs off their photo the most), columns crop | label | ignore |
edge. Labels in the schema's colours; pixels left out of the loss in grey.

    python tools/fill_modes_sheet.py data/fasseg-hc-b2.0-t4.h5 docs/figures/outside-photo-modes.jpg --faces 4
"""
import argparse

import numpy as np
from scipy import ndimage

from facepipe.data.face_cache import FaceCache, fill_outside_photo
from facepipe.util.atomic import save_image
from facepipe.util.sheets import grid

MODES = ("label", "ignore", "edge")


def _paint(labels: np.ndarray, schema) -> np.ndarray:
    rgb = schema.colorize(np.where(labels == 255, 0, labels))
    rgb[labels == 255] = (128, 128, 128)
    return rgb


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache")
    ap.add_argument("out")
    ap.add_argument("--faces", type=int, default=4)
    a = ap.parse_args(argv)
    ds = FaceCache(a.cache, split="train")
    rows = np.sort(ds.indices)
    images, _, labels = ds.batch(rows)
    inside = ds.file.inside_photo(rows)
    hair = ds.schema.index("hair")
    # Hair pixels on the photo's edge: inside pixels next to the fill.
    edge = np.stack([m & ~ndimage.binary_erosion(m, border_value=1) for m in inside])
    # Every tenth of the 10 x --faces faces with the most hair there: FASSEG V3 shows each person in 13
    # poses, so neighbours in the ranking are often one person.
    pick = np.argsort(-(edge & (labels == hair)).sum((1, 2)))[:10 * a.faces:10]
    bg = ds.schema.index("background")
    tiles = [[images[i]] + [_paint(fill_outside_photo(labels[i:i + 1], inside[i:i + 1], m, bg)[0], ds.schema)
                            for m in MODES] for i in pick]
    caps = [f"{ds.ids[rows[i]][:28]}: crop | " + " | ".join(MODES) for i in pick]
    save_image(a.out, np.asarray(grid(tiles, caps, tile=192)))
    print(a.out)


if __name__ == "__main__":
    main()
