"""Batch augmentation on the training device.

basic (the original recipe): flips that swap left/right classes, small similarity jitter (the aligner is
not perfect), brightness/contrast jitter. Images and heatmaps are resampled bilinearly, labels with
nearest neighbour; pixels that come from outside the crop become ignore (255).

wild (the default): what faces in users' photos differ by, on top of basic. FASSEG's faces are studio
photos on plain walls, mostly with dark hair, so a model trained on them alone learns "flat wall =
background" and "dark = hair" (docs/results.md, robustness benchmark). Here:
  - background replacement: the background class (and whatever came from outside the crop) is replaced
    by a crop of a real photo without faces (learn/background_bank.py), blurred at random like an
    out-of-focus backdrop, joined by a feathered seam. Outside-the-crop pixels stay ignore in the labels
    but are no longer black: parse never shows the network a black border, it crops from the whole photo;
  - hair recolouring: the hair class (labels, or the teacher's argmax for soft targets) moved to a random
    lightness and tint, keeping its texture, so light, grey and red hair are hair;
  - hair-coloured backdrops (`hairbg`, off in wild): a pasted background's colours moved to the face's own
    hair (each channel's mean and spread), so that a wall or painting of the hair's colour next to the head
    is still background (the benchmark's `paste --variant hair-backdrop`, on other photos);
  - bald scalps (`bald`, off in wild): the hair above the brows becomes a shaded dome in the face's own
    skin colour and its labels skin (the teacher's hair probability moves to skin too), so that a bald
    head is skin: every FASSEG face has hair, and the networks put hair on top of every head; with
    `baldtex` a drawn scalp also takes the face's own skin detail (data/bald.py);
  - grayscale, hue rotation and saturation, a shadow (a linear brightness ramp across the face), blur,
    sensor noise and JPEG compression;
  - more pose and scale jitter, zooming out as well as in (parse's crops show more around the face than
    FASSEG's tight photos);
  - tight photos (`tight` for labelled faces, `tightu` for pseudo-labelled ones, off in wild;
    learn/tight_photo.py): the crop cut to a box around the face, black beyond it and its labels
    ignored there, as parse sees a face-crop photo (UTKFace, LFW, a passport photo): a strip of the
    pasted backdrop between the face and the black fill. FASSEG's photos are wide and a pasted backdrop
    covers the crop's edges, so without it the networks never see that strip.
Every random draw comes from the generator, so a run is reproducible and ranks stay in step (`part`).
"""
from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from facepipe.data.bald import bald_scalps
from facepipe.learn.background_bank import BackgroundBank, gauss_blur, load_bank
from facepipe.learn.tight_photo import face_box, tight_photos
from facepipe.util.input_norm import LUMA, MEAN, STD


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    rotate: float = 10.0  # degrees, uniform +-
    scale: float = 0.1  # relative, uniform +-
    shift: float = 0.05  # fraction of the side, uniform +-
    color: float = 0.2  # brightness/contrast jitter
    # The wild recipe (probabilities per face; 0 = off). Off here so that AugmentConfig() stays the
    # basic recipe; WILD below switches them on.
    paste: float = 0.0  # background replaced by a bank photo (needs a bank)
    hair: float = 0.0  # hair recoloured
    gray: float = 0.0  # grayscale
    hue: float = 0.0  # max hue rotation, degrees (+-)
    saturation: float = 0.0  # saturation scale 1 +- this
    shadow: float = 0.0  # probability of a brightness ramp down to 0.4 across the face
    blur: float = 0.0  # probability of a Gaussian blur, sigma 0.5..1.5 px at 256
    noise: float = 0.0  # probability of Gaussian noise, sigma up to 4 grey levels
    jpeg: float = 0.0  # probability of JPEG compression at quality 30..90
    hairbg: float = 0.0  # probability that a pasted background takes the face's hair colours
    bald: float = 0.0  # probability that the hair above the brows becomes a bald scalp (labelled skin)
    baldtex: float = 0.0  # probability that a drawn scalp carries the face's own skin detail (data.bald)
    tight: float = 0.0  # probability that a labelled face's crop is cut to a tight photo around the face
    tightu: float = 0.0  # the same for a pseudo-labelled face (distill's --unlabeled)


