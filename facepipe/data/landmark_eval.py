"""Landmark accuracy of a `landmarks` output against dlib imglab XML ground truth (68 points).

Each annotated box is matched to the detected face with the highest box IoU (at least `min_iou`);
error = mean point-to-point distance over the 68 points / inter-ocular distance (outer eye corners
36 and 45, the 300-W convention). Unmatched annotations count as missed, unmatched detections as
extra (they may still be real faces that were not annotated). Several XMLs naming the same image are
merged: a face annotated in more than one counts once (merge_faces).
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from facepipe.util.errors import FacepipeError
from facepipe.util.geometry import box_iou

SAME_FACE_IOU = 0.5  # boxes of one face in two XMLs (dlib's differ by a pixel or none)


def read_imglab(xml_path) -> dict[str, list[dict]]:
    """{image file name: [{"box": [l, t, r, b], "points": (68, 2) or None}]} from a dlib imglab XML."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as e:
        raise FacepipeError(f"cannot read {xml_path}: {e}") from None
    out = {}
    for im in root.iter("image"):
        faces = []
        for b in im.iter("box"):
            if b.get("ignore") == "1":
                continue
            l, t = float(b.get("left")), float(b.get("top"))
            box = [l, t, l + float(b.get("width")), t + float(b.get("height"))]
            parts = {int(p.get("name")): (float(p.get("x")), float(p.get("y"))) for p in b.iter("part")}
            pts = np.array([parts[i] for i in range(68)]) if len(parts) == 68 else None
            faces.append({"box": box, "points": pts})
        out[Path(im.get("file")).name] = faces
    return out


def merge_faces(faces: list[dict], more: list[dict]) -> None:
    """Add one more XML's faces of an image to those of the XMLs before. dlib ships the same images twice
    (training.xml with boxes, training_with_face_landmarks.xml with points): a face both annotate (box IoU
    above SAME_FACE_IOU) counts once, as the annotation with points, or every face reads as found and missed."""
    n_before, taken = len(faces), set()
    for g in more:
        ious = [(box_iou(faces[k]["box"], g["box"]), k) for k in range(n_before) if k not in taken]
        iou, k = max(ious, default=(0.0, None))
        if k is None or iou <= SAME_FACE_IOU:
            faces.append(g)
            continue
        taken.add(k)
        if faces[k]["points"] is None:
            faces[k] = g


def evaluate(landmarks_dir, xml_paths, min_iou: float = 0.3) -> dict:
    gt = {}
    for x in xml_paths:
        for name, faces in read_imglab(x).items():
            merge_faces(gt.setdefault(name, []), faces)
    errors, annotated, matched, extra, images = [], 0, 0, 0, 0
    for name, faces in gt.items():
        rec_path = Path(landmarks_dir) / "faces" / f"{Path(name).stem}.json"
        if not rec_path.exists():
            continue
        images += 1
        det = json.loads(rec_path.read_text())["faces"]
        used = set()
        for g in faces:
            annotated += 1
            best, bi = 0.0, None
            for k, d in enumerate(det):
                v = box_iou(g["box"], d["box"])
                if k not in used and v > best:
                    best, bi = v, k
            if bi is None or best < min_iou:
                continue
            used.add(bi)
            matched += 1
            if g["points"] is not None:
                p = np.array(det[bi]["lm68"])
                iod = np.linalg.norm(g["points"][36] - g["points"][45])
                errors.append(float(np.linalg.norm(p - g["points"], axis=1).mean() / iod))
        extra += len(det) - len(used)
    if images == 0:
        raise FacepipeError(f"no image of the XML files has a record in {landmarks_dir}; "
                            "run `facepipe landmarks` on the folder holding those images.")
    e = np.array(errors)
    # No matched face with 68 annotated points (an XML of boxes only): detection is scored, the points are not
    # (None, JSON null: NaN is not JSON).
    nme = {"nme_mean": float(np.mean(e)), "nme_median": float(np.median(e)), "nme_p90": float(np.percentile(e, 90))
           } if errors else dict.fromkeys(("nme_mean", "nme_median", "nme_p90"))
    return {"images": images, "annotated_faces": annotated, "found": matched, "missed": annotated - matched,
            "extra_detections": extra, **nme, "scored_faces": len(errors)}
