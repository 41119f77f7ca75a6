"""Stage `landmarks`: dlib face detection with 5- and 68-point landmarks for every photo of a folder.

Output: OUT/faces/<id>.json per photo ({"id", "image", "width", "height", "faces": [{"box": [l, t, r, b],
"score", "lm5": 5x2 (dlib's 5-point model), "lm68": 68x2}]}), OUT/items.jsonl, manifest.json.
Every face is kept, with its box and detector score. `--shard I/N` does every Nth photo from the I-th and
writes no manifest; a final run without --shard collects the shards' files (see manifest.py). The models come from the PyPI package
face-recognition-models; nothing is downloaded.
"""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facepipe.atomic import write_json, write_text
from facepipe.errors import BadImage, FacepipeError
from facepipe.images import load_rgb
from facepipe.manifest import StageOutput, config_dict, shard_summary
from facepipe.photos import Photo, list_photos
from facepipe.pool import run_jobs
from facepipe.progress import SILENT, Reporter


@dataclass(frozen=True)
class LandmarksConfig:
    src: str
    out: str = field(metadata={"identity": False})
    upsample: int = -1  # dlib detector upsampling; -1 = auto (1 for photos under 1200 px, else 0)
    max_side: int = 1600  # photos are shrunk to this for detection (landmarks use full resolution)
    threshold: float = 0.0  # dlib detector score threshold
    workers: int = field(default=0, metadata={"identity": False})
    force: bool = field(default=False, metadata={"identity": False})
    shard: tuple[int, int] | None = field(default=None, metadata={"identity": False})  # (I, N): every Nth photo


def model_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.origin:
        raise FacepipeError("dlib models not found: pip install face-recognition-models")
    return Path(spec.origin).parent / "models"


class FaceDetector:
    """dlib HOG detector + 5- and 68-point shape predictors, loaded once per process."""

    def __init__(self, upsample: int = -1, max_side: int = 1600, threshold: float = 0.0):
        import dlib

        d = model_dir()
        self.detector = dlib.get_frontal_face_detector()
        self.sp5 = dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat"))
        self.sp68 = dlib.shape_predictor(str(d / "shape_predictor_68_face_landmarks.dat"))
        self.upsample, self.max_side, self.threshold = upsample, max_side, threshold
        self._dlib = dlib

    def __call__(self, rgb: np.ndarray) -> list[dict]:
        dlib = self._dlib
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = rgb
        if scale < 1.0:
            from PIL import Image

            small = np.asarray(Image.fromarray(rgb).resize((round(w * scale), round(h * scale)), Image.BILINEAR))
        up = self.upsample if self.upsample >= 0 else (1 if max(small.shape[:2]) < 1200 else 0)
        rects, scores, _ = self.detector.run(small, up, self.threshold)
        faces = []
        for r, sc in zip(rects, scores):
            l, t, rr, b = (v / scale for v in (r.left(), r.top(), r.right(), r.bottom()))
            rect = dlib.rectangle(round(l), round(t), round(rr), round(b))
            faces.append({
                "box": [round(l, 1), round(t, 1), round(rr, 1), round(b, 1)],
                "score": round(float(sc), 4),
                "lm5": _pts(self.sp5(rgb, rect)),
                "lm68": _pts(self.sp68(rgb, rect)),
            })
        faces.sort(key=lambda f: -(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
        return faces


def _pts(shape) -> list[list[float]]:
    return [[float(shape.part(i).x), float(shape.part(i).y)] for i in range(shape.num_parts)]


_DETECTORS: dict[tuple, FaceDetector] = {}


def _detector(cfg_tuple) -> FaceDetector:
    """One detector per setting per process (the models take ~1 s to load); keyed by the settings, so a
    later caller with another threshold does not get the first caller's detector."""
    key = tuple(cfg_tuple)
    if key not in _DETECTORS:
        _DETECTORS[key] = FaceDetector(*key)
    return _DETECTORS[key]


def detect_photo(photo: Photo, det_args: tuple) -> dict:
    rgb = load_rgb(photo.path)
    faces = _detector(det_args)(rgb)
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
    photos, in_man = list_photos(cfg.src)
    out = Path(cfg.out)
    with StageOutput(out, "landmarks", config_dict(cfg), force=cfg.force, shard=cfg.shard) as so:
        if so.state == "done":
            return so.manifest
        mine = photos if cfg.shard is None else photos[cfg.shard[0]::cfg.shard[1]]
        todo = [p for p in mine if not (out / "faces" / f"{p.id}.json").exists()]
        det_args = (cfg.upsample, cfg.max_side, cfg.threshold)
        skipped, workers = [], cfg.workers or (os.cpu_count() or 1)
        with reporter.task("landmarks", len(mine)) as advance:
            advance(len(mine) - len(todo))
            for r in run_jobs(_work, [(p, det_args, str(out)) for p in todo], workers):
                _note(r, skipped)
                advance()
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
        nofaces = [{"id": r["id"], "reason": "no face found"} for r in recs if not r["faces"]]
        return so.finish(inputs={"src": {"path": str(Path(cfg.src).resolve()),
                                         "manifest_sha256": in_man["_sha256"] if in_man else None}},
                         counts=counts, skipped=skipped + nofaces)


def _note(result, skipped):
    pid, n, err = result
    if err is not None:
        skipped.append({"id": pid, "reason": err})


def load_faces(folder, photo_id: str) -> dict | None:
    f = Path(folder) / "faces" / f"{photo_id}.json"
    return json.loads(f.read_text()) if f.exists() else None