BASIC = AugmentConfig()
NONE = AugmentConfig(False, 0, 0, 0, 0)
WILD = AugmentConfig(rotate=20.0, scale=0.25, shift=0.08, color=0.25, paste=0.8, hair=0.35, gray=0.15,
                     hue=15.0, saturation=0.4, shadow=0.3, blur=0.2, noise=0.2, jpeg=0.25)
RECIPES = {"none": NONE, "basic": BASIC, "wild": WILD}


def recipe_config(spec: str) -> AugmentConfig:
    """A recipe as `--augment` takes it: a name, optionally with fields laid over it, comma-separated,
    e.g. "wild,paste=0" (the wild recipe without background replacement: one ablation row) or
    "wild,rotate=10,scale=0.1". ValueError (one line, says what is allowed) on anything else."""
    name, *sets = [part.strip() for part in str(spec).split(",")]
    if name not in RECIPES:
        raise ValueError(f"unknown augmentation recipe {name!r}; known: {', '.join(RECIPES)}")
    fields = [f.name for f in dataclasses.fields(AugmentConfig)]
    changes = {}
    for item in sets:
        key, eq, text = (t.strip() for t in item.partition("="))
        if not eq or key not in fields:
            raise ValueError(f"augmentation {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        changes[key] = _field_value(key, text)
    cfg = dataclasses.replace(RECIPES[name], **changes)
    if cfg.baldtex and not cfg.bald:  # it textures the scalps `bald` draws: alone it would change nothing
        raise ValueError(f"augmentation baldtex={cfg.baldtex:g} textures bald scalps: set bald=P too")
    return cfg


def _field_value(key: str, text: str):
    if key == "flip":
        if text.lower() not in ("0", "1", "true", "false"):
            raise ValueError(f"augmentation flip={text!r}: expected 0 or 1")
        return text.lower() in ("1", "true")
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"augmentation {key}={text!r}: expected a number") from None
    top = 180.0 if key in ("rotate", "hue") else 1.0  # degrees; the rest are probabilities or fractions
    if not 0 <= v <= top:  # also refuses nan
        raise ValueError(f"augmentation {key}={text}: expected 0..{top:g}")
    return v


def saw_grayscale(spec: str | None) -> bool | None:
    """Whether a network trained with recipe `spec` was shown grayscale faces; None when unknown."""
    try:
        return None if not spec else recipe_config(spec).gray > 0
    except ValueError:
        return None


