"""Stage `paste`: a robustness benchmark. The faces of an imported set pasted onto other backgrounds.

A face parser that learnt "FASSEG's studio wall is background" scores well on FASSEG and fails on a
photo taken anywhere else. This stage keeps every face, label and split of an imported set and changes
only what is around the face, so the same chain (landmarks, align, cache, eval) measures how much the
score owes to the backdrop:

  plain    the photo copied byte for byte: the same-pipeline reference
  pasted   the label map's background class (id 0) replaced by a crop of a background photo, joined
           by a feathered seam (the foreground mask blurred by a Gaussian of a few pixels, scaled
           with the photo, then alpha-blended)
  gray     pasted, then converted to grayscale (three equal channels)
  hair     pasted, with the hair class recoloured to blonde, grey or red
  hair-gray  hair, then converted to grayscale: light hair in a black-and-white photo, where it is
           nearly as bright as skin
  sepia    pasted, then toned like an old print: luma mapped onto a brown ramp (a face's mean
           saturation about 0.3, above the gray branch's cut: it measures the colour network on faces
           of one hue)
  hair-backdrop  pasted onto the background photo recoloured to the face's own hair: each channel's
           mean and spread moved to those of the hair pixels, so its texture stays and its colours are
           the hair's (a dark wall behind dark hair, a brown painting behind brown hair)
  bald     pasted, with the hair above the brows drawn as a bald scalp in the face's own skin colour
           (data/bald.py, as training's `bald` draws it, from this photo's own draws): the scalp is
           labelled skin and the hair around it background; the only variant whose labels change
           (written to labels/, not copied)
  tight    the source photo cut to a square around its face (the box of the skin and face parts, 1.2
           times as wide), as face-crop datasets cut them (UTKFace, aligned CelebA): most of the hair
           lies outside the photo, and the aligned crop is mostly the black fill beyond its edges;
           nothing is pasted (labels cut the same way). Cut from a pasted set, it is a face-crop photo
           of a cluttered scene: a strip of the backdrop between the face and the black fill

--defocus S blurs the background crop of every variant but plain and tight by a Gaussian of S times the
photo's longer side before it is pasted: a portrait's backdrop out of focus (a phone's portrait mode, a
long lens), where a smooth field of a hair-like colour touches the head.

--margin K widens every variant but plain and tight by K times the photo's height and width on each side,
filled with the background (labels: background; dataset landmarks shifted): the face is then a small part
of a cluttered photo, as in a group photo, and what a parser labels beyond its face crop is scored too.

Every random choice (background photo, zoom, crop position, hair colour) is drawn from --seed and the
photo id alone, so the variants of one photo share their background and a rerun is byte-identical.

OUT is an imported set in the common layout (facepipe/data/importers/common.py): images/, labels/ (copied
byte for byte), landmarks/ (copied when the dataset has them), items.jsonl, splits.json (the chosen
split only), schema.json and manifest.json (stage "paste", written last).

Backgrounds: real photos without faces, e.g. Debian's wallpaper packages:

    apt-get update -qq && apt-get install -y -qq mate-backgrounds   # /usr/share/backgrounds/mate/nature
    (or ukui-wallpapers, plasma-workspace-wallpapers, lomiri-wallpapers)

They are for evaluation only and must never be used for training: a model trained on them would no
longer be tested on backgrounds it has not seen.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter
import torch

from facepipe.data.bald import bald_scalps
from facepipe.util.atomic import atomic_path, save_image, write_json, write_text
from facepipe.util.errors import BadImage, FacepipeError
from facepipe.util.images import IMAGE_SUFFIXES, list_images, load_ids, load_rgb
from facepipe.util.input_norm import LUMA
from facepipe.util.landmark_txt import read_landmark_txt, write_landmark_txt
from facepipe.util.manifest import StageOutput, config_dict, file_sha256
from facepipe.util.photos import Photo, list_photos
from facepipe.util.pool import run_jobs
from facepipe.util.progress import SILENT, Reporter
from facepipe.util.schema import load_schema

VARIANTS = ("plain", "pasted", "gray", "hair", "sepia", "hair-gray", "hair-backdrop", "bald", "tight")
UNPASTED = ("plain", "tight")  # the variants with no background photo (--margin and --defocus refuse them)
TIGHT_SCALE = 1.2  # the tight variant's square: this many times the face box's longer side
RECOLOURED = ("hair", "hair-gray")  # the variants that recolour the hair
# Target hair colours as (tint, darkest, lightest lightness): the photo's own hair luminance, stretched
# into that range, keeps the strands' texture; the tint sets the colour.
HAIR_COLOURS = {
    "blonde": ((1.00, 0.82, 0.52), 0.35, 0.95),
    "grey": ((0.93, 0.93, 0.95), 0.35, 0.90),
    "red": ((1.00, 0.42, 0.20), 0.25, 0.75),
}
TRUNCATE = 3.0  # Gaussian kernel radius in sigmas: the seam is at most ceil(3 sigma) px wide per side


@dataclass(frozen=True)
class PasteConfig:
    src: str
    backgrounds: str
    out: str = field(metadata={"identity": False})
    variant: str = "pasted"
    split: str = "test"
    seed: int = 0
    max_zoom: float = 2.0  # background crops are 1..max_zoom times closer than "just covers the photo"
    feather: float = 0.006  # seam sigma as a fraction of the photo's longer side (3 px at 512)
    margin: float = 0.0  # background added on each side, as a fraction of the photo's height / width
    defocus: float = 0.0  # background blur sigma as a fraction of the photo's longer side (0: sharp)
    workers: int = field(default=0, metadata={"identity": False})
    force: bool = field(default=False, metadata={"identity": False})


def feather_sigma(h: int, w: int, feather: float) -> float:
    # At least one pixel: below that the blur is a hard cut-out edge, the artefact the seam avoids.
    return max(1.0, feather * max(h, w))


def seam_radius(sigma: float) -> int:
    """How far from the mask's edge blending reaches (scipy's kernel radius for TRUNCATE)."""
    return int(TRUNCATE * sigma + 0.5)


def soft_mask(mask: np.ndarray, sigma: float) -> np.ndarray:
    """HxW bool -> HxW float alpha in [0, 1]: exactly 1 / 0 farther than seam_radius from the edge."""
    a = gaussian_filter(mask.astype(np.float64), sigma, mode="nearest", truncate=TRUNCATE)
    # Summed kernel weights miss 1.0 by rounding; snap so pixels away from the seam stay exact.
    a[a > 1 - 1e-6] = 1.0
    a[a < 1e-6] = 0.0
    return a


def blend(fg: np.ndarray, bg: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return np.clip(np.rint(a * fg + (1 - a) * bg), 0, 255).astype(np.uint8)


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of a uint8 RGB image, float64 in 0..255."""
    return rgb.astype(np.float64) @ np.array(LUMA)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma in three equal channels (the models take RGB)."""
    y = np.rint(luma(rgb))
    return np.repeat(np.clip(y, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


# Per-channel exponents of the sepia ramp, channel c = y ** SEPIA_GAMMA[c]: R >= G >= B everywhere, black
# and white stay black and white, and darker tones are browner, as in toned prints (saturation 0.66 at
# y = 0.1, 0.27 at 0.5, 0.05 at 0.9).
SEPIA_GAMMA = (0.85, 1.0, 1.3)


def to_sepia(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma on a brown ramp: channel c is 255 * y ** SEPIA_GAMMA[c] (y in 0..1)."""
    y = luma(rgb) / 255.0
    out = np.stack([y ** g for g in SEPIA_GAMMA], axis=-1) * 255.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def recolour_hair(rgb: np.ndarray, hair: np.ndarray, colour: str, sigma: float) -> np.ndarray:
    """The hair pixels shifted to `colour`, keeping their luminance texture; feathered like the paste."""
    tint, lo, hi = HAIR_COLOURS[colour]
    y = luma(rgb) / 255.0
    # Dark hair is the common case and spans a few grey levels: a plain lift turns it into flat paint.
    # Stretching the hair's own 2..98th percentiles over [lo, hi] keeps the strands visible.
    if hair.any():
        a, b = np.percentile(y[hair], [2, 98])
        y = np.clip((y - a) / max(b - a, 1e-3), 0, 1)
    light = lo + (hi - lo) * y
    new = np.clip(light[..., None] * np.array(tint) * 255.0, 0, 255)
    return blend(new, rgb, soft_mask(hair, sigma))


