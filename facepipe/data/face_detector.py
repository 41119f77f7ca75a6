"""dlib's face detector and landmark models, shared by `landmarks`, `align`, `parse`, `backgrounds` and
`export`: one FaceDetector per setting per process (`detector`), the settings tuple (`detector_args`),
the checks made before a stage claims its output (`check_detector`) and the rule that says when a
face's landmarks can be aligned from (`landmarks_trusted`).

Two detectors: "hog", dlib's frontal HOG detector (the default; fast, frontal faces only: it misses 82 of
FASSEG V3's 182 photos, 81 of them turned 45 degrees or more), and "cnn", dlib's MMOD CNN
(mmod_human_face_detector.dat: finds profiles too, ~20x slower on a CPU). "hog+cnn" runs HOG and
the CNN only on photos where HOG finds no face: HOG's speed and landmarks on frontal photos, profiles
found too (a profile beside a frontal face in one photo is still missed). dlib's shape predictors were
trained on HOG-like boxes and frontal-ish faces, so on a CNN box the landmarks of a turned face are made
up: every CNN face carries "lm_trusted" (see `landmarks_trusted`). HOG faces carry no flag (their
landmarks are trusted). The models come from the PyPI package face-recognition-models; nothing is
downloaded.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import dlib
import numpy as np
from PIL import Image

from facepipe.util.errors import FacepipeError
from facepipe.util.geometry import box_iou

DETECTORS = ("hog", "cnn", "hog+cnn")
USES_CNN = ("cnn", "hog+cnn")
# parse's default detector settings (also `backgrounds` and `align` without --landmarks): dlib upsampling
# auto, photos shrunk to 1600 px for detection, no threshold.
PARSE_DETECTOR = (-1, 1600, 0.0)
# CNN upsampling by photo size (upsample -1): the network costs ~4x per upsampling, and sees faces down
# to ~80 px at upsample 0, ~40 px at 1. Photos (after the max_side shrink) under this longest side get 1,
# so the network never looks at more than 800 px for an auto choice; larger photos get 0.
CNN_AUTO_UPSAMPLE_BELOW = 400
# The CNN's memory grows with the pixels it looks at (photo after max_side, x 4 per upsampling): measured
# 0.46 GB at 800x600 and 1.8 GB at 1600x1200 (17 s there on this 2-core CPU, against ~2 s at 512 px), so
# ~7 GB per process at 3200x2400. Settings that can go past this side (max_side x 2**upsample) are
# refused before any work.
CNN_MAX_SIDE_SEEN = 3200
HOG_WINDOW = 80  # px: the smallest face dlib's frontal (HOG) detector finds without upsampling
# A photo with no detection scoring this much (parse's default --min-score) is also searched upside down
# (FaceDetector._upside_down): on 6 of FASSEG's 50 test photos turned by 180 degrees, HOG's only hits
# scored 0.12-0.19, on clutter.
UPSIDE_DOWN_BELOW = 0.2
# A HOG hit scoring under this is kept by `parse` only where dlib's CNN also finds a face (FaceDetector.kept):
# HOG's weak hits are mostly real faces, small or dim (the example photos' three under 0.5 score 0.22-0.37,
# and the CNN confirms each), but clutter scores there too (the mission patch on the astronaut's suit, 0.22,
# in a lossy WebP copy of the README's photo, parsed as a face with eyes and a nose; no CNN face there).
CONFIRM_BELOW = 0.5
CONFIRM_SIDE = 240  # px: the longer side of the CNN's view of a weak hit's region (3 box widths: the face ~80 px)
CONFIRM_IOU = 0.3  # a CNN box over the hit's box by this much confirms it (the real ones: 0.66-0.84)
SHAPE_MODELS = ("shape_predictor_5_face_landmarks.dat", "shape_predictor_68_face_landmarks.dat")
CNN_MODEL = "mmod_human_face_detector.dat"


def model_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.origin:
        raise FacepipeError("dlib models not found: pip install face-recognition-models")
    return Path(spec.origin).parent / "models"


def model_file(name: str) -> Path:
    f = model_dir() / name
    if not f.is_file():
        raise FacepipeError(f"dlib model {f} is missing; reinstall it: pip install --force-reinstall "
                            "face-recognition-models")
    return f


def detector_args(detector: str = "hog", upsample: int = -1, max_side: int = 1600, threshold: float = 0.0) -> tuple:
    """The settings tuple `detector` takes: (upsample, max_side, threshold) for HOG, as it always was,
    and (upsample, max_side, threshold, "cnn") for the CNN, so settings of different detectors never
    compare equal (parse writes this tuple into its manifest config)."""
    if detector == "hog":
        return (upsample, max_side, threshold)
    return (upsample, max_side, threshold, detector)


def check_detector(det_args: tuple) -> None:
    """Refuse settings the detector cannot run, with one line, before a stage claims its output folder:
    an unknown detector, a missing model file, a dlib without the CNN, a CNN upsampling too large."""
    upsample, max_side, _thr, kind = (*det_args, "hog")[:4]
    if kind not in DETECTORS:
        raise FacepipeError(f"unknown detector {kind!r}; choose one of {', '.join(DETECTORS)}.")
    for name in SHAPE_MODELS:
        model_file(name)
    if kind in USES_CNN:
        model_file(CNN_MODEL)
        if not hasattr(dlib, "cnn_face_detection_model_v1"):
            raise FacepipeError(f"this dlib ({getattr(dlib, '__version__', '?')}) has no CNN face detector; "
                                "use --detector hog or install dlib >= 19.4.")
        if upsample > 0 and max_side * 2 ** upsample > CNN_MAX_SIDE_SEEN:
            raise FacepipeError(
                f"--upsample {upsample} with --detector {kind} runs the CNN on photos of up to "
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
    """Whether a face's landmarks are good enough to align from (decided for CNN faces; see above).

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