def augment(x: torch.Tensor, y: torch.Tensor | None, flip_perm: torch.Tensor, cfg: AugmentConfig,
            generator: torch.Generator | None = None, soft: torch.Tensor | None = None,
            part: tuple[int, int] | None = None, bank: BackgroundBank | None = None,
            ids: tuple = (0, ())):
    """x: (N,C,H,W) float (normalised RGB [+ heatmap]), y: (N,H,W) long or None, soft: (N,K,H,W) class
    probabilities or None (teacher outputs for distillation; they follow the same flip, with left/right
    channels swapped, and the same warp; bald scalps change them and y). Returns (x, y[, soft]). part =
    (first row, global batch size) when x is one rank's rows of a global batch: the random draws
    are made for the whole global batch and this rank's rows taken: N ranks augment as one process would.
    bank: photos for cfg.paste; ids: the schema's (background id, hair ids[, skin id: for bald scalps])."""
    labelled = y is not None
    if y is None:
        y = torch.zeros(x.shape[0], x.shape[2], x.shape[3], dtype=torch.long, device=x.device)
    n = x.shape[0]
    dev = x.device

    def rand(*shape):
        if part is None:
            return torch.rand(*shape, generator=generator).to(dev)
        return torch.rand(part[1], *shape[1:], generator=generator)[part[0]:part[0] + shape[0]].to(dev)

    if cfg.flip:
        f = rand(n) < 0.5
        if f.any():
            x = torch.where(f[:, None, None, None], x.flip(-1), x)
            yf = flip_perm.to(dev)[y.flip(-1)]
            y = torch.where(f[:, None, None], yf, y)
            if soft is not None:
                k = soft.shape[1]
                sf = soft.flip(-1)[:, flip_perm[:k].to(dev)]
                soft = torch.where(f[:, None, None, None], sf, soft)
    if cfg.rotate or cfg.scale or cfg.shift:
        a = (rand(n) * 2 - 1) * math.radians(cfg.rotate)
        s = 1 + (rand(n) * 2 - 1) * cfg.scale
        t = (rand(n, 2) * 2 - 1) * cfg.shift * 2  # affine_grid works in [-1, 1]
        theta = torch.zeros(n, 2, 3, device=dev)
        theta[:, 0, 0] = torch.cos(a) / s
        theta[:, 0, 1] = -torch.sin(a) / s
        theta[:, 1, 0] = torch.sin(a) / s
        theta[:, 1, 1] = torch.cos(a) / s
        theta[:, :, 2] = t
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # Shift labels by +1 so that zero padding marks "outside" and can become ignore.
        yy = F.grid_sample((y.float() + 1)[:, None], grid, mode="nearest", padding_mode="zeros",
                           align_corners=False)[:, 0].long() - 1
        y = torch.where(yy < 0, torch.full_like(yy, 255), yy)
        if soft is not None:
            # Outside the crop the teacher said nothing: zero probabilities there mark invalid pixels.
            soft = F.grid_sample(soft, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.color:
        b = (rand(n, 1, 1, 1) * 2 - 1) * cfg.color * 2  # normalised units (~0.45 per 0.1 of range)
        c = 1 + (rand(n, 1, 1, 1) * 2 - 1) * cfg.color
        rgb = x[:, :3]
        mean = rgb.mean(dim=(1, 2, 3), keepdim=True)
        x = torch.cat([(rgb - mean) * c + mean + b, x[:, 3:]], 1)
    if _wild(cfg):
        rgb, y, soft = _wild_rgb(x[:, :3], y, soft, labelled, cfg, rand, bank, ids)
        x = torch.cat([rgb, x[:, 3:]], 1)
    return (x, y) if soft is None else (x, y, soft)


def _wild(cfg: AugmentConfig) -> bool:
    return any((cfg.paste, cfg.hair, cfg.gray, cfg.hue, cfg.saturation, cfg.shadow, cfg.blur, cfg.noise,
                cfg.jpeg, cfg.bald, cfg.tight, cfg.tightu))


def _wild_rgb(xn, y, soft, labelled: bool, cfg: AugmentConfig, rand, bank, ids):
    """The wild recipe on the normalised RGB channels; works in [0, 1] RGB and normalises back. Returns
    (rgb, y, soft): only bald scalps change the labels and the teacher's probabilities.
    Every draw is made for the whole batch, used or not, so the generator advances the same way
    whatever the probabilities pick (ranks stay in step)."""
    n, _, h, w = xn.shape
    dev = xn.device
    mean = torch.as_tensor(MEAN / 255, device=dev).view(1, 3, 1, 1)
    std = torch.as_tensor(STD / 255, device=dev).view(1, 3, 1, 1)
    img = (xn * std + mean).clamp(0, 1)
    bg_id, hair_ids, *rest = ids
    skin_id = rest[0] if rest else -1
    if soft is not None and not labelled:
        # Pseudo-labelled faces: the teacher's argmax; where it said nothing (outside the crop), ignore.
        cls = torch.where(soft.sum(1) > 0, soft.argmax(1), torch.full_like(y, 255))
    else:
        cls = y
    u = rand(n, 8)  # one column per decision below
    bald_faces = torch.zeros(n, dtype=torch.bool, device=dev)
    # Hair first: it recolours the face's own pixels, before the backdrop changes around them.
    hair = torch.zeros_like(cls, dtype=torch.bool)
    for k in hair_ids:
        hair |= cls == k
    if cfg.bald:  # drawn only when asked for, so recipes without it keep the draws they always had
        img, y, soft, cls, hair, bald_faces = _bald(img, y, soft, cls, hair, cfg.bald, rand, bank,
                                                    (bg_id, hair_ids, skin_id), labelled, cfg.baldtex)
    # Draws depend on the config only, never on what this rank's rows picked (ranks stay in step).
    r_hair = rand(n, 5) if cfg.hair else None
    pick = (u[:, 0] < cfg.hair)[:, None, None, None]
    if cfg.hair and pick.any():
        img = _recolour(img, hair & pick[:, 0], r_hair)
    r_bank = rand(n, 4) if cfg.paste or cfg.bald else None
    pick = ((u[:, 1] < cfg.paste) | bald_faces)[:, None, None, None]
    if (cfg.paste or bald_faces.any()) and bank is not None:
        # Picked faces lose their whole background; the others keep their studio wall but not the black
        # border jitter brought in from outside the crop, which parse never shows the network.
        keep = torch.where(pick[:, 0], (cls != bg_id) & (cls != 255), cls != 255)
        alpha = gauss_blur(keep.float()[:, None], 1.2).clamp(0, 1)
        back = bank.draw(n, h, w, r_bank, dev)
        if cfg.hairbg:  # u[:, 7] was drawn all along: the other draws stay where they were
            back = _hair_coloured(back, img, hair & (u[:, 7] < cfg.hairbg)[:, None, None])
        img = alpha * img + (1 - alpha) * back
    if cfg.hue or cfg.saturation:
        img = _hue_sat(img, (rand(n) * 2 - 1) * math.radians(cfg.hue), 1 + (rand(n) * 2 - 1) * cfg.saturation)
    img = torch.where((u[:, 2] < cfg.gray)[:, None, None, None], _luma(img)[:, None].expand_as(img), img)
    ramp = _ramp(n, h, w, rand(n, 2), dev)
    img = torch.where((u[:, 3] < cfg.shadow)[:, None, None, None], img * ramp, img)
    img = _degraded(img, u, cfg, rand)
    p_tight = cfg.tight if labelled else cfg.tightu
    if cfg.tight or cfg.tightu:  # last: the black fill beyond a photo is not blurred, noised or compressed with it
        img, y, soft = tight_photos(img, y, soft, face_box(cls, bg_id, hair_ids), rand(n, 6), p_tight)
    return (img.clamp(0, 1) - mean) / std, y, soft


def _degraded(img, u, cfg: AugmentConfig, rand):
    """Blur, sensor noise and JPEG on the faces u's columns 4-6 pick (wild's last photometric steps)."""
    n, _, h, w = img.shape
    sig = 0.5 + rand(n)
    if cfg.blur and (u[:, 4] < cfg.blur).any():
        blurred = torch.stack([gauss_blur(img[i:i + 1], float(sig[i]))[0] for i in range(n)])
        img = torch.where((u[:, 4] < cfg.blur)[:, None, None, None], blurred, img)
    if cfg.noise:
        # Uniform noise with a standard deviation of 0..4 grey levels (uniform: one draw per pixel).
        amp = rand(n) * 4 / 255 * math.sqrt(3)
        noise = (rand(n, 3, h, w) * 2 - 1) * amp.view(n, 1, 1, 1)
        img = torch.where((u[:, 5] < cfg.noise)[:, None, None, None], (img + noise).clamp(0, 1), img)
    q = (30 + rand(n) * 60).round()
    if cfg.jpeg and (u[:, 6] < cfg.jpeg).any():
        img = torch.stack([_jpeg(img[i], int(q[i])) if u[i, 6] < cfg.jpeg else img[i] for i in range(n)])
    return img


def _bald(img, y, soft, cls, hair, p: float, rand, bank, ids, labelled: bool, tex: float = 0.0):
    """bald_scalps on the faces picked with probability p, with the labels (when labelled), the teacher's
    probabilities and cls following: the scalp is skin, the hair outside it background. Returns (img, y,
    soft, cls, hair, faces): hair what is left of it, faces which were made bald. Without backdrops to
    paste (bank None) the hair outside the scalp could not be taken away, and without a skin class there
    is no scalp: then nothing changes (the draws are made all the same)."""
    bg_id, hair_ids, skin_id = ids
    n, _, h, w = img.shape
    r, grain = rand(n, 4), rand(n, h, w)
    texture = rand(n) < tex if tex else None  # drawn only when asked for: bald recipes keep their draws
    if skin_id < 0 or bg_id < 0 or bank is None:
        return img, y, soft, cls, hair, torch.zeros(n, dtype=torch.bool, device=img.device)
    img, scalp, out = bald_scalps(img, cls, hair, r[:, 0] < p, r[:, 1:], grain, bg_id, skin_id, texture=texture)
    y, cls = y.clone(), cls.clone()
    if labelled:
        y[scalp], y[out] = skin_id, bg_id
    cls[scalp], cls[out] = skin_id, bg_id
    if soft is not None:
        soft = soft.clone()
        # The hair's probability goes where the label went; background turned scalp gives its own to skin.
        for mask, to in ((scalp, skin_id), (out, bg_id)):
            m = mask[:, None].to(soft.dtype)
            moved = soft[:, list(hair_ids)].sum(1, keepdim=True) * m
            for k in hair_ids:
                soft[:, k:k + 1] *= 1 - m
            soft[:, to:to + 1] += moved
        m = scalp[:, None].to(soft.dtype)
        soft[:, skin_id:skin_id + 1] += soft[:, bg_id:bg_id + 1] * m
        soft[:, bg_id:bg_id + 1] *= 1 - m
    return img, y, soft, cls, hair & ~(scalp | out), (scalp | out).flatten(1).any(1)


def _hair_coloured(back, img, hair, min_pixels: int = 100):
    """Each background whose face has at least min_pixels of `hair` (N,H,W bool) with its channels'
    means and standard deviations moved to those of the hair in img, as paste.hair_coloured; the rest
    as they were."""
    w = hair.to(img.dtype)[:, None]  # (N,1,H,W)
    cnt = w.sum((2, 3))  # (N,1)
    mu_h = (img * w).sum((2, 3)) / cnt.clamp_min(1)
    sd_h = ((img - mu_h[..., None, None]) ** 2 * w).sum((2, 3)).div(cnt.clamp_min(1)).sqrt()
    mu_b, sd_b = back.mean((2, 3)), back.std((2, 3)).clamp_min(1 / 255)
    moved = ((back - mu_b[..., None, None]) / sd_b[..., None, None] * sd_h[..., None, None]
             + mu_h[..., None, None]).clamp(0, 1)
    return torch.where((cnt >= min_pixels)[..., None, None], moved, back)


def _luma(img):
    """(N,3,H,W) RGB -> (N,H,W) ITU-R 601 luma, as paste.to_gray."""
    return (img * torch.tensor(LUMA, device=img.device, dtype=img.dtype).view(1, 3, 1, 1)).sum(1)


def _recolour(img, hair, r):
    """Hair pixels to a random lightness range and tint, keeping their luminance texture (stretched).
    Faces whose mask is (nearly) empty, the ones not picked included, are returned as they are."""
    n = img.shape[0]
    luma = _luma(img)
    out = []
    for i in range(n):
        m = hair[i]
        if int(m.sum()) < 16:
            out.append(img[i])
            continue
        v = luma[i][m]
        lo_q, hi_q = torch.quantile(v, 0.02), torch.quantile(v, 0.98)
        t = ((luma[i] - lo_q) / (hi_q - lo_q).clamp_min(1e-3)).clamp(0, 1)
        lo = 0.2 + 0.5 * float(r[i, 0])  # darkest strand 0.2..0.7
        hi = min(1.0, lo + 0.2 + 0.4 * float(r[i, 1]))
        # From grey/white (a third of the time) through blonde and ginger to red.
        g_, b_ = (1.0, 1.0) if float(r[i, 2]) < 0.33 else (1 - 0.6 * float(r[i, 3]), 1 - 0.85 * float(r[i, 4]))
        tint = torch.tensor([1.0, g_, b_], device=img.device, dtype=img.dtype)
        new = (lo + (hi - lo) * t)[None] * tint.view(3, 1, 1)
        a = gauss_blur(m.float()[None, None], 1.0)[0]
        out.append(a * new + (1 - a) * img[i])
    return torch.stack(out)


def _hue_sat(img, angle, sat):
    """Hue rotation about the grey axis (Rodrigues) and saturation scaling, per image."""
    n = img.shape[0]
    k = torch.full((3,), 1 / math.sqrt(3), device=img.device)
    kx = torch.tensor([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], dtype=img.dtype, device=img.device) / math.sqrt(3)
    kk = torch.outer(k, k)
    eye = torch.eye(3, device=img.device)
    c, s = torch.cos(angle).view(n, 1, 1), torch.sin(angle).view(n, 1, 1)
    rot = c * eye + s * kx + (1 - c) * kk  # (n,3,3)
    grey = kk  # projection onto the grey axis
    m = grey + sat.view(n, 1, 1) * (rot - grey)
    return torch.einsum("nij,njhw->nihw", m, img).clamp(0, 1)


def _ramp(n, h, w, r, dev):
    """A linear brightness ramp across the image, from 1 to 0.4..1, in a random direction."""
    ang = r[:, 0] * 2 * math.pi
    depth = 0.4 + 0.6 * r[:, 1]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h, device=dev), torch.linspace(-1, 1, w, device=dev),
                            indexing="ij")
    t = (torch.cos(ang).view(n, 1, 1) * xx + torch.sin(ang).view(n, 1, 1) * yy) / math.sqrt(2) * 0.5 + 0.5
    return (1 - (1 - depth.view(n, 1, 1)) * t.clamp(0, 1))[:, None]


