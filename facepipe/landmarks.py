"""Stage `landmarks`: dlib face detection with 5- and 68-point landmarks for every photo of a folder.

Output: OUT/faces/<id>.json per photo ({"id", "image", "width", "height", "faces": [{"box": [l, t, r, b],
"score", "lm5": 5x2 (dlib's 5-point model), "lm68": 68x2}]}), OUT/items.jsonl, manifest.json.
Every face is kept, with its box and detector score.

Two detectors (`--detector`): "hog", dlib's frontal HOG detector (the default; fast, frontal faces
only: it misses 82 of FASSEG V3's 182 photos, 81 of them turned 45 degrees or more), and "cnn", dlib's MMOD
CNN (mmod_human_face_detector.dat: finds profiles too, ~20x slower on a CPU). dlib's shape predictors
were trained on HOG-like boxes and frontal-ish faces, so on a CNN box the landmarks of a turned face are
made up: every CNN face carries "lm_trusted" (see `landmarks_trusted`), and a face with "lm_trusted":
false is aligned from its box (geometry.box_matrix), not from its landmarks, by `parse` and by
`align --landmarks DIR`. HOG faces carry no flag (their landmarks are trusted): their records are as
before this option.

`--shard I/N` does every Nth photo from the I-th and writes no manifest; a final run without --shard
collects the shards' files (see manifest.py). The models come from the PyPI package
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


DETECTORS = ("hog", "cnn")
# CNN upsampling by photo size (upsample -1): the network costs ~4x per upsampling, and sees faces down
# to ~80 px at upsample 0, ~40 px at 1. Photos (after the max_side shrink) under this longest side get 1,
# so the network never looks at more than 800 px for an auto choice; larger photos get 0.
CNN_AUTO_UPSAMPLE_BELOW = 400
# The CNN's memory grows with the pixels it looks at (photo after max_side, x 4 per upsampling): measured
# 0.46 GB at 800x600 and 1.8 GB at 1600x1200 (17 s there on this 2-core CPU, against ~2 s at 512 px), so
# ~7 GB per process at 3200x2400. Settings that can go past this side (max_side x 2**upsample) are
# refused before any work.
CNN_MAX_SIDE_SEEN = 3200


@dataclass(frozen=True)
class LandmarksConfig:
    src: str
    out: str = field(metadata={"identity": False})
    upsample: int = -1  # dlib detector upsampling; -1 = auto (hog: 1 for photos under 1200 px, else 0; cnn: see above)
    max_side: int = 1600  # photos are shrunk to this for detection (landmarks use full resolution)
    threshold: float = 0.0  # dlib detector score threshold
    # "hog" or "cnn". Identity, but written into the config only when not "hog" (landmarks_config), so
    # HOG outputs made before this option keep their config and are still found done.
    detector: str = field(default="hog", metadata={"identity": False})
    workers: int = field(default=0, metadata={"identity": False})
    force: bool = field(default=False, metadata={"identity": False})
    shard: tuple[int, int] | None = field(default=None, metadata={"identity": False})  # (I, N): every Nth photo


def model_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.origin:
        raise FacepipeError("dlib models not found: pip install face-recognition-models")
    return Path(spec.origin).parent / "models"


def landmarks_config(cfg: LandmarksConfig) -> dict:
    """The manifest config: config_dict, plus the detector when it is not the default HOG."""
    out = config_dict(cfg)
    if cfg.detector != "hog":
        out["detector"] = cfg.detector
    return out


def detector_args(detector: str = "hog", upsample: int = -1, max_side: int = 1600, threshold: float = 0.0) -> tuple:
    """The settings tuple `_detector` takes: (upsample, max_side, threshold) for HOG, as it always was,
    and (upsample, max_side, threshold, "cnn") for the CNN, so settings of different detectors never
    compare equal (parse writes this tuple into its manifest config)."""
    if detector == "hog":
        return (upsample, max_side, threshold)
    return (upsample, max_side, threshold, detector)


def _model_file(name: str) -> Path:
    f = model_dir() / name
    if not f.is_file():
        raise FacepipeError(f"dlib model {f} is missing; reinstall it: pip install --force-reinstall "
                            "face-recognition-models")
    return f


def check_detector(det_args: tuple) -> None:
    """Refuse settings the detector cannot run, with one line, before a stage claims its output folder:
    an unknown detector, a missing model file, a dlib without the CNN, a CNN upsampling too large."""
    upsample, max_side, _thr, kind = (*det_args, "hog")[:4]
    if kind not in DETECTORS:
        raise FacepipeError(f"unknown detector {kind!r}; choose one of {', '.join(DETECTORS)}.")
    for name in ("shape_predictor_5_face_landmarks.dat", "shape_predictor_68_face_landmarks.dat"):
        _model_file(name)
    if kind == "cnn":
        _model_file("mmod_human_face_detector.dat")
        import dlib

        if not hasattr(dlib, "cnn_face_detection_model_v1"):
            raise FacepipeError(f"this dlib ({getattr(dlib, '__version__', '?')}) has no CNN face detector; "
                                "use --detector hog or install dlib >= 19.4.")
        if upsample > 0 and max_side * 2 ** upsample > CNN_MAX_SIDE_SEEN:
            raise FacepipeError(
                f"--upsample {upsample} with --detector cnn runs the CNN on photos of up to "
                f"{max_side * 2 ** upsample} px (--max-side {max_side} x {2 ** upsample}), several GB of memory; "
                f"keep --max-side x 2^upsample <= {CNN_MAX_SIDE_SEEN} (e.g. --max-side "
                f"{CNN_MAX_SIDE_SEEN // 2 ** upsample}).")


# When the landmarks of a CNN face are trusted (landmarks_trusted). dlib's 5- and 68-point models are two
# separate regressors; on a face like those they were trained on (frontal-ish, HOG-like box) they agree
# to ~1-2% of the box width; on a profile each makes up its own frontal-looking shape and they part.
# Measured on FASSEG V3's 182 train photos with CNN boxes, the largest gap (eye centres, nose) is at most
# 0.04 of the box width on 40 of the 42 photos at 0 and +-15 degrees of yaw (the other two 0.09, 0.10),
# 0.15-0.42 on all 42 at -60..-90, and above 0.10 on 29 of the 42 at +60..+90. On those profiles the box
# crop holds more of the labelled head than the landmark crop (median 0.91-0.99 of its pixels against
# 0.81-0.89). The eye distance alone does not separate them (0.23-0.39 of the box width on profiles,
# 0.36-0.50 frontal: the models squeeze a frontal face in), and no 5-point landmark ever left the box.
TRUST_MAX_DISAGREEMENT = 0.10  # box widths between the 5- and the 68-point models' eye centres and nose
TRUST_MAX_OUTSIDE = 0.25  # no 5-point landmark further outside the box than this fraction of its width


def landmarks_trusted(box, lm5, lm68) -> bool:
    """Whether a face's landmarks are good enough to align from (decided for CNN faces; see the module doc).

    Trusted when (1) the 5-point and the 68-point models agree: each eye centre (5-point: mean of the
    eye's two corners; 68-point: mean of its six points) and the nose (5-point 4, 68-point 33) within
    TRUST_MAX_DISAGREEMENT of the box width of each other, and (2) every 5-point landmark lies inside the
    box grown by TRUST_MAX_OUTSIDE of its width on each side."""
    l, t, r, b = box
    w = max(r - l, 1e-6)
    p, q = np.asarray(lm5, np.float64), np.asarray(lm68, np.float64)
    if p.shape != (5, 2) or q.shape != (68, 2) or not (np.isfinite(p).all() and np.isfinite(q).all()):
        return False
    # dlib's 5-point order: 0-1 the eye at the image's right (68-point 42-47), 2-3 the other (36-41), 4 the nose.
    gap = max(np.linalg.norm(p[0:2].mean(0) - q[42:48].mean(0)), np.linalg.norm(p[2:4].mean(0) - q[36:42].mean(0)),
              np.linalg.norm(p[4] - q[33]))
    m = TRUST_MAX_OUTSIDE * w
    inside = bool(np.all((p[:, 0] >= l - m) & (p[:, 0] <= r + m) & (p[:, 1] >= t - m) & (p[:, 1] <= b + m)))
    return inside and bool(gap <= TRUST_MAX_DISAGREEMENT * w)


class FaceDetector:
    """dlib HOG (or CNN) detector + 5- and 68-point shape predictors, loaded once per process."""

    def __init__(self, upsample: int = -1, max_side: int = 1600, threshold: float = 0.0, kind: str = "hog"):
        check_detector((upsample, max_side, threshold, kind))
        import dlib

        if kind == "cnn":
            self.detector = dlib.cnn_face_detection_model_v1(str(_model_file("mmod_human_face_detector.dat")))
        else:
            self.detector = dlib.get_frontal_face_detector()
        self.sp5 = dlib.shape_predictor(str(_model_file("shape_predictor_5_face_landmarks.dat")))
        self.sp68 = dlib.shape_predictor(str(_model_file("shape_predictor_68_face_landmarks.dat")))
        self.upsample, self.max_side, self.threshold, self.kind = upsample, max_side, threshold, kind
        self._dlib = dlib

    def _detect(self, small: np.ndarray):
        """Boxes and scores on the shrunk photo."""
        if self.kind == "hog":
            up = self.upsample if self.upsample >= 0 else (1 if max(small.shape[:2]) < 1200 else 0)
            rects, scores, _ = self.detector.run(small, up, self.threshold)
            return rects, scores
        up = self.upsample if self.upsample >= 0 else (1 if max(small.shape[:2]) < CNN_AUTO_UPSAMPLE_BELOW else 0)
        try:
            dets = self.detector(np.ascontiguousarray(small), up)
        except (MemoryError, RuntimeError) as e:  # dlib's bad_alloc arrives as MemoryError
            raise FacepipeError(f"dlib's CNN detector failed on a {small.shape[1]}x{small.shape[0]} photo at "
                                f"upsample {up} ({type(e).__name__}: {e}); lower --max-side or --upsample.") from None
        # The CNN takes no threshold: it reports detections scoring above 0; `threshold` drops lower ones.
        dets = [d for d in dets if d.confidence >= self.threshold]
        return [d.rect for d in dets], [d.confidence for d in dets]

    def __call__(self, rgb: np.ndarray) -> list[dict]:
        dlib = self._dlib
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = rgb
        if scale < 1.0:
            from PIL import Image

            small = np.asarray(Image.fromarray(rgb).resize((round(w * scale), round(h * scale)), Image.BILINEAR))
        rects, scores = self._detect(small)
        faces = []
        for r, sc in zip(rects, scores):
            l, t, rr, b = (v / scale for v in (r.left(), r.top(), r.right(), r.bottom()))
            rect = dlib.rectangle(round(l), round(t), round(rr), round(b))
            face = {
                "box": [round(l, 1), round(t, 1), round(rr, 1), round(b, 1)],
                "score": round(float(sc), 4),
                "lm5": _pts(self.sp5(rgb, rect)),
                "lm68": _pts(self.sp68(rgb, rect)),
            }
            if self.kind != "hog":
                face["lm_trusted"] = landmarks_trusted(face["box"], face["lm5"], face["lm68"])
            faces.append(face)
        faces.sort(key=lambda f: -(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
        return faces


def _pts(shape) -> list[list[float]]:
    return [[float(shape.part(i).x), float(shape.part(i).y)] for i in range(shape.num_parts)]


_DETECTORS: dict[tuple, FaceDetector] = {}


def _detector(cfg_tuple) -> FaceDetector:
    """One detector per setting per process (the models take ~1 s to load); keyed by the settings, so a
    later caller with another threshold does not get the first caller's detector. `cfg_tuple` is
    detector_args' tuple: (upsample, max_side, threshold[, kind])."""
    key = tuple(cfg_tuple)
    if len(key) == 4 and key[3] == "hog":
        key = key[:3]
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
    det_args = detector_args(cfg.detector, cfg.upsample, cfg.max_side, cfg.threshold)
    check_detector(det_args)  # before the output folder is claimed
    photos, in_man = list_photos(cfg.src)
    out = Path(cfg.out)
    with StageOutput(out, "landmarks", landmarks_config(cfg), force=cfg.force, shard=cfg.shard) as so:
        if so.state == "done":
            return so.manifest
        mine = photos if cfg.shard is None else photos[cfg.shard[0]::cfg.shard[1]]
        todo = [p for p in mine if not (out / "faces" / f"{p.id}.json").exists()]
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
