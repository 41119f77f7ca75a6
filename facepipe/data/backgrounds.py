"""Stage `backgrounds`: a set of real photos without faces, for training faces on other backdrops.

FASSEG's faces are all studio photos on plain walls. `train` and `distill` paste them onto these photos
(facepipe.learn.augment, the wild recipe; facepipe.learn.background_bank reads this folder), so that a
model learns what a face looks like rather than what a studio wall looks like. This stage gathers the
photos, with a record of where each came from:

  - every image file under the SRC folders (or given as files), walked in sorted order;
  - the same picture at several resolutions (desktop wallpaper packages ship one file per screen size)
    kept once: of the files in one folder named like 1920x1080.png, only the largest;
  - photos in which dlib finds a face dropped (a face labelled background would teach the opposite);
  - the evaluation sets never taken: scikit-image's sample images and dlib-faces are reserved for
    measuring, and --exclude drops more (the robustness benchmark's own backgrounds, say);
  - each kept photo shrunk to at most 640 px on its short side and stored as JPEG quality 95;
  - with --procedural N, N drawings of clutter added after the photos (facepipe.data.clutter: grass,
    foliage, out-of-focus lights), which the wallpapers lack; source "procedural:KIND:SEED".

OUT/
  images/NNNN.jpg     the photos
  sources.jsonl       one line per photo: its file name here, source path, source sha256, size
  manifest.json       written last

A documented recipe (Debian's wallpaper packages; mate-backgrounds stays out, the benchmark uses it):

    apt-get install -y ukui-wallpapers plasma-workspace-wallpapers lomiri-wallpapers
    facepipe backgrounds /usr/share/wallpapers /usr/share/backgrounds data/backgrounds --exclude '*/mate/*'
"""
from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from facepipe.data.clutter import KINDS, clutter
from facepipe.data.face_detector import PARSE_DETECTOR, detector
from facepipe.util.atomic import save_image, write_text
from facepipe.util.errors import BadImage, FacepipeError
from facepipe.util.images import IMAGE_SUFFIXES, load_rgb
from facepipe.util.manifest import StageOutput, config_dict, file_sha256
from facepipe.util.progress import SILENT, Reporter

SHORT_SIDE = 640
RESERVED = ("*/skimage/data/*", "*/dlib-faces/*")  # measuring sets: never trained on
_RESOLUTION = re.compile(r"^(\d+)x(\d+)$")


@dataclass(frozen=True)
class BackgroundsConfig:
    sources: tuple[str, ...]
    out: str = field(metadata={"identity": False})
    exclude: tuple[str, ...] = ()
    short_side: int = SHORT_SIDE
    procedural: int = 0  # drawings of clutter added to the photos (data.clutter)
    force: bool = field(default=False, metadata={"identity": False})


def gather(sources, exclude=()) -> tuple[list[Path], list[dict]]:
    """Image files under `sources`, minus reserved/excluded paths and duplicate resolutions."""
    files, skipped = [], []
    for s in sources:
        p = Path(s)
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            raise FacepipeError(f"{s} does not exist.")
    kept = []
    for f in files:
        full = str(f.resolve())
        pat = next((g for g in RESERVED + tuple(exclude) if fnmatch.fnmatch(full, g)), None)
        if pat:
            skipped.append({"source": str(f), "reason": f"excluded by {pat}"})
        else:
            kept.append(f)
    # Wallpaper packages ship one picture per screen size (contents/images/1920x1080.png, ...): keep the
    # largest file of each folder whose names are sizes.
    best: dict[Path, tuple[int, Path]] = {}
    out = []
    for f in kept:
        m = _RESOLUTION.match(f.stem)
        if not m:
            out.append(f)
        elif f.parent not in best or int(m[1]) * int(m[2]) > best[f.parent][0]:
            best[f.parent] = (int(m[1]) * int(m[2]), f)
    largest = {f for _, f in best.values()}
    skipped += [{"source": str(f), "reason": f"another size of {best[f.parent][1]}"}
                for f in kept if _RESOLUTION.match(f.stem) and f not in largest]
    out += sorted(largest)
    return sorted(set(out)), skipped


MIN_SIDE = 128  # smaller images (icons, thumbnails) would be blown up to a blur behind a 256 px face (or the
# --short-side asked for, if smaller)


def shrink(rgb: np.ndarray, short_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    k = short_side / min(h, w)
    if k >= 1:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((max(1, round(w * k)), max(1, round(h * k))), Image.LANCZOS))


def run_backgrounds(cfg: BackgroundsConfig, reporter: Reporter = SILENT) -> dict:
    files, skipped = gather(cfg.sources, cfg.exclude)
    if not files:
        raise FacepipeError(f"no image files in {', '.join(cfg.sources)} (after exclusions).")
    out = Path(cfg.out)
    config = config_dict(cfg)
    if not cfg.procedural:
        del config["procedural"]  # absent when unused: outputs made before --procedural existed still match
    with StageOutput(out, "backgrounds", config, force=cfg.force) as so:
        if so.state == "done":
            return so.manifest
        detect = detector(PARSE_DETECTOR)  # parse's settings: the faces parse would find
        records = []
        with reporter.task("backgrounds", len(files)) as advance:
            for f in files:
                try:
                    rgb = load_rgb(f)
                except BadImage as e:
                    skipped.append({"source": str(f), "reason": str(e)})
                    advance()
                    continue
                if min(rgb.shape[:2]) < min(MIN_SIDE, cfg.short_side):
                    skipped.append({"source": str(f), "reason": f"too small ({rgb.shape[1]}x{rgb.shape[0]}; a "
                                    f"backdrop needs {min(MIN_SIDE, cfg.short_side)} px on its short side)"})
                    advance()
                    continue
                faces = detect(rgb)
                if faces:
                    skipped.append({"source": str(f), "reason": f"{len(faces)} face(s) found"})
                else:
                    name = f"images/{len(records):04d}.jpg"
                    small = shrink(rgb, cfg.short_side)
                    save_image(out / name, small)
                    records.append({"image": name, "source": str(f), "sha256": file_sha256(f),
                                    "width": small.shape[1], "height": small.shape[0]})
                advance()
        w, h = round(cfg.short_side * 4 / 3), cfg.short_side  # drawings: 4:3, the photos' short side
        with reporter.task("procedural clutter", cfg.procedural) as advance:
            for i in range(cfg.procedural):  # no face to look for: nothing face-like is drawn
                kind = KINDS[i % len(KINDS)]
                name = f"images/{len(records):04d}.jpg"
                save_image(out / name, clutter(kind, i, w, h))
                records.append({"image": name, "source": f"procedural:{kind}:{i}", "sha256": file_sha256(out / name),
                                "width": w, "height": h})
                advance()
        if not records:
            eg = f" (e.g. {skipped[0]['source']}: {skipped[0]['reason']})" if skipped else ""
            raise FacepipeError(f"every candidate photo was excluded, holds a face or is too small{eg}; nothing to "
                                "write.")
        write_text(out / "sources.jsonl", "".join(json.dumps(r) + "\n" for r in records))
        counts = {"photos": len(records) - cfg.procedural, "procedural": cfg.procedural, "skipped": len(skipped)}
        return so.finish(counts=counts, skipped=skipped,
                         inputs={"sources": [str(Path(s).resolve()) for s in cfg.sources]})
