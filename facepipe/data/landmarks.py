"""Stage `landmarks`: dlib face detection with 5- and 68-point landmarks for every photo of a folder.

Output: OUT/faces/<id>.json per photo ({"id", "image", "width", "height", "faces": [{"box": [l, t, r, b],
"score", "lm5": 5x2 (dlib's 5-point model), "lm68": 68x2}]}), OUT/items.jsonl, manifest.json.
Every face is kept, with its box and detector score.

`--detector` chooses dlib's HOG (the default), CNN, or HOG with the CNN on photos HOG finds no face in
("hog+cnn"; face_detector.py says how they differ).
Every CNN face carries "lm_trusted" (face_detector.landmarks_trusted), and a face with "lm_trusted":
false is aligned from its box (geometry.box_matrix), not from its landmarks, by `parse` and by
`align --landmarks DIR`. HOG faces carry no flag (their landmarks are trusted): their records are as
before this option.

`--shard I/N` does every Nth photo from the I-th and writes no manifest; a final run without --shard
collects the shards' files (see manifest.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from facepipe.data.face_detector import box_cut, check_detector, detector, detector_args, turned_upright
from facepipe.util.atomic import write_json, write_text
from facepipe.util.errors import BadImage, FacepipeError
from facepipe.util.images import load_rgb
from facepipe.util.manifest import StageOutput, config_dict, shard_summary
from facepipe.util.photos import Photo, list_photos
from facepipe.util.pool import NO_FACE, each_photo, name_new, new_since
from facepipe.util.progress import SILENT, Reporter


@dataclass(frozen=True)
class LandmarksConfig:
    src: str
    out: str = field(metadata={"identity": False})
    upsample: int = -1  # dlib detector upsampling; -1 = auto (hog: 1 for photos under 1200 px, else 0; cnn: face_detector)
    max_side: int = 1600  # photos are shrunk to this for detection (landmarks use full resolution)
    threshold: float = 0.0  # dlib detector score threshold
    # "hog", "cnn" or "hog+cnn" (face_detector.DETECTORS). Identity, but written into the config only when
    # not "hog" (landmarks_config), so HOG outputs made before this option keep their config and are still
    # found done.
    detector: str = field(default="hog", metadata={"identity": False})
    workers: int = field(default=0, metadata={"identity": False})
    force: bool = field(default=False, metadata={"identity": False})
    shard: tuple[int, int] | None = field(default=None, metadata={"identity": False})  # (I, N): every Nth photo


def landmarks_config(cfg: LandmarksConfig) -> dict:
    """The manifest config: config_dict, plus the detector when it is not the default HOG."""
    out = config_dict(cfg)
    if cfg.detector != "hog":
        out["detector"] = cfg.detector
    return out


def detect_photo(photo: Photo, det_args: tuple) -> dict:
    rgb = load_rgb(photo.path)
    faces = detector(det_args)(rgb)
    return {"id": photo.id, "image": photo.path, "width": rgb.shape[1], "height": rgb.shape[0], "faces": faces}


def _work(args):
    photo, det_args, out = args
    try:
        rec = detect_photo(photo, det_args)
    except BadImage as e:
        return photo.id, None, str(e)
    write_json(Path(out) / "faces" / f"{photo.id}.json", rec)
    return photo.id, len(rec["faces"]), None


def run_landmarks(cfg: LandmarksConfig, reporter: Reporter = SILENT) -> dict:
    det_args = detector_args(cfg.detector, cfg.upsample, cfg.max_side, cfg.threshold)
    check_detector(det_args)  # before the output folder is claimed
    photos, in_man = list_photos(cfg.src)
    out = Path(cfg.out)

    def done(p):
        return out / "faces" / f"{p.id}.json"

    with StageOutput(out, "landmarks", landmarks_config(cfg), force=cfg.force, shard=cfg.shard) as so:
        if so.state == "done":
            name_new(new_since(so.manifest, photos, done, out), cfg.src, out, reporter)
            return so.manifest
        mine, todo, skipped = each_photo("landmarks", photos, cfg.shard, done,
                                         _work, lambda p: (p, det_args, str(out)), cfg.workers, reporter)
        if cfg.shard is not None:
            return shard_summary(so, cfg.shard, len(mine), len(todo), skipped)
        recs = []
        for p in photos:
            f = out / "faces" / f"{p.id}.json"
            if f.exists():
                recs.append(json.loads(f.read_text()))
        write_text(out / "items.jsonl", "".join(
            json.dumps({"id": r["id"], "faces": len(r["faces"])}) + "\n" for r in recs))
        n_faces = [len(r["faces"]) for r in recs]
        counts = {"photos": len(photos), "read": len(recs), "unreadable": len(skipped),
                  "faces": int(sum(n_faces)), "no_face": int(sum(n == 0 for n in n_faces)),
                  "multi_face": int(sum(n > 1 for n in n_faces))}
        if cfg.detector != "hog":  # faces the CNN found, and of those the ones align will cut from their box
            cnn = [fc for r in recs for fc in r["faces"] if "lm_trusted" in fc]
            counts.update(cnn_faces=len(cnn), box_cut=box_cut(cnn), turned=turned_upright(cnn))
        if photos and not recs:  # nothing read: not a finished output, and a non-zero exit
            raise FacepipeError(f"no photo in {cfg.src} could be read ({len(skipped)} unreadable, e.g. "
                                f"{skipped[0]['reason']}).")
        nofaces = [{"id": r["id"], "reason": NO_FACE} for r in recs if not r["faces"]]
        return so.finish(inputs={"src": {"path": str(Path(cfg.src).resolve()),
                                         "manifest_sha256": in_man["_sha256"] if in_man else None}},
                         counts=counts, skipped=skipped + nofaces)


