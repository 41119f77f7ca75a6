"""Pack a run's best checkpoint as the package's default model: weights, schema and alignment only
(no optimiser state, no absolute paths of the machine that trained it).

Usage: python -m facepipe.infer.pack RUN OUT.pt [--fp16] [--gray GRAY_RUN] [--beyond-photo-fill edge|black]

--fp16 stores floating-point weights in half precision (half the file; loading casts them back to the
model's fp32 parameters, so only the rounding of the stored weights changes the outputs).
--gray adds GRAY_RUN's network as the grayscale branch (models.gray_route): trained on grayscale faces, run
on the faces whose crop has next to no colour. It must take the same input (size, channels, alignment) and
predict the same classes as RUN; it may be wider. GRAY_RUN may also be a packed model with a gray branch
(the bundled `default`, say): its gray branch is kept as it is, for a new colour network beside it.
--beyond-photo-fill records what `parse` and `eval` show the network where a crop reaches past its photo
(infer.photo_fill): edge (the photo's colour along that edge, for colour faces) or black (as cut; files
without the key). RUN may be a packed file: its own setting is kept unless this flag is given.
"""
from __future__ import annotations

import sys

import torch

from facepipe.infer.checkpoint import load_checkpoint, run_checkpoint, training_augment
from facepipe.models.gray_route import GRAY_SATURATION, TONED_RESIDUAL
from facepipe.util.atomic import atomic_path
from facepipe.util.errors import FacepipeError

KEEP = ("format", "format_version", "facepipe_version", "arch", "model_kwargs", "num_classes", "in_channels",
        "heatmap", "size", "schema", "state_dict", "align", "epoch", "metrics", "beyond_photo_fill")
# What the two branches must share to take one crop each: the same input and classes. The gray branch may
# be another width (it runs only on grayscale faces, so a wider one costs colour photos nothing).
SAME = ("num_classes", "in_channels", "heatmap", "size", "schema", "align")


def _weights(ck: dict, fp16: bool) -> dict:
    return {k: v.clone().half() if fp16 and v.is_floating_point() else v.clone() for k, v in ck["state_dict"].items()}


def _gray_branch(g: dict, fp16: bool) -> dict:
    """A checkpoint's network as the gray branch; from a packed two-branch model, its own gray branch."""
    if "gray_branch" in g:
        g = {**g["gray_branch"], "recipe": g["gray_branch"].get("recipe") or {}}
        return {**g, "state_dict": _weights(g, fp16), "threshold": GRAY_SATURATION, "toned": TONED_RESIDUAL}
    return {"arch": g["arch"], "model_kwargs": g["model_kwargs"], "state_dict": _weights(g, fp16),
            "threshold": GRAY_SATURATION, "toned": TONED_RESIDUAL, "recipe": {"augment": training_augment(g)},
            "epoch": g.get("epoch"), "metrics": g.get("metrics")}


def pack(run, out, fp16: bool = False, gray=None, fill: str | None = None) -> dict:
    if fill not in (None, "edge", "black"):
        raise FacepipeError(f"--beyond-photo-fill must be edge or black, not {fill!r}.")
    ck = load_checkpoint(run_checkpoint(run))
    small = {k: ck[k] for k in KEEP if k in ck}
    small["state_dict"] = _weights(ck, fp16)
    small["stored_dtype"] = "float16" if fp16 else "float32"
    aug = training_augment(ck)
    if aug:  # what the network has seen (parse warns on grayscale photos unless "wild")
        small["recipe"] = {"augment": aug}
    if gray is not None:
        try:
            g = load_checkpoint(run_checkpoint(gray))
        except FacepipeError as e:
            raise FacepipeError(f"--gray: {e}") from None
        differ = [k for k in SAME if g.get(k) != ck.get(k)]
        if differ:
            raise FacepipeError(f"--gray {gray} differs from {run} in {', '.join(differ)}; the gray branch must "
                                "take the same input and predict the same classes.")
        small["gray_branch"] = _gray_branch(g, fp16)
    if fill is not None:
        small["beyond_photo_fill"] = fill
    with atomic_path(out) as tmp:
        torch.save(small, tmp)
    return small


if __name__ == "__main__":
    args, opts = sys.argv[1:], {}
    for flag in ("--gray", "--beyond-photo-fill"):
        if flag in args:
            i = args.index(flag)
            opts[flag] = args[i + 1] if i + 1 < len(args) else sys.exit(__doc__)
            del args[i:i + 2]
    args = [a for a in args if a != "--fp16"]
    if len(args) != 2:
        sys.exit(__doc__)
    try:
        pack(args[0], args[1], fp16="--fp16" in sys.argv, gray=opts.get("--gray"), fill=opts.get("--beyond-photo-fill"))
    except FacepipeError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {args[1]}")