def _jpeg(img, quality: int):
    """One (3,H,W) [0,1] image through JPEG at `quality` (on the CPU: PIL's encoder)."""
    a = (img.permute(1, 2, 0).float().cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=quality)
    b = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32) / 255
    return torch.from_numpy(b).permute(2, 0, 1).to(img.device, img.dtype)


def training_recipe(name: str, backgrounds: str | None, size: int, seed: int, schema, reporter=None):
    """(AugmentConfig, BackgroundBank or None, ids) for train and distill: the recipe `name` (a spec of
    recipe_config), the bank of a `backgrounds` output, and the schema's (background id, hair ids) the
    wild recipe needs (and its skin id, for bald scalps)."""
    cfg = recipe_config(name)
    bank = None
    if backgrounds and (cfg.paste or cfg.bald):
        bank = load_bank(backgrounds, size, seed=seed)
    elif (cfg.paste or cfg.bald) and reporter is not None:
        reporter.log(f"[yellow]note[/]: --augment {name} without --backgrounds pastes no faces onto other "
                     "backgrounds" + (" and draws no bald scalps" if cfg.bald else "") +
                     "; make a set with `facepipe backgrounds` (see its --help).")
    bg = 0 if schema.classes[0] == "background" else -1  # -1: no class is replaced
    hair = tuple(i for i, c in enumerate(schema.classes) if c == "hair")
    skin = schema.classes.index("skin") if "skin" in schema.classes else -1
    return cfg, bank, (bg, hair, skin)
