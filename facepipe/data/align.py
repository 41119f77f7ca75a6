"""Stage `align`: similarity-align every face onto a fixed 5-point template in an s x s crop.

Input: an imported dataset or a folder of photos. Landmarks come from a `landmarks` output
(--landmarks DIR), from the dataset's own landmark files (--landmarks dataset), or from running dlib
here. Output:
  OUT/images/<face>.png   s x s RGB crop (bilinear)
  OUT/labels/<face>.png   its label ids (nearest; `outside_label`, background by default, where the
                          crop leaves the photo)
  OUT/faces.jsonl         per face: photo id and path, split, 3x3 photo->crop matrix, fitted flag,
                          box, score, landmarks in crop coordinates, photo size and label path
  OUT/schema.json, OUT/manifest.json
`--shard I/N` aligns every Nth photo from the I-th (records/<id>.json) and writes no faces.jsonl or
manifest; a final run without --shard collects the shards' records (see manifest.py).
A labelled photo keeps its largest face (its label map describes one subject). A labelled photo whose
face dlib cannot find (FASSEG profiles) is fitted whole into the crop, marked `fitted` and counted,
never dropped. Unlabelled photos give one crop per face; with no face they are listed and skipped.
A face from a `landmarks --detector cnn` output whose landmarks are not trusted ("lm_trusted": false,
a profile) is aligned from its box (geometry.box_matrix): its record keeps "lm_trusted": false and has
no landmarks (made-up points would draw a misleading heatmap); the manifest counts `box_aligned`.
Each crop's matrix comes from util/align_spec.align_face, the one alignment `parse` uses too.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facepipe.data.face_detector import detector, detector_args
from facepipe.util.align_spec import DEFAULT_IOD, AlignSpec, align_face
from facepipe.util.atomic import save_image, write_json, write_text
from facepipe.util.errors import BadImage, FacepipeError
from facepipe.util.geometry import BOX_WIDTH_IN_IOD, template, warp_image, warp_labels
from facepipe.util.images import load_ids, load_rgb
from facepipe.util.landmark_txt import read_landmark_txt
from facepipe.util.manifest import StageOutput, config_dict, read_manifest, shard_summary
from facepipe.util.photos import Photo, list_photos
from facepipe.util.pool import NO_FACE, each_photo, name_new, new_since
from facepipe.util.progress import SILENT, Reporter


@dataclass(frozen=True)
class AlignConfig:
    src: str
    out: str = field(metadata={"identity": False})
    size: int = 256
    iod: float = DEFAULT_IOD  # eye distance as a fraction of the crop side (see geometry.template)
    landmarks: str | None = None  # a `landmarks` output folder, "dataset", or None (detect here)
    min_face: int = 20  # unlabelled faces with a smaller box side (px) are skipped
    no_face: str = "auto"  # "fit", "skip" or "auto" (fit labelled photos, skip unlabelled ones)
    letterbox: bool = False  # baseline without alignment: every photo fitted whole (landmarks still kept)
    box_width: float = BOX_WIDTH_IN_IOD  # faces cut from their box (untrusted landmarks): box width in eye distances
    turn_shift: float = 0.0  # turned faces: crop moved toward the back of the head (util.geometry.turn_shift)
    # Label of crop pixels outside the photo. Background (0), not ignore: a model that never saw the
    # black padding labelled predicted junk classes along the photo's edges (teacher t1 on FASSEG).
    outside_label: int = 0
    workers: int = field(default=0, metadata={"identity": False})
    force: bool = field(default=False, metadata={"identity": False})
    shard: tuple[int, int] | None = field(default=None, metadata={"identity": False})  # (I, N): every Nth photo


NOT_IN_LANDMARKS = "not in landmarks output"  # a skipped photo's reason, counted apart from unreadable ones


def _landmarks_cover(photos: list, cfg: AlignConfig, lm_man: dict) -> str:
    """A landmarks folder made from other photos is refused; one that misses some of these (not photos it
    could not read: align cannot either) gets a line to print."""
    unread = {str(s.get("id")) for s in lm_man.get("skipped", [])}
    missing = sum(str(p.id) not in unread and not (Path(cfg.landmarks) / "faces" / f"{p.id}.json").exists()
                  for p in photos)
    made_from = (lm_man.get("config") or {}).get("src", "?")
    if photos and missing == len(photos):
        raise FacepipeError(f"{cfg.landmarks} has landmarks for none of the {len(photos)} photos in {cfg.src} (it "
                            f"was made from {made_from}): run `facepipe landmarks {cfg.src} LANDMARKS` first.")
    return (f"[yellow]{missing} of {len(photos)} photos in {cfg.src} are not in {cfg.landmarks} (made from "
            f"{made_from}): skipped, counted as not_in_landmarks[/]") if missing else ""


def _faces_for(photo: Photo, rgb: np.ndarray, cfg: AlignConfig) -> list[dict]:
    if cfg.landmarks == "dataset":
        if not photo.landmarks:
            return []
        return [{"box": None, "score": None, "landmarks": read_landmark_txt(photo.landmarks).tolist()}]
    if cfg.landmarks:
        f = Path(cfg.landmarks) / "faces" / f"{photo.id}.json"
        if not f.exists():
            raise BadImage(f"{photo.id}: {NOT_IN_LANDMARKS} {cfg.landmarks}")
        faces = json.loads(f.read_text())["faces"]
    else:
        faces = detector(detector_args())(rgb)  # dlib's HOG at its default settings
    # "lm_trusted" only where the detector set it (CNN faces): HOG records stay as they were.
    return [{"box": fc["box"], "score": fc["score"], "landmarks": fc["lm68"],
             **({"lm_trusted": fc["lm_trusted"]} if "lm_trusted" in fc else {})} for fc in faces]


def _kept_faces(faces: list[dict], labelled: bool, cfg: AlignConfig) -> tuple[list[dict], int]:
    """The faces to crop and how many were dropped: a labelled photo keeps its largest face (its label
    map describes one subject), an unlabelled one every face but those smaller than min_face; a photo
    left without a face is fitted whole when `no_face` says so."""
    if labelled:
        kept = faces[:1]  # detections are sorted largest first
    else:
        kept = [f for f in faces if not f["box"] or _side(f["box"]) >= cfg.min_face]
    no_face = cfg.no_face if cfg.no_face != "auto" else ("fit" if labelled else "skip")
    dropped = len(faces) - len(kept)
    if not kept and no_face == "fit":
        kept = [{"box": None, "score": None, "landmarks": None, "fitted": True}]
    return kept, dropped


def _side(box) -> float:
    return min(box[2] - box[0], box[3] - box[1])


def _crop(photo: Photo, rgb: np.ndarray, ids, face: dict, fid: str, spec: AlignSpec, cfg: AlignConfig,
          out: Path) -> dict:
    """Warp one face (and its labels) into the crop; returns its faces.jsonl record."""
    h, w = rgb.shape[:2]
    try:
        m, lm = align_face(spec, (h, w), face["landmarks"], face["box"], face.get("lm_trusted", True))
    except ValueError as e:
        raise BadImage(f"{photo.id}: {e}") from None
    save_image(out / "images" / f"{fid}.png", warp_image(rgb, m, cfg.size))
    rec = {"id": fid, "photo_id": photo.id, "photo": photo.path, "photo_label": photo.label,
           "split": photo.split, "width": w, "height": h, "matrix": m.tolist(), "fitted": bool(face.get("fitted")),
           "box": face["box"], "score": face["score"],
           "landmarks": None if lm is None else np.round(lm, 3).tolist()}
    if "lm_trusted" in face:
        rec["lm_trusted"] = bool(face["lm_trusted"])
    if ids is not None:
        save_image(out / "labels" / f"{fid}.png", warp_labels(ids, m, cfg.size, fill=cfg.outside_label))
        rec["label"] = f"labels/{fid}.png"
    rec["image"] = f"images/{fid}.png"
    return rec


def align_photo(photo: Photo, cfg: AlignConfig, out: Path) -> dict:
    """Align one photo's faces into `out`; returns its record (faces list may be empty)."""
    rgb = load_rgb(photo.path)
    h, w = rgb.shape[:2]
    ids = None
    if photo.label:
        ids = load_ids(photo.label)
        if ids.shape != (h, w):
            raise BadImage(f"{photo.id}: label size {ids.shape[::-1]} differs from image size {(w, h)}")
    faces, dropped = _kept_faces(_faces_for(photo, rgb, cfg), ids is not None, cfg)
    spec = AlignSpec(cfg.size, cfg.iod, cfg.letterbox, cfg.box_width, cfg.turn_shift)
    crops = [_crop(photo, rgb, ids, face, photo.id if len(faces) == 1 else f"{photo.id}_f{k}", spec, cfg, out)
             for k, face in enumerate(faces)]
    rec = {"id": photo.id, "faces": crops, "dropped_faces": dropped}
    write_json(out / "records" / f"{photo.id}.json", rec)  # last: marks the photo done
    return rec


