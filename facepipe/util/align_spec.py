"""How a face becomes a model's input crop: one AlignSpec and one `align_face`, used by `align` (to make
training crops) and by `parse` (to crop new photos), so a model is always fed crops made its own way.

The spec is stored in the cache manifest (`align`) and in every checkpoint (`align`), and travels with
ONNX exports as metadata.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from facepipe.util.geometry import (
    BOX_WIDTH_IN_IOD,
    apply,
    box_matrix,
    fit_similarity,
    five_from,
    letterbox_matrix,
    template,
    turn_shift,
)

DEFAULT_IOD = 0.22  # eye distance as a fraction of the crop side (geometry.template)


@dataclass(frozen=True)
class AlignSpec:
    size: int = 256
    iod: float = DEFAULT_IOD
    letterbox: bool = False  # the baseline without alignment: each photo fitted whole into the crop
    # Width of a face box cut without landmarks (a profile), in template eye distances: smaller = the
    # face smaller in the crop and more of the head around it (see geometry.BOX_WIDTH_IN_IOD).
    box_width: float = BOX_WIDTH_IN_IOD
    # Turned faces aligned from landmarks: the crop moves toward the back of the head by this gain times
    # the nose's sideways offset (geometry.turn_shift); 0 = centred on the face as before.
    turn_shift: float = 0.0

    @classmethod
    def from_dict(cls, d: dict | None, size: int | None = None) -> "AlignSpec":
        """From a manifest's or checkpoint's `align` entry; old files without one get the defaults at
        `size` (the crop size they record elsewhere)."""
        d = d or {}
        return cls(size=int(d.get("size") or size or cls.size), iod=float(d.get("iod") or DEFAULT_IOD),
                   letterbox=bool(d.get("letterbox", False)),
                   box_width=float(d.get("box_width") or BOX_WIDTH_IN_IOD),
                   turn_shift=float(d.get("turn_shift") or 0.0))

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.turn_shift:
            del d["turn_shift"]  # absent when unused: manifests and checkpoints made before it still match
        return d

    def template(self) -> np.ndarray:
        return template(self.size, self.iod)


def align_face(spec: AlignSpec, shape: tuple[int, int], landmarks=None, box=None,
               trusted: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The photo -> crop matrix of one face and its landmarks in crop pixels (None where there are none).

    No landmarks and no box (no face found, the photo fitted whole) or a letterbox spec: the photo is
    fitted into the crop. Landmarks the detector does not trust (a profile on a CNN box): aligned from
    the box, and no landmarks, so no made-up points reach the heatmap. Otherwise a similarity fit of
    the five eye/nose/mouth points onto the template, moved toward the back of a turned head when the
    spec says so (`turn_shift`). Raises ValueError on degenerate points or box.
    """
    h, w = shape[:2]
    pts = None if landmarks is None else np.asarray(landmarks, np.float64)
    if (pts is None and box is None) or spec.letterbox:
        m = letterbox_matrix(h, w, spec.size)
        return m, (apply(m, pts) if pts is not None and trusted else None)
    if not trusted or pts is None:
        return box_matrix(box, spec.template(), spec.box_width), None
    five, tmpl = five_from(pts), spec.template()
    m = turn_shift(fit_similarity(five, tmpl), five, tmpl, spec.turn_shift)
    return m, apply(m, pts)