def draws(seed: int, photo_id: str) -> dict:
    """The photo's random choices, from the seed and its id only (not its position in the list)."""
    h = hashlib.sha256(f"{seed}\0{photo_id}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(h[:8], "little"))
    # Always the same draws in the same order, whatever the variant: pasted, gray and hair of one
    # photo then share their background, so their scores differ by the variant alone.
    d = {"bg": float(rng.random()), "zoom": float(rng.random()), "x": float(rng.random()),
         "y": float(rng.random()), "hair": int(rng.integers(len(HAIR_COLOURS)))}
    d["bald"] = [float(v) for v in rng.random(3)]  # drawn after the others: theirs stay as they were
    d["bald_seed"] = int(rng.integers(2 ** 31))
    return d


@lru_cache(maxsize=4)
def _background(path: str) -> Image.Image:
    # Wallpapers are 2-5k px: decoded once per worker, not once per photo.
    return Image.fromarray(load_rgb(path))


def background_crop(path: str, h: int, w: int, zoom: float, fx: float, fy: float) -> np.ndarray:
    """An h x w crop of the background photo: the largest region of the photo's aspect, shrunk by
    `zoom` (>= 1), at relative position (fx, fy), resampled to h x w."""
    im = _background(path)
    bw, bh = im.size
    k = max(w / bw, h / bh) * zoom  # photo pixels per background pixel
    cw, ch = w / k, h / k
    x0, y0 = fx * (bw - cw), fy * (bh - ch)
    return np.asarray(im.resize((w, h), Image.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch)))


