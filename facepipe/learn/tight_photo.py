"""Training's `tight` augmentation: a crop as parse cuts it from a face-crop photo.

Face-crop photos (UTKFace, LFW, the dlib-johns examples, passport photos) end a little beyond the face,
so parse's aligned crop holds the photo as a tilted box with black fill around it, and between the face
and the fill a strip of whatever was behind the head. The networks learnt backdrops from FASSEG's wide
photos and from pasted photos that cover the whole crop, and on a cluttered strip they say hair
(docs/results.md, "Tight photos of cluttered scenes"). Here a face's crop, backdrop already pasted, is
cut to such a box: black beyond it, its labels ignored there, as `eval` scores a tight photo only inside
the photo.
"""
from __future__ import annotations

import math

import torch

# The box: this range of times the longer side of the face's own pixels (paste's tight variant: 1.2; a
# UTKFace crop about 1.7), with its width over its height, its centre's offset (a fraction of the side)
# and its tilt (the photo's edges turn with the face when the crop is aligned) drawn within these.
SCALE = (1.1, 1.8)
ASPECT = 1.25  # width / height between 1 / ASPECT and ASPECT, log-uniform
OFFSET = 0.08
TILT = 10.0  # degrees, +-


def face_box(cls: torch.Tensor, bg_id: int, hair_ids) -> torch.Tensor:
    """(N,4) float (y0, y1, x0, x1) of each face's own pixels in (N,H,W) class ids (every class but
    background, hair and ignore); a face without any gets a box of zero size (y1 < y0)."""
    face = (cls != bg_id) & (cls != 255)
    for k in hair_ids:
        face &= cls != k
    n, h, w = cls.shape
    rows, cols = face.any(2), face.any(1)
    out = torch.zeros(n, 4, device=cls.device)
    out[:, 0] = rows.float().argmax(1)
    out[:, 1] = h - 1 - rows.flip(1).float().argmax(1)
    out[:, 2] = cols.float().argmax(1)
    out[:, 3] = w - 1 - cols.flip(1).float().argmax(1)
    out[~rows.any(1), 1] = -1  # empty: argmax of all-False is 0, which would read as a one-pixel face
    return out


def _inside(box: torch.Tensor, r: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N,H,W) coverage in [0, 1] of each pixel by the tilted box drawn around `box` with draws r (N,5+)."""
    y0, y1, x0, x1 = box.unbind(1)
    side = (SCALE[0] + (SCALE[1] - SCALE[0]) * r[:, 0]) * torch.maximum(y1 - y0 + 1, x1 - x0 + 1)
    aspect = torch.exp((r[:, 1] * 2 - 1) * math.log(ASPECT))
    half_h, half_w = side / aspect.sqrt() / 2, side * aspect.sqrt() / 2
    cy = (y0 + y1) / 2 + (r[:, 2] * 2 - 1) * OFFSET * side
    cx = (x0 + x1) / 2 + (r[:, 3] * 2 - 1) * OFFSET * side
    a = (r[:, 4] * 2 - 1) * math.radians(TILT)
    yy = torch.arange(h, device=box.device, dtype=box.dtype).view(1, h, 1) - cy.view(-1, 1, 1)
    xx = torch.arange(w, device=box.device, dtype=box.dtype).view(1, 1, w) - cx.view(-1, 1, 1)
    cos, sin = torch.cos(a).view(-1, 1, 1), torch.sin(a).view(-1, 1, 1)
    u, v = cos * xx + sin * yy, -sin * xx + cos * yy
    # One pixel of ramp at the edge, as the bilinear warp of a photo's last column into the black fill.
    return ((half_w.view(-1, 1, 1) - u.abs() + 0.5).clamp(0, 1)
            * (half_h.view(-1, 1, 1) - v.abs() + 0.5).clamp(0, 1))


def tight_photos(img: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None, box: torch.Tensor,
                 r: torch.Tensor, p: float):
    """The faces picked with probability p (r[:, 5] < p; r is (N,6) uniform draws) cut to a tilted box
    around `box` (face_box): img (N,3,H,W, RGB in [0, 1]) black beyond it, y ignore (255) and soft zero
    where less than half a pixel is inside. Faces without face pixels stay whole. Returns (img, y, soft)."""
    n, _, h, w = img.shape
    pick = (r[:, 5] < p) & (box[:, 1] >= box[:, 0])
    if not pick.any():
        return img, y, soft
    cover = torch.where(pick.view(-1, 1, 1), _inside(box, r, h, w), torch.ones(1, device=img.device))
    out = cover < 0.5
    y = torch.where(out, torch.full_like(y, 255), y)
    if soft is not None:
        soft = soft * (~out)[:, None].to(soft.dtype)
    return img * cover[:, None].to(img.dtype), y, soft
