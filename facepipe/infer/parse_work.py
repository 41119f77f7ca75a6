"""The per-photo halves of `facepipe parse`, run in worker processes: no torch in here.

`align_photo` (decode, detect, landmarks, warp each face to a crop, draw its heatmap) runs before the
network; `write_photo` (warp the faces' scores back (label_warp), one label map, overlay, encode, write) after
it. Both are module-level functions of plain data so a process pool can run them, and both time their
steps so that `parse` can say where the seconds go.
"""
from __future__ import annotations

import json
import os
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facepipe.data.face_detector import box_cut, detector, turned_upright
from facepipe.infer.beyond_crop import FAR_ZOOM, ZOOM, outer_heatmap, outer_matrix, paint_beyond
from facepipe.infer.label_warp import labels_in_photo, union_box
from facepipe.util.align_spec import AlignSpec, align_face
from facepipe.util.atomic import atomic_path
from facepipe.util.errors import BadImage
from facepipe.util.geometry import STRIP_PIXELS, crop_face
from facepipe.util.heap import keep_freed_memory
from facepipe.util.heatmap import draw_heatmap
from facepipe.util.images import load_rgb
from facepipe.util.interrupt import ignore_sigint
from facepipe.util.png_fast import save_rgb_png

OUTPUTS = ("labels", "overlay", "json")


class Clock:
    """Adds the seconds of successive steps into a dict: clock("detect") closes the step since the last call."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def __call__(self, step: str):
        t = time.perf_counter()
        self.seconds[step] = self.seconds.get(step, 0.0) + t - self._t
        self._t = t


def init_worker(det_args: tuple, pooled: bool = False) -> None:
    """Load dlib's models once per worker, not once per photo. In a pool worker, Ctrl-C is left to the
    parent, which stops the pool: otherwise every worker prints its own KeyboardInterrupt traceback.
    A spawned worker is a fresh interpreter: it fixes its allocator's thresholds as the command did."""
    if pooled:
        ignore_sigint()
    keep_freed_memory()
    detector(det_args)


def is_grayscale(rgb: np.ndarray) -> bool:
    """All three channels equal (on a grid of pixels: a colour photo differs almost everywhere)."""
    s = rgb[::7, ::7]
    return bool(np.array_equal(s[..., 0], s[..., 1]) and np.array_equal(s[..., 1], s[..., 2]))


def gray_branch_faces(face_records: list[dict]) -> int:
    """How many of a photo record's faces a two-branch model ran on its grayscale branch."""
    return sum(1 for f in face_records if f.get("branch") == "gray")


def face_cuts(spec: AlignSpec, shape, faces: list[dict]) -> tuple[list[tuple], list[np.ndarray]]:
    """The crops to cut from a photo, as (photo->crop matrix, landmarks in crop or None), and each face's
    matrix, by the model's own alignment (align_spec.align_face, as `align` made its training crops).

    One crop per face, aligned from its landmarks; a face whose landmarks are not trusted (a profile on a
    CNN box) from its box, with no landmarks, so no made-up points reach the heatmap. A letterbox model
    (trained on whole photos fitted into the crop) gets the photo fitted once, whatever the number of
    faces, with the trusted landmarks of every face in its heatmap."""
    cuts = [align_face(spec, shape, f["lm68"], f["box"], f.get("lm_trusted", True)) for f in faces]
    if not spec.letterbox or not faces:
        return cuts, [m for m, _ in cuts]
    pts = [p for _, p in cuts if p is not None]
    m = cuts[0][0]  # every face's letterbox matrix is the same: the photo's
    return [(m, np.concatenate(pts) if pts else None)], [m] * len(faces)