MAX_DEFOCUS = 0.05  # 25 px on a 512 px photo: a backdrop far behind a long lens; beyond, a flat colour


def defocus(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """The background out of focus: each channel blurred by a Gaussian of `sigma` px (edges mirrored)."""
    out = gaussian_filter(rgb.astype(np.float32), (sigma, sigma, 0), mode="reflect", truncate=TRUNCATE)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def hair_coloured(bg: np.ndarray, rgb: np.ndarray, hair: np.ndarray) -> np.ndarray:
    """The background with each channel's mean and standard deviation moved to those of rgb's hair pixels
    (unchanged when the photo has fewer than 100 of them: nothing to match)."""
    if hair.sum() < 100:
        return bg
    src = bg.reshape(-1, 3).astype(np.float64)
    want = rgb[hair].astype(np.float64)
    out = (src - src.mean(0)) / np.maximum(src.std(0), 1.0) * want.std(0) + want.mean(0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(bg.shape)


def paste_photo(rgb: np.ndarray, labels: np.ndarray, variant: str, bg: np.ndarray | None, bg_id: int,
                hair_id: int | None, hair_colour: str | None, sigma: float) -> np.ndarray:
    """The pure core: one photo's variant. Ignore pixels (255) count as foreground: unknown pixels may be
    face, and keeping them is the conservative choice."""
    if variant == "plain":
        return rgb
    fg = rgb
    if variant == "hair-backdrop":
        bg = hair_coloured(bg, rgb, labels == hair_id)
    if variant in RECOLOURED:
        fg = recolour_hair(rgb, labels == hair_id, hair_colour, sigma)
    out = blend(fg, bg, soft_mask(labels != bg_id, sigma))
    if variant in ("gray", "hair-gray"):
        out = to_gray(out)
    elif variant == "sepia":
        out = to_sepia(out)
    return out


def list_backgrounds(folder) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FacepipeError(f"backgrounds folder {folder} does not exist or is not a folder.")
    files = list(list_images(folder))
    if not files:
        raise FacepipeError(f"no background photos in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}).")
    for p in files:
        try:
            with Image.open(p):  # the header only: decoding a dozen wallpapers here would cost seconds
                pass
        except Exception:
            # Checked before OUT is claimed: a bad file found mid-run would shift every later choice.
            raise FacepipeError(f"background {p} is not a readable image; remove it from {folder}.") from None
    return files


def _backgrounds_digest(files: list[Path], root: Path) -> tuple[str, list[dict]]:
    listing = [{"name": p.relative_to(root.resolve()).as_posix() if p.is_relative_to(root.resolve()) else str(p),
                "sha256": file_sha256(p)} for p in files]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest(), listing


MAX_MARGIN = 2.0


def widen(rgb: np.ndarray, labels: np.ndarray, margin: float, bg_id: int):
    """The photo and its labels padded by `margin` times their height / width on each side (black, and
    the background class), and the (dx, dy) shift of the original pixels."""
    h, w = labels.shape
    dy, dx = int(round(margin * h)), int(round(margin * w))
    big = np.zeros((h + 2 * dy, w + 2 * dx, 3), np.uint8)
    big[dy:dy + h, dx:dx + w] = rgb
    lab = np.full((h + 2 * dy, w + 2 * dx), bg_id, np.uint8)
    lab[dy:dy + h, dx:dx + w] = labels
    return big, lab, (dx, dy)


def tight_box(labels: np.ndarray, bg_id: int, hair_id: int | None, scale: float = TIGHT_SCALE):
    """(y0, y1, x0, x1): a square `scale` times the longer side of the box of the face's own pixels (every
    class but background, hair and unknown), centred on that box and moved (then cut) to fit the photo."""
    face = (labels != bg_id) & (labels != 255)
    if hair_id is not None:
        face &= labels != hair_id
    if not face.any():
        raise BadImage("no face pixels in the label map to cut a tight photo around")
    ys, xs = np.nonzero(face)
    h, w = labels.shape
    side = min(int(round(scale * max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1))), h, w)
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    return y0, y0 + side, x0, x0 + side


def bald_photo(rgb: np.ndarray, labels: np.ndarray, bg_id: int, hair_id: int, skin_id: int, r, seed: int):
    """The photo with a bald scalp drawn over its hair (data.bald.bald_scalps) and its labels to match: the
    scalp skin, the hair above the eyes around it background (pasted over next). Unchanged when the face
    has too little hair or no visible part."""
    img = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    cls = torch.from_numpy(labels.astype(np.int64))[None]
    grain = torch.rand(labels.shape, generator=torch.Generator().manual_seed(seed))[None]
    img, scalp, out = bald_scalps(img, cls, cls == hair_id, torch.ones(1, dtype=torch.bool),
                                  torch.tensor([r], dtype=torch.float32), grain, bg_id, skin_id)
    new = labels.copy()
    new[scalp[0].numpy()], new[out[0].numpy()] = skin_id, bg_id
    rgb = (img[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    return rgb, new


def _pasted(photo: Photo, cfg: PasteConfig, rgb: np.ndarray, labels: np.ndarray, backgrounds: list[str], ids,
            rec: dict):
    """A pasted variant of one photo: (image, labels, shift of the source pixels); notes its background
    (and hair colour) in rec."""
    bg_id, hair_id, skin_id = ids
    d = draws(cfg.seed, photo.id)
    bg_path = backgrounds[min(int(d["bg"] * len(backgrounds)), len(backgrounds) - 1)]
    colour = list(HAIR_COLOURS)[d["hair"]]
    sigma = feather_sigma(*rgb.shape[:2], cfg.feather)  # the face photo's seam, margin or not
    if cfg.variant == "bald":
        rgb, labels = bald_photo(rgb, labels, bg_id, hair_id, skin_id, d["bald"], d["bald_seed"])
    shift = (0, 0)
    if cfg.margin > 0:
        rgb, labels, shift = widen(rgb, labels, cfg.margin, bg_id)
    h, w = rgb.shape[:2]
    bg = background_crop(bg_path, h, w, 1 + d["zoom"] * (cfg.max_zoom - 1), d["x"], d["y"])
    if cfg.defocus > 0:
        bg = defocus(bg, cfg.defocus * max(h, w))
    rec["background"] = Path(bg_path).name
    if cfg.variant in RECOLOURED:
        rec["hair_colour"] = colour
    return paste_photo(rgb, labels, cfg.variant, bg, bg_id, hair_id, colour, sigma), labels, shift


def paste_item(photo: Photo, cfg: PasteConfig, backgrounds: list[str], bg_id: int, hair_id: int | None,
               out: Path, skin_id: int | None = None) -> dict:
    """Write one photo's variant into OUT; returns its items.jsonl record. Raises BadImage."""
    rec = {"id": photo.id, "split": photo.split, "variant": cfg.variant}
    labels, shift = load_ids(photo.label), (0, 0)
    if cfg.variant == "plain":
        # The source file itself: the reference run decodes exactly what the dataset's own run did.
        rgb_shape = load_rgb(photo.path).shape
        name = f"images/{photo.id}{Path(photo.path).suffix.lower()}"
        with atomic_path(out / name) as tmp:
            shutil.copyfile(photo.path, tmp)
    else:
        rgb = load_rgb(photo.path)
        if labels.shape != rgb.shape[:2]:
            raise BadImage(f"{photo.id}: label is {labels.shape[1]}x{labels.shape[0]} but image is "
                           f"{rgb.shape[1]}x{rgb.shape[0]}")
        if cfg.variant == "tight":
            y0, y1, x0, x1 = tight_box(labels, bg_id, hair_id)
            new, labels, shift = rgb[y0:y1, x0:x1], labels[y0:y1, x0:x1], (-x0, -y0)
            rec["box"] = [x0, y0, x1, y1]
        else:
            new, labels, shift = _pasted(photo, cfg, rgb, labels, backgrounds, (bg_id, hair_id, skin_id), rec)
        rgb_shape, name = new.shape, f"images/{photo.id}.png"  # lossless: no JPEG ringing added along the seam
        save_image(out / name, new)
    rec.update({"image": name, "height": rgb_shape[0], "width": rgb_shape[1], "source": photo.path})
    moved = shift != (0, 0)
    if photo.landmarks:
        # Pasting moves no pixel of the face: the dataset's landmarks still hold (shifted by a margin or a cut).
        if moved:
            write_landmark_txt(out / f"landmarks/{photo.id}.txt", read_landmark_txt(photo.landmarks) + shift)
        else:
            with atomic_path(out / f"landmarks/{photo.id}.txt") as tmp:
                shutil.copyfile(photo.landmarks, tmp)
        rec["landmarks"] = f"landmarks/{photo.id}.txt"
    if moved or cfg.variant in ("bald", "tight"):
        save_image(out / f"labels/{photo.id}.png", labels)
    else:
        with atomic_path(out / f"labels/{photo.id}.png") as tmp:
            shutil.copyfile(photo.label, tmp)
    rec["label"] = f"labels/{photo.id}.png"
    write_json(out / f"records/{photo.id}.json", rec)  # last: marks the item done for resume
    return rec


def _work(args):
    photo, cfg, backgrounds, bg_id, hair_id, skin_id, out = args
    try:
        return photo.id, paste_item(photo, cfg, backgrounds, bg_id, hair_id, Path(out), skin_id), None
    except BadImage as e:
        return photo.id, None, str(e)


def _schema_ids(cfg: PasteConfig):
    """The source's label schema, the background class id and the hair and skin class ids (None without)."""
    schema = load_schema(Path(cfg.src) / "schema.json")
    bg_id = 0
    if schema.classes[bg_id] != "background":
        raise FacepipeError(f"schema {schema.name}: class 0 is {schema.classes[0]!r}, not background; "
                            "cannot tell which pixels to replace.")
    hair_id = schema.index("hair") if "hair" in schema.classes else None
    skin_id = schema.index("skin") if "skin" in schema.classes else None
    if cfg.variant in RECOLOURED + ("hair-backdrop", "bald") and hair_id is None:
        raise FacepipeError(f"schema {schema.name} has no hair class; --variant {cfg.variant} needs one.")
    if cfg.variant == "bald" and skin_id is None:
        raise FacepipeError(f"schema {schema.name} has no skin class; --variant bald needs one.")
    return schema, bg_id, hair_id, skin_id


def _chosen(cfg: PasteConfig, photos: list[Photo]) -> tuple[list[Photo], list[dict]]:
    """The labelled photos of cfg.split, and the unlabelled ones as skipped items."""
    chosen = [p for p in photos if p.split == cfg.split]
    if not chosen:
        have = sorted({p.split for p in photos})
        raise FacepipeError(f"{cfg.src} has no photos in split {cfg.split!r}; it has: {', '.join(have)}.")
    unlabelled = [{"id": p.id, "reason": "no label: nothing tells the background apart"}
                  for p in chosen if not p.label]
    chosen = [p for p in chosen if p.label]
    if not chosen:
        raise FacepipeError(f"no photo of split {cfg.split!r} in {cfg.src} is labelled.")
    return chosen, unlabelled


def _counts(cfg: PasteConfig, records: list[dict], n_skipped: int) -> dict:
    counts = {"images": len(records), "labelled": len(records), "skipped": n_skipped,
              f"split_{cfg.split}": len(records)}
    if cfg.variant in RECOLOURED:
        for c in HAIR_COLOURS:
            counts[f"hair_{c}"] = sum(r.get("hair_colour") == c for r in records)
    return counts


def run_paste(cfg: PasteConfig, reporter: Reporter = SILENT) -> dict:
    """Write cfg.variant of cfg.split of an imported set into cfg.out; resumable; returns the manifest."""
    if cfg.variant not in VARIANTS:
        raise FacepipeError(f"unknown variant {cfg.variant!r}; known: {', '.join(VARIANTS)}.")
    if not cfg.max_zoom >= 1:
        raise FacepipeError(f"--max-zoom {cfg.max_zoom} must be at least 1.")
    if not 0 <= cfg.margin <= MAX_MARGIN:
        raise FacepipeError(f"--margin {cfg.margin} must be between 0 and {MAX_MARGIN:g}.")
    if cfg.margin > 0 and cfg.variant in UNPASTED:
        raise FacepipeError(f"--margin widens a pasted photo with background; --variant {cfg.variant} pastes none.")
    if not 0 <= cfg.defocus <= MAX_DEFOCUS:
        raise FacepipeError(f"--defocus {cfg.defocus} must be between 0 and {MAX_DEFOCUS:g}.")
    if cfg.defocus > 0 and cfg.variant in UNPASTED:
        raise FacepipeError(f"--defocus blurs a pasted photo's background; --variant {cfg.variant} pastes none.")
    # Everything is checked before OUT is claimed, so a wrong argument leaves no folder behind.
    photos, in_man = list_photos(cfg.src)
    if in_man is None:
        raise FacepipeError(f"{cfg.src} is not an imported dataset; make it with `facepipe import FORMAT SRC OUT`.")
    schema, bg_id, hair_id, skin_id = _schema_ids(cfg)
    chosen, unlabelled = _chosen(cfg, photos)
    bg_root = Path(cfg.backgrounds)
    bg_files = list_backgrounds(bg_root)
    digest, listing = _backgrounds_digest(bg_files, bg_root)
    # The backgrounds' content, not just their folder's name, decides the output.
    config = {**config_dict(cfg), "backgrounds_sha256": digest}
    if not cfg.defocus:  # recorded only when on: folders pasted before the option existed still resume
        del config["defocus"]

    out = Path(cfg.out)
    with StageOutput(out, "paste", config, force=cfg.force) as so:
        if so.state == "done":
            return so.manifest
        todo = [p for p in chosen if not (out / "records" / f"{p.id}.json").exists()]
        skipped, workers = [], cfg.workers or min(os.cpu_count() or 1, 8)
        jobs = [(p, cfg, [str(f) for f in bg_files], bg_id, hair_id, skin_id, str(out)) for p in todo]
        with reporter.task(f"paste {cfg.variant}", len(chosen)) as advance:
            advance(len(chosen) - len(todo))
            for pid, rec, err in run_jobs(_work, jobs, workers, chunksize=2):
                if err:
                    skipped.append({"id": pid, "reason": err})
                advance()
        records = [json.loads(f.read_text()) for p in chosen if (f := out / "records" / f"{p.id}.json").exists()]
        if not records:
            raise FacepipeError(f"no photo of {cfg.src} could be pasted (first: {skipped[0]['reason']}).")
        write_text(out / "items.jsonl", "".join(json.dumps(r) + "\n" for r in records))
        write_json(out / "splits.json", {cfg.split: [r["id"] for r in records]})
        schema.save(out / "schema.json")
        inputs = {"src": {"path": str(Path(cfg.src).resolve()), "manifest_sha256": in_man["_sha256"]},
                  "backgrounds": {"path": str(bg_root.resolve()), "files": listing}}
        return so.finish(inputs=inputs, counts=_counts(cfg, records, len(skipped) + len(unlabelled)),
                         skipped=unlabelled + skipped,
                         extra={"schema": schema.name, "format": in_man.get("format"), "variant": cfg.variant})