def _work(args):
    photo, cfg, out = args
    try:
        return photo.id, align_photo(photo, cfg, Path(out)), None
    except BadImage as e:
        return photo.id, None, str(e)


def _records(photos: list, done) -> tuple[list, list, int]:
    """The aligned faces of the photos done, the photos without a face (skipped items), faces dropped."""
    faces, no_face, dropped = [], [], 0
    for p in photos:
        f = done(p)
        if not f.exists():
            continue
        r = json.loads(f.read_text())
        dropped += r.get("dropped_faces", 0)
        if not r["faces"]:
            no_face.append({"id": p.id, "reason": NO_FACE})
        faces.extend(r["faces"])
    return faces, no_face, dropped


def run_align(cfg: AlignConfig, reporter: Reporter = SILENT) -> dict:
    photos, in_man = list_photos(cfg.src)
    lm_man = None
    if cfg.landmarks and cfg.landmarks != "dataset":
        lm_man = read_manifest(cfg.landmarks, ("landmarks",), what="landmarks folder")
    cover_note = _landmarks_cover(photos, cfg, lm_man) if lm_man else ""
    if cfg.landmarks == "dataset" and not any(p.landmarks for p in photos):
        raise FacepipeError(f"{cfg.src} has no dataset landmarks; drop --landmarks dataset to detect faces.")
    if cfg.size < 32 or cfg.size > 2048:
        raise FacepipeError(f"--size {cfg.size} is out of range (32..2048).")
    out = Path(cfg.out)
    config = config_dict(cfg)
    if not cfg.turn_shift:
        del config["turn_shift"]  # absent when unused: outputs made before --turn-shift existed still match

    def done(p):
        return out / "records" / f"{p.id}.json"

    with StageOutput(out, "align", config, force=cfg.force, shard=cfg.shard) as so:
        if so.state == "done":
            name_new(new_since(so.manifest, photos, done, out), cfg.src, out, reporter)
            return so.manifest
        if cover_note:
            reporter.log(cover_note)
        mine, todo, skipped = each_photo("align", photos, cfg.shard, done,
                                         _work, lambda p: (p, cfg, str(out)), cfg.workers, reporter)
        if cfg.shard is not None:
            return shard_summary(so, cfg.shard, len(mine), len(todo), skipped)
        faces, no_face, dropped = _records(photos, done)
        uncovered = sum(NOT_IN_LANDMARKS in str(s.get("reason", "")) for s in skipped)
        if not faces:
            raise FacepipeError(f"no face could be aligned in {cfg.src} ({len(skipped) - uncovered} unreadable, "
                                f"{len(no_face)} without a face"
                                f"{f', {uncovered} not in {cfg.landmarks}' if uncovered else ''}).")
        write_text(out / "faces.jsonl", "".join(json.dumps(f) + "\n" for f in faces))
        src_schema = Path(cfg.src) / "schema.json"
        if src_schema.exists():
            shutil.copyfile(src_schema, out / "schema.json")
        fitted = sum(f["fitted"] for f in faces)
        counts = {"photos": len(photos), "faces": len(faces), "detected": len(faces) - fitted,
                  "fitted_no_face": fitted, "photos_without_face_skipped": len(no_face),
                  "extra_or_small_faces_dropped": dropped, "unreadable": len(skipped) - uncovered,
                  "labelled": sum("label" in f for f in faces)}
        if uncovered:  # only where it happens: manifests of complete landmarks folders stay as they were
            counts["not_in_landmarks"] = uncovered
        box_aligned = sum(f.get("lm_trusted") is False and not f["fitted"] and not cfg.letterbox for f in faces)
        if box_aligned:  # only CNN landmarks give these; HOG manifests stay as they were
            counts["box_aligned"] = box_aligned
        inputs = {"src": {"path": str(Path(cfg.src).resolve()), "manifest_sha256": in_man["_sha256"] if in_man else None}}
        if lm_man:
            inputs["landmarks"] = {"path": str(Path(cfg.landmarks).resolve()), "manifest_sha256": lm_man["_sha256"]}
        return so.finish(inputs=inputs, counts=counts, skipped=skipped + no_face,
                         extra={"template": template(cfg.size, cfg.iod).round(3).tolist()})

