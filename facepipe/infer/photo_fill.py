"""What the network sees beyond the photo: a crop that reaches past its photo's edge (a face near the edge,
FASSEG's photos that end at the hair, a tight photo) is black there, as it is cut; a model that says so
(`beyond_photo_fill: "edge"` in its file, `infer.pack --beyond-photo-fill edge`) sees those pixels filled
instead with the mean colour of the photo's pixels along them (within RING px): a plain wall of the
backdrop's colour.

Why: with black above a head, the bundled default calls a strip of backdrop between the photo's top edge and
the head hair (biden2's painting), and white or grey hair under the black skin (dlib-johns' tight crops).
Its colour network was trained with `--outside-photo ignore`, where the augmentation pastes a backdrop over
the fill, so black beyond the edge is what it saw least. Filled, as `parse` answers: +0.10 to +0.73 points
on every colour variant of the benchmark (the most on bald scalps, the hair-coloured backdrop and recoloured
hair), +0.47 on the 4 real CelebAMask-HQ photos (docs/results.md, "The backdrop's colour beyond the photo").

Only colour crops are filled: a colourless one (models.gray_route.colourless, the router's rule) keeps its
black. The default's gray branch lost 0.47 points on FASSEG's gray photos and 0.62 on the real ones with the
fill, though trained the same way; `accurate` (trained with `--outside-photo edge`, which keeps the black
fill labelled background) lost 1.0 point on plain photos, so its file does not ask for it. The router reads
the crop as cut in any case, so a face takes the branch it took before.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from facepipe.models.gray_route import colourless
from facepipe.util.errors import FacepipeError

FILLS = ("model", "edge", "black")  # --fill-beyond-photo: as the model's file says, or either one
RING = 8  # px of the photo along its edge whose mean colour fills the crop beyond it (set before measuring)


def fill_beyond(crop: np.ndarray, inside: np.ndarray | None, ring: int = RING) -> np.ndarray:
    """A copy of `crop` (S x S x 3 uint8) with its pixels beyond the photo (not `inside`) set to the mean
    colour of the photo's pixels within `ring` px of them (city-block distance); the crop itself when it
    lies wholly inside the photo (inside None or all True) or wholly beyond it."""
    if inside is None or inside.all() or not inside.any():
        return crop
    near = inside & (ndimage.distance_transform_cdt(inside, metric="taxicab") <= ring)
    out = crop.copy()
    out[~inside] = np.rint(crop[near].reshape(-1, crop.shape[-1]).mean(0)).astype(crop.dtype)
    return out


def resolve(fill: str, checkpoint: dict) -> str:
    """"edge" or "black": `fill` as asked, or the model file's own ("model"; files without the key: black)."""
    if fill not in FILLS:
        raise FacepipeError(f"the fill beyond the photo must be one of {', '.join(FILLS)}, not {fill!r}.")
    if fill != "model":
        return fill
    said = checkpoint.get("beyond_photo_fill", "black")
    if said not in ("edge", "black"):
        raise FacepipeError(f"the model's file asks for the fill {said!r} beyond the photo, which this facepipe "
                            "does not know (edge or black); pass --fill-beyond-photo edge or black.")
    return said


def network_crops(crops, insides, fill: str) -> list | None:
    """Each crop as the network is to see it (network_crop), or None when none changes, so that the batch as
    cut serves the network and the gray router alike (parse and eval: the router reads the crops as cut)."""
    if fill != "edge" or insides is None:
        return None
    crops = list(crops)  # one object each (an array's rows are new views on every read), for `is`
    shown = [network_crop(c, i, fill) for c, i in zip(crops, insides)]
    return None if all(a is b for a, b in zip(shown, crops)) else shown


def network_crop(crop: np.ndarray, inside: np.ndarray | None, fill: str) -> np.ndarray:
    """The crop as the network is to see it: filled beyond the photo for fill "edge" and a colour crop,
    else as cut."""
    if fill != "edge" or inside is None or colourless(crop):
        return crop
    return fill_beyond(crop, inside)
