"""How the gray branch's toned-photo cut (models.gray_route.TONED_RESIDUAL) was set: the chroma residual
of aligned crops from several sources, and a sheet of the colour-routed faces that read as most toned.

    facepipe landmarks ../shared/data/unlabeled/dlib-faces /tmp/ex/dlib-faces-lm --detector hog+cnn
    facepipe align ../shared/data/unlabeled/dlib-faces /tmp/ex/dlib-faces-al --landmarks /tmp/ex/dlib-faces-lm \
        --turn-shift 4                                  # and face-recognition, dlib-johns
    python tools/toned_select.py data/robust-sepia-al-t4 data/robust-plain-al-t4 data/robust-hair-al-t4 \
        /tmp/ex/*-al data/utk-aligned-t4 --jpeg 90 --sheet data/utk-aligned-t4:/tmp/toned-utk.jpg

Prints one markdown row per aligned folder: faces, faces below the saturation cut, the residual's
percentiles over the rest (the colour-routed faces), and how many of them fall below the cut. --jpeg Q adds
a row per folder for the same crops saved as JPEG at quality Q (chroma noise raises the residual).
--sheet FOLDER:OUT draws FOLDER's 48 colour-routed faces of lowest residual, labelled, for judging by eye
which of them are toned prints.
"""
import argparse
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from facepipe.data.face_cache import to_input
from facepipe.models.gray_route import GRAY_SATURATION, TONED_RESIDUAL, mean_saturation, toned_residual


def _load(path: Path, jpeg: int | None) -> np.ndarray:
    im = Image.open(path).convert("RGB")
    if jpeg:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=jpeg)
        im = Image.open(buf).convert("RGB")
    return np.asarray(im)


def measure(folder: Path, jpeg: int | None = None) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """(files, saturation, residual) over the folder's aligned crops, 64 at a time."""
    files = sorted((folder / "images").glob("*.png"))
    sat, res = [], []
    for i in range(0, len(files), 64):
        x = to_input(np.stack([_load(f, jpeg) for f in files[i:i + 64]]), None)
        with torch.no_grad():
            sat.append(mean_saturation(x).numpy())
            res.append(toned_residual(x).numpy())
    return files, np.concatenate(sat), np.concatenate(res)


def sheet(files, sat, res, out: Path, n: int = 48, side: int = 160) -> None:
    order = [i for i in np.argsort(res) if sat[i] >= GRAY_SATURATION][:n]
    cols = 8
    img = Image.new("RGB", (cols * side, -(-len(order) // cols) * side), "black")
    for k, i in enumerate(order):
        t = Image.open(files[i]).convert("RGB").resize((side, side))
        ImageDraw.Draw(t).text((3, 3), f"{res[i]:.2f}  s {sat[i]:.2f}", fill=(255, 255, 0))
        img.paste(t, ((k % cols) * side, (k // cols) * side))
    img.save(out, quality=88)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="+", type=Path, help="aligned folders (facepipe align)")
    ap.add_argument("--jpeg", type=int, help="also measure the crops saved as JPEG at this quality")
    ap.add_argument("--sheet", help="FOLDER:OUT.jpg")
    a = ap.parse_args()
    print(f"| aligned crops | faces | below saturation {GRAY_SATURATION} | residual of the rest: min / 1% / 5% / "
          f"median | below {TONED_RESIDUAL} |")
    print("|---|---|---|---|---|")
    for folder in a.folders:
        for q in [None] + ([a.jpeg] if a.jpeg else []):
            files, sat, res = measure(folder, q)
            rest = res[sat >= GRAY_SATURATION]
            pct = " / ".join(f"{v:.2f}" for v in np.percentile(rest, [0, 1, 5, 50])) if len(rest) else "-"
            name = f"{folder}" + (f", JPEG {q}" if q else "")
            print(f"| {name} | {len(files)} | {int((sat < GRAY_SATURATION).sum())} | {pct} | "
                  f"{int((rest < TONED_RESIDUAL).sum())} |")
    if a.sheet:
        folder, out = a.sheet.split(":", 1)
        sheet(*measure(Path(folder)), Path(out))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