def turned_upright(faces) -> int:
    """How many of these face records were found on their side or upside down and turned upright for their
    landmarks."""
    return sum("roll" in f for f in faces)


def box_cut(faces) -> int:
    """How many of these face records are cut from their box: CNN faces whose landmarks are not trusted
    (HOG faces carry no flag)."""
    return sum(f.get("lm_trusted") is False for f in faces)


class FaceDetector:
    """dlib HOG and/or CNN detector + 5- and 68-point shape predictors, loaded once per process.

    Called on an RGB photo, returns its faces largest first: {"box": [l, t, r, b], "score", "lm5": 5x2,
    "lm68": 68x2} in photo pixels, plus "lm_trusted" for faces the CNN found (with "hog+cnn": only on
    photos where HOG found none), and "roll" (90, 180, 270) for a face found turned (_turned_landmarks,
    _upside_down)."""

    def __init__(self, upsample: int = -1, max_side: int = 1600, threshold: float = 0.0, kind: str = "hog"):
        check_detector((upsample, max_side, threshold, kind))
        self.hog = dlib.get_frontal_face_detector() if kind != "cnn" else None
        self.cnn = dlib.cnn_face_detection_model_v1(str(model_file(CNN_MODEL))) if kind in USES_CNN else None
        self.sp5 = dlib.shape_predictor(str(model_file(SHAPE_MODELS[0])))
        self.sp68 = dlib.shape_predictor(str(model_file(SHAPE_MODELS[1])))
        self.upsample, self.max_side, self.threshold, self.kind = upsample, max_side, threshold, kind
        self._turn_hog = None  # HOG for faces on their side when the CNN detects alone (_frontal)
        self._confirm_cnn = None  # the CNN for HOG's weak hits (kept), loaded on first use

    def _detect(self, small: np.ndarray):
        """Boxes and scores on the shrunk photo, and whether the CNN found them."""
        if self.hog is not None:
            rects, scores, _ = self.hog.run(small, self._hog_upsample(small), self.threshold)
            if len(rects) or self.cnn is None:
                return rects, scores, False
        return self._detect_cnn(small)

    def _hog_upsample(self, small: np.ndarray) -> int:
        """HOG's upsampling: the setting, or by size (auto: once below 1200 px, where faces are small)."""
        return self.upsample if self.upsample >= 0 else (1 if max(small.shape[:2]) < 1200 else 0)

    def _detect_cnn(self, small: np.ndarray):
        """(boxes, confidences, True: found by the CNN) on the shrunk photo."""
        up = self.upsample if self.upsample >= 0 else (1 if max(small.shape[:2]) < CNN_AUTO_UPSAMPLE_BELOW else 0)
        try:
            dets = self.cnn(np.ascontiguousarray(small), up)
        except (MemoryError, RuntimeError) as e:  # dlib's bad_alloc arrives as MemoryError
            raise FacepipeError(f"dlib's CNN detector failed on a {small.shape[1]}x{small.shape[0]} photo at "
                                f"upsample {up} ({type(e).__name__}: {e}); lower --max-side or --upsample.") from None
        # The CNN takes no threshold: it reports detections scoring above 0; `threshold` drops lower ones.
        dets = [d for d in dets if d.confidence >= self.threshold]
        return [d.rect for d in dets], [d.confidence for d in dets], True

    def __call__(self, rgb: np.ndarray) -> list[dict]:
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = rgb
        if scale < 1.0:
            small = np.asarray(Image.fromarray(rgb).resize((round(w * scale), round(h * scale)), Image.BILINEAR))
        rects, scores, by_cnn = self._detect(small)
        # No face as sure as parse keeps by default (HOG's weak hits on an upside-down photo are clutter):
        # the photo may be upside down.
        upside = (self._upside_down(rgb, small, scale)
                  if self.cnn is not None and not any(sc >= UPSIDE_DOWN_BELOW for sc in scores) else [])
        faces = upside
        for r, sc in zip(rects, scores):
            l, t, rr, b = (v / scale for v in (r.left(), r.top(), r.right(), r.bottom()))
            rect = dlib.rectangle(round(l), round(t), round(rr), round(b))
            face = {
                "box": [round(l, 1), round(t, 1), round(rr, 1), round(b, 1)],
                "score": round(float(sc), 4),
                "lm5": _pts(self.sp5(rgb, rect)),
                "lm68": _pts(self.sp68(rgb, rect)),
            }
            if by_cnn:
                face["lm_trusted"] = landmarks_trusted(face["box"], face["lm5"], face["lm68"])
                face.update(self._turned_landmarks(rgb, face["box"]) or {})
            faces.append(face)
        faces.sort(key=lambda f: -(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
        return faces

    def _turned_landmarks(self, rgb: np.ndarray, box) -> dict | None:
        """Landmarks of a CNN face lying on its side (a photo turned without an EXIF tag, a person lying
        down). dlib's landmark models expect an upright face: on a turned one they make up a shape, and
        the two models can even agree on it (on FASSEG V2 test turned by 90 degrees, 13 of 45 CNN faces
        passed landmarks_trusted that way). HOG, which finds upright frontal faces only, decides: in the
        region around the box as it is, then turned by 90 and by 270 degrees. Found as it is, or in no
        turn (a profile), the face keeps its landmarks (None). Found in a turn, and the landmarks from
        HOG's box there trusted, they are returned back in photo coordinates, with "roll": the turn in
        degrees (counter-clockwise, as np.rot90). On FASSEG's 65 untrusted profiles no turn is taken;
        without HOG's check the landmark models agreed in some turn on 53 of them. Upside down (180) is
        not tried: HOG found 4 of those profiles that way."""
        h, w = rgb.shape[:2]
        l, t, r, b = box
        grow = 0.5 * (r - l)
        x0, y0 = max(0, int(l - grow)), max(0, int(t - grow))
        x1, y1 = min(w, int(np.ceil(r + grow))), min(h, int(np.ceil(b + grow)))
        region = rgb[y0:y1, x0:x1]
        up = 1 if r - l < 2 * HOG_WINDOW else 0  # HOG's 80 px window needs the face at least that wide
        for k in (0, 1, 3):
            turned = np.ascontiguousarray(np.rot90(region, k))
            centre = _rot90_points([[(l + r) / 2 - x0, (t + b) / 2 - y0]], region.shape, k)[0]
            found = [d for d in self._frontal()(turned, up)
                     if abs((d.left() + d.right()) / 2 - centre[0]) < 0.25 * (r - l)
                     and abs((d.top() + d.bottom()) / 2 - centre[1]) < 0.25 * (r - l)]
            if not found:
                continue
            if k == 0:
                return None
            rect = found[0]
            lm5, lm68 = _pts(self.sp5(turned, rect)), _pts(self.sp68(turned, rect))
            if landmarks_trusted([rect.left(), rect.top(), rect.right(), rect.bottom()], lm5, lm68):
                back = [(_rot90_points(p, turned.shape, -k) + [x0, y0]).round(2).tolist() for p in (lm5, lm68)]
                return {"lm5": back[0], "lm68": back[1], "lm_trusted": True, "roll": 90 * k}
        return None

    def _upside_down(self, rgb: np.ndarray, small: np.ndarray, scale: float) -> list[dict]:
        """Faces of a photo turned upside down (no EXIF tag; neither detector finds a face upside down),
        tried only where HOG and the CNN found none upright scoring UPSIDE_DOWN_BELOW: the photo turned by
        180 degrees, and a face kept where HOG and the CNN both find it there (box centres within a quarter
        of the box's width) and its landmarks are trusted. Returned in photo coordinates, with "roll": 180."""
        turned = np.ascontiguousarray(small[::-1, ::-1])
        hog_rects, _, _ = self._frontal().run(turned, self._hog_upsample(small), self.threshold)
        if not len(hog_rects):
            return []
        cnn = list(zip(*self._detect_cnn(turned)[:2]))  # (rect, confidence)
        big = np.ascontiguousarray(rgb[::-1, ::-1])
        h, w = rgb.shape[:2]
        faces = []
        for r in hog_rects:
            width = r.right() - r.left()
            agree = [conf for c, conf in cnn if abs(c.center().x - r.center().x) < 0.25 * width
                     and abs(c.center().y - r.center().y) < 0.25 * width]
            if not agree:
                continue
            sc = max(agree)
            l, t, rr, b = (v / scale for v in (r.left(), r.top(), r.right(), r.bottom()))
            rect = dlib.rectangle(round(l), round(t), round(rr), round(b))
            lm5, lm68 = _pts(self.sp5(big, rect)), _pts(self.sp68(big, rect))
            if not landmarks_trusted([l, t, rr, b], lm5, lm68):
                continue
            back = [(np.array([w - 1, h - 1]) - np.asarray(p)).round(2).tolist() for p in (lm5, lm68)]
            box = [round(w - 1 - rr, 1), round(h - 1 - b, 1), round(w - 1 - l, 1), round(h - 1 - t, 1)]
            faces.append({"box": box, "score": round(float(sc), 4), "lm5": back[0], "lm68": back[1],
                          "lm_trusted": True, "roll": 180})
        faces.sort(key=lambda f: -(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
        return faces

    def kept(self, rgb: np.ndarray, face: dict, below: float = CONFIRM_BELOW) -> bool:
        """Whether a face found in `rgb` stands: a HOG hit scoring under `below` only when dlib's CNN, shown
        the region three box widths wide around it (cut at the photo's edges: a face filling a tight crop,
        shown within black, went unseen on 26 of 243 weak utkface hits) at CONFIRM_SIDE px, finds a face
        over its box (IoU >= CONFIRM_IOU). The CNN's own faces (and those turned upright, checked by both)
        stand."""
        if face["score"] >= below or "lm_trusted" in face or "roll" in face:
            return True
        if self._confirm_cnn is None:
            self._confirm_cnn = self.cnn or dlib.cnn_face_detection_model_v1(str(model_file(CNN_MODEL)))
        h, w = rgb.shape[:2]
        l, t, r, b = face["box"]
        half = 1.5 * max(r - l, b - t, 1.0)
        x0, y0 = max(0, round((l + r) / 2 - half)), max(0, round((t + b) / 2 - half))
        x1, y1 = min(w, round((l + r) / 2 + half)), min(h, round((t + b) / 2 + half))
        k = CONFIRM_SIDE / max(x1 - x0, y1 - y0, 1)
        size = (max(1, round((x1 - x0) * k)), max(1, round((y1 - y0) * k)))
        view = np.asarray(Image.fromarray(np.ascontiguousarray(rgb[y0:y1, x0:x1])).resize(size, Image.BILINEAR))
        hit = np.array([l - x0, t - y0, r - x0, b - y0]) * k
        return any(box_iou(hit, [d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()]) >= CONFIRM_IOU
                   for d in self._confirm_cnn(np.ascontiguousarray(view), 0))

    def _frontal(self):
        """dlib's HOG detector, loaded on first use when the CNN alone detects (--detector cnn)."""
        if self.hog is not None:
            return self.hog
        if self._turn_hog is None:  # not self.hog: that would make a CNN-only detector run HOG first
            self._turn_hog = dlib.get_frontal_face_detector()
        return self._turn_hog


def _rot90_points(pts, shape, k: int) -> np.ndarray:
    """Pixel coordinates (x, y) in an image of `shape` (rows, cols, ...) after np.rot90(image, k): each
    quarter turn counter-clockwise sends (x, y) to (y, cols - 1 - x)."""
    p = np.asarray(pts, np.float64).reshape(-1, 2)
    rows, cols = shape[:2]
    for _ in range(k % 4):
        p = np.stack([p[:, 1], cols - 1 - p[:, 0]], 1)
        rows, cols = cols, rows
    return p


def _pts(shape) -> list[list[float]]:
    return [[float(shape.part(i).x), float(shape.part(i).y)] for i in range(shape.num_parts)]


_LOADED: dict[tuple, FaceDetector] = {}


def detector(det_args=PARSE_DETECTOR) -> FaceDetector:
    """One detector per setting per process (the models take ~1 s to load); keyed by the settings, so a
    later caller with another threshold does not get the first caller's detector. `det_args` is
    detector_args' tuple: (upsample, max_side, threshold[, kind])."""
    key = tuple(det_args)
    if len(key) == 4 and key[3] == "hog":
        key = key[:3]
    if key not in _LOADED:
        _LOADED[key] = FaceDetector(*key)
    return _LOADED[key]