def align_photo(job: dict) -> dict:
    """Decode one photo, find its faces (score >= min_score) and cut the model's crops (face_cuts)."""
    clock = Clock()
    try:
        rgb = load_rgb(job["path"])
    except BadImage as e:
        return {**job, "error": str(e), "seconds": {}}
    if not rgb.flags.writeable:  # numpy views of Pillow's bytes are read-only; write_photo draws in place
        rgb = rgb.copy()
    clock("decode")
    det = detector(job["det_args"])
    found = [f for f in det(rgb) if f["score"] >= job["min_score"]]
    faces = [f for f in found if det.kept(rgb, f, job.get("confirm_below", 0.0))]
    clock("detect+landmarks")
    spec = job["align"]
    cuts, face_mats = face_cuts(spec, rgb.shape, faces)
    crops = [crop_face(rgb, m, spec.size) for m, _ in cuts]
    hms = [draw_heatmap(pts, spec.size) for _, pts in cuts]
    outer = {}
    if job.get("beyond_crop") and not spec.letterbox:  # a letterbox crop is the whole photo already
        mats = [outer_matrix(m, spec.size, ZOOM) for m, _ in cuts]
        outer = {"outer_crops": [crop_face(rgb, m, spec.size) for m in mats],
                 "outer_heatmaps": [outer_heatmap(hm) for hm in hms], "outer_matrices": mats,
                 # The third pass's (long hair): only its matrices; the few faces that need it are cut
                 # where the network runs, from the photo the job carries.
                 "far_matrices": [outer_matrix(m, spec.size, FAR_ZOOM) for m, _ in cuts]}
    clock("warp")
    # Landmarks in each crop, for the landmark prior (infer.landmark_prior); a letterbox crop holds every face.
    points = [None if spec.letterbox else pts for _, pts in cuts]
    return {**job, "rgb": rgb, "faces": faces, "crops": crops, "heatmaps": hms, "matrices": [m for m, _ in cuts],
            "crop_points": points, "unconfirmed": len(found) - len(faces),
            "face_matrices": face_mats, "grayscale": is_grayscale(rgb), "seconds": clock.seconds, **outer}


