"""Bald scalps drawn over a face's hair: what training (`--augment ...,bald=P`) and the benchmark's
`paste --variant bald` share.

Every FASSEG face has hair, so the networks learnt that the top of a head is hair, and on bald heads in
users' photos they put hair on the scalp (bald_guys in ../shared/data/unlabeled/dlib-faces). A picked
face with enough hair and a visible face part (eyes, nose or mouth) gets a scalp: a half ellipse above
the eyes, as wide as the head at the eyes (at most 1.4 times the face) and 1.2-1.5 times as high as half
that width, shaded as a sphere lit from above (lighter at the crown, darker toward the rim, a soft
highlight at a random place, a little grain) in the face's own skin colour (its forehead's mean where
the forehead shows, else the whole skin's). Hair and background inside the ellipse become the scalp;
hair above the eyes outside it is left for the caller to replace with a backdrop. The brows stay
(FASSEG labels them hair): a band above the eyes as wide as the eyes and 0.1-0.3 of that high. Hair
below the eyes' top (sideburns, long hair, beards) stays, as on a head bald on top.

With `texture`, a picked scalp also carries the face's own skin detail (pores, wrinkles, freckles: the
image minus its blur, sigma 2 px) moved up from the skin below it by the scalp's height, where that skin
lies at least 4 px inside the face's skin: a smooth dome taught the networks "anything light above the
forehead is skin", and took white hair with it (docs/results.md, "Bald scalps").
"""
from __future__ import annotations

import torch

from facepipe.learn.background_bank import gauss_blur

MIN_PIXELS = 200  # fewer hair (or scalp) pixels than this: no scalp is drawn


def bald_scalps(img: torch.Tensor, cls: torch.Tensor, hair: torch.Tensor, pick: torch.Tensor, r: torch.Tensor,
                grain: torch.Tensor, bg_id: int, skin_id: int, min_pixels: int = MIN_PIXELS,
                texture: torch.Tensor | None = None):
    """img (N,3,H,W) RGB in [0, 1]; cls (N,H,W) class ids (255: unknown); hair (N,H,W) bool; pick (N,) bool;
    r (N,3) and grain (N,H,W) uniform draws in [0, 1). Returns (img, scalp, out): the images with the scalps
    drawn, the scalp pixels (now skin) and the hair above the eyes outside them (now background: the
    caller pastes a backdrop there), both (N,H,W) bool. texture: (N,) bool, the scalps that take the skin's
    detail (None: none)."""
    n, _, h, w = img.shape
    parts = (cls != bg_id) & (cls != skin_id) & (cls != 255) & ~hair
    skin = cls == skin_id
    rows = torch.arange(h, device=img.device).view(h, 1).to(img.dtype)
    cols = torch.arange(w, device=img.device).view(1, w).to(img.dtype)
    img = img.clone()
    scalps, outs = torch.zeros_like(hair), torch.zeros_like(hair)
    for i in range(n):
        if not bool(pick[i]) or int(hair[i].sum()) < min_pixels or not parts[i].any() or int(skin[i].sum()) < 50:
            continue
        py, px = torch.nonzero(parts[i], as_tuple=True)
        top, x0, x1 = int(py.min()), int(px.min()), int(px.max())
        # The head's width at the eyes: its skin, parts and hair in the rows of the eyes (a turned face's
        # skull lies over the hair at the back of its head), at most 1.4 times the face's own.
        eyes_rows = (rows >= top) & (rows <= top + max(2, (x1 - x0) // 6))
        fx = torch.nonzero((skin[i] | parts[i]) & eyes_rows, as_tuple=True)[1]
        hx = torch.nonzero((skin[i] | parts[i] | hair[i]) & eyes_rows, as_tuple=True)[1]
        half = min((float(hx.max()) - float(hx.min())) / 2, 1.4 * (float(fx.max()) - float(fx.min())) / 2) + 1
        cx = (float(hx.max()) + float(hx.min())) / 2
        height = half * (1.2 + 0.3 * float(r[i, 0]))
        rho2 = ((cols - cx) / half) ** 2 + ((rows - top) / height) ** 2
        band = max(2, int((x1 - x0) * (0.1 + 0.2 * float(r[i, 0]))))
        brows = (rows >= top - band) & (rows < top) & (cols >= x0) & (cols <= x1)
        above = (rows < top) & ~brows & (cls[i] != 255)
        scalp = above & (rho2 <= 1) & (hair[i] | (cls[i] == bg_id))
        if int(scalp.sum()) < min_pixels:
            continue
        # The forehead's colour where it shows (the skin above the eyes): the whole face's mean is darkened
        # by the shadows under the chin and beside the nose.
        brow = skin[i] & (rows < top)
        tone = img[i][:, brow if int(brow.sum()) >= 50 else skin[i]].mean(1).view(3, 1, 1)
        # A sphere lit from above: the normal's vertical part is sqrt(1 - rho^2); a highlight near the crown.
        up = (1 - rho2.clamp(max=1)).sqrt()
        gy, gx = top - height * 0.7, cx + half * (float(r[i, 1]) - 0.5)
        glint = torch.exp(-((rows - gy) ** 2 + (cols - gx) ** 2) / (2 * (half / 3) ** 2))
        shade = 0.7 + 0.35 * up + 0.3 * float(r[i, 2]) * glint
        dome = tone * shade + (grain[i] - 0.5) * 0.03
        if texture is not None and bool(texture[i]):
            dome = dome + _skin_detail(img[i], skin[i], int(round(height)))
        dome = dome.clamp(0, 1)
        a = gauss_blur(scalp.to(img.dtype)[None, None], 1.0)[0]
        img[i] = a * dome + (1 - a) * img[i]
        scalps[i], outs[i] = scalp, hair[i] & above & ~scalp
    return img, scalps, outs


def _skin_detail(img: torch.Tensor, skin: torch.Tensor, dy: int) -> torch.Tensor:
    """(3,H,W): the image's detail (minus its blur) on skin at least 4 px from any other class, moved up by
    dy rows (zeros where none lands)."""
    inner = -torch.nn.functional.max_pool2d(-skin.to(img.dtype)[None, None], 9, 1, 4)[0]  # eroded 4 px
    detail = (img - gauss_blur(img[None], 2.0)[0]) * inner
    out = torch.zeros_like(img)
    if 0 < dy < img.shape[1]:
        out[:, :-dy] = detail[:, dy:]
    return out
