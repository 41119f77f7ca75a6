"""A photo's faces cut as `parse` cuts them (its HOG detector settings, align_spec.align_face, the
heatmap drawn at the warped landmarks), as one network input: what export checks on and int8 calibrates
on when it is given photos rather than a cache."""
from __future__ import annotations

import numpy as np

from facepipe.data.face_cache import to_input
from facepipe.data.face_detector import PARSE_DETECTOR, detector
from facepipe.util.align_spec import AlignSpec, align_face
from facepipe.util.geometry import warp_image
from facepipe.util.heatmap import draw_heatmap

# dlib HOG scores below ~0.2 were mostly false positives on our photos (a badge on the astronaut);
# the same cut as `parse --min-score`.
MIN_FACE_SCORE = 0.2


def photo_faces(rgb: np.ndarray, spec: AlignSpec, heatmap: bool = True, mirror: bool = False) -> np.ndarray | None:
    """(N, C, s, s) network input of the photo's faces, largest first (with mirror, each face's mirror image
    after it); None when dlib finds none."""
    faces = [f for f in detector(PARSE_DETECTOR)(rgb) if f["score"] >= MIN_FACE_SCORE]
    if not faces:
        return None
    crops, hms = [], []
    for face in faces:
        m, pts = align_face(spec, rgb.shape, face["lm68"], face["box"], face.get("lm_trusted", True))
        crop, hm = warp_image(rgb, m, spec.size), draw_heatmap(pts, spec.size)
        crops += [crop, crop[:, ::-1]] if mirror else [crop]
        hms += [hm, hm[:, ::-1]] if mirror else [hm]
    crops, hms = np.ascontiguousarray(np.stack(crops)), np.ascontiguousarray(np.stack(hms))
    return to_input(crops, hms if heatmap else None).numpy()