def overlay_fast(rgb: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5,
                 out: np.ndarray | None = None) -> np.ndarray:
    """sheets.overlay's pixels (background untinted) in uint8, touching only labelled pixels, a strip of
    rows at a time so the temporaries stay small; `out=rgb` draws in place (a 24 MP photo is 72 MB a copy)."""
    out = rgb.copy() if out is None else out
    rows = max(1, STRIP_PIXELS // max(1, labels.shape[1]))
    for y in range(0, labels.shape[0], rows):
        lab, src, dst = labels[y:y + rows], rgb[y:y + rows], out[y:y + rows]
        m = (lab != 0) & (lab != 255)
        if not m.any():
            continue
        col = palette[lab[m]]
        if alpha == 0.5:  # exact: (a + b) / 2 truncated, as the float formula gives
            dst[m] = ((src[m].astype(np.uint16) + col) >> 1).astype(np.uint8)
        else:
            dst[m] = np.clip((1 - alpha) * src[m].astype(np.float32) + alpha * col, 0, 255).astype(np.uint8)
    return out


def legend(classes, colors, present, photo_side: int) -> np.ndarray | None:
    """A small RGB tile: class swatches and names of the classes present, sized to the photo."""
    items = [(c, tuple(colors[i])) for i, c in enumerate(classes) if i > 0 and present[i]]
    if not items:
        return None
    px = max(10, photo_side // 40)
    try:
        font = ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        font = ImageFont.load_default()
    pad = px // 3
    width = max(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(c, font=font) for c, _ in items)
    tile = Image.new("RGB", (int(2 * pad + 1.6 * px + width), int(pad + len(items) * (px + pad))), (0, 0, 0))
    draw = ImageDraw.Draw(tile)
    for k, (name, col) in enumerate(items):
        y = pad + k * (px + pad)
        draw.rectangle([pad, y, pad + px, y + px], fill=col)
        draw.text((int(pad + 1.5 * px), y), name, fill=(255, 255, 255), font=font)
    return np.asarray(tile)


def paste_legend(rgb: np.ndarray, tile: np.ndarray | None, labels: np.ndarray | None = None,
                 counts: np.ndarray | None = None) -> tuple[int, int]:
    """Into a corner, in place (clipped on photos smaller than the legend): the top-left one, or with the
    photo's labels the corner that hides the least of them, each class weighed by its share of the photo
    (counts: pixels per class id, from the labels when not given), so that on a face crop it covers skin
    or hair rather than an eye or the mouth; the first of top-left, top-right, bottom-left, bottom-right
    among equals. Returns its top-left pixel (row, column)."""
    if tile is None:
        return 0, 0
    h, w = min(tile.shape[0], rgb.shape[0]), min(tile.shape[1], rgb.shape[1])
    corners = [(0, 0), (0, rgb.shape[1] - w), (rgb.shape[0] - h, 0), (rgb.shape[0] - h, rgb.shape[1] - w)]
    if labels is not None:
        counts = np.bincount(labels.ravel(), minlength=256) if counts is None else counts
        weight = np.zeros(256)
        weight[:len(counts)] = 1.0 / np.maximum(counts, 1)
        weight[0] = weight[255] = 0.0  # background and unlabelled pixels are not hidden
        hidden = [weight[labels[y:y + h, x:x + w]].sum() for y, x in corners]
        corners = [corners[int(np.argmin(hidden))]]
    y, x = corners[0]
    rgb[y:y + h, x:x + w] = tile[:h, :w]
    return y, x


def label_image(labels: np.ndarray, palette: np.ndarray) -> Image.Image:
    """Palette PNG: the pixel values stay the class ids, and viewers show the class colours."""
    im = Image.fromarray(np.ascontiguousarray(labels, np.uint8))
    im.putpalette(palette.reshape(-1).tolist(), rawmode="RGB")  # an L image given a palette becomes P
    return im


def save_png(path: Path, im: Image.Image, **kw) -> None:
    """Straight into a temporary file renamed into place: no second copy in memory. Not fsynced: after a
    crash a file is whole or absent; only a power cut can leave an empty one, and resume redoes a photo
    whose files are empty. fsync cost 4-8 ms a file here, a third of parse's time on small photos."""
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG", compress_level=1, **kw)


def save_record(path: Path, rec: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(rec, indent=1) + "\n")


def _paint_beyond(job: dict, labels: np.ndarray, mats: list, classes: list) -> tuple[int, int, list]:
    """The second and third passes' hair, then the skin below the crops (the neck, over background only),
    painted into the photo's labels; (hair pixels, skin pixels, the matrices of every crop that labelled
    the photo: where the counts and the tint must look)."""
    far = job.get("beyond_far") or [None] * len(job["beyond"])
    size = job["align"].size
    hair = paint_beyond(labels, list(job["beyond"]) + list(far),
                        list(job["outer_matrices"]) + list(job["far_matrices"]), mats, size, classes.index("hair"))
    skin = 0
    for i, mask in enumerate(job.get("skin_beyond") or ()):
        if mask is not None:  # not kept out of its own crop's rim, where warping back leaves background
            skin += paint_beyond(labels, [mask], [job["outer_matrices"][i]], mats[:i] + mats[i + 1:], size,
                                 classes.index("skin"), over=classes.index("background"))
    return hair, skin, mats + list(job["outer_matrices"]) + [m for m, q in zip(job["far_matrices"], far)
                                                             if q is not None]


def _photo_record(job: dict, w: int, h: int) -> dict:
    """The photo's record (its json) before its label counts: the photo, the model and each face."""
    # photo_abs: the same photo given by a relative name once and found by a folder search (absolute paths)
    # the next time is known by it (parse.plan_photos); a relative name alone means another photo elsewhere.
    return {"photo": job["path"], "photo_abs": os.path.abspath(job["path"]), "width": w, "height": h,
            "grayscale": job["grayscale"],
            "model": job["model"], "schema": job["schema"],
            **({"unconfirmed_hits": job["unconfirmed"]} if job.get("unconfirmed") else {}),  # weak hits dropped
            "faces": [{"box": f["box"], "score": f["score"], "landmarks68": f["lm68"], "matrix": m.tolist(),
                       **({"lm_trusted": f["lm_trusted"]} if "lm_trusted" in f else {}),  # CNN faces only
                       **({"roll": f["roll"]} if "roll" in f else {}),  # a face found on its side
                       **({"branch": job["branches"][i]} if job.get("branches") else {}),  # two-branch models
                       **({"colour_pixels": job["colour_pixels"][i]} if job.get("colour_pixels") else {}),
                       **({"prior_pixels": job["prior_pixels"][i]} if job.get("prior_pixels") else {})}
                      for i, (f, m) in enumerate(zip(job["faces"], job["face_matrices"]))]}


def write_photo(job: dict) -> dict:
    """Label map, overlay and record of one photo; the record (json) is written last, as the photo's
    "done" mark for resuming."""
    clock = Clock()
    out, stem, rgb = Path(job["out"]), job["stem"], job["rgb"]
    schema, outputs = job["schema"], job["outputs"]
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(schema["colors"])] = np.array(schema["colors"], np.uint8)
    h, w = rgb.shape[:2]
    faces, mats = job["faces"], job["matrices"]
    rec = _photo_record(job, w, h)
    if faces:
        labels = labels_in_photo(job["scores"], mats, job["align"].size, (h, w))
        reach = mats
        if job.get("beyond"):  # hair and skin beyond the crops (infer.beyond_crop, infer.neck)
            hair, skin, reach = _paint_beyond(job, labels, mats, list(schema["classes"]))
            rec["hair_beyond_crop_pixels"] = hair
            if job.get("skin_beyond") is not None:
                rec["skin_beyond_crop_pixels"] = skin
        clock("warp back")
        # Only the faces' footprints hold labels: count and tint there (two faces in a 24 MP photo are a
        # few percent of it), the rest is background.
        y0, y1, x0, x1 = union_box(reach, job["align"].size, (h, w))
        counts = np.bincount(labels[y0:y1, x0:x1].ravel(), minlength=len(schema["classes"]))
        counts[0] += h * w - (y1 - y0) * (x1 - x0)
        rec["pixel_counts"] = {c: int(counts[i]) for i, c in enumerate(schema["classes"])}
        # The label PNG is encoded on a thread (Pillow lets go of the GIL) while the overlay is drawn and
        # deflated on job["png_threads"] threads (png_fast): a 24 MP photo's 2.1 s of writing became 0.6 s.
        with ThreadPoolExecutor(1) as side:
            done = None
            if "labels" in outputs:  # run-length deflate: label maps are long runs (half the size, faster)
                done = side.submit(save_png, out / f"{stem}.labels.png", label_image(labels, palette),
                                   compress_type=zlib.Z_RLE)
                rec["labels"] = f"{stem}.labels.png"
            if "overlay" in outputs:
                rgb = np.ascontiguousarray(rgb)
                part = rgb[y0:y1, x0:x1]  # a view: drawn in place, the photo is not needed after this
                overlay_fast(part, labels[y0:y1, x0:x1], palette, 0.5, out=part)
                tile = legend(schema["classes"], schema["colors"], counts > 0, min(h, w))
                paste_legend(rgb, tile, labels, counts)
                with atomic_path(out / f"{stem}.overlay.png") as tmp:
                    save_rgb_png(tmp, rgb, job.get("png_threads", 1))
                rec["overlay"] = f"{stem}.overlay.png"
            if done is not None:
                done.result()
        clock("encode+write")
    if "json" in outputs:
        save_record(out / f"{stem}.json", rec)
        clock("encode+write")
    return {"path": job["path"], "stem": stem, "faces": len(faces), "grayscale": job["grayscale"],
            "box_cut": box_cut(faces), "turned": turned_upright(faces), "gray_branch": gray_branch_faces(rec["faces"]),
            "unconfirmed": job.get("unconfirmed", 0), "seconds": clock.seconds}
