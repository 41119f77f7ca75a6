"""Pack a run's best checkpoint as the package's default model: weights, schema and alignment only
(no optimiser state, no absolute paths of the machine that trained it).

Usage: python -m facepipe.infer.pack RUN OUT.pt [--fp16]

--fp16 stores floating-point weights in half precision (half the file; loading casts them back to the
model's fp32 parameters, so only the rounding of the stored weights changes the outputs).
"""
from __future__ import annotations

import sys

import torch

from facepipe.infer.checkpoint import load_checkpoint, run_checkpoint, training_augment
from facepipe.util.atomic import atomic_path

KEEP = ("format", "format_version", "facepipe_version", "arch", "model_kwargs", "num_classes", "in_channels",
        "heatmap", "size", "schema", "state_dict", "align", "epoch", "metrics")


def pack(run, out, fp16: bool = False) -> dict:
    ck = load_checkpoint(run_checkpoint(run))
    small = {k: ck[k] for k in KEEP if k in ck}
    small["state_dict"] = {k: v.clone().half() if fp16 and v.is_floating_point() else v.clone()
                           for k, v in small["state_dict"].items()}
    small["stored_dtype"] = "float16" if fp16 else "float32"
    aug = training_augment(ck)
    if aug:  # what the network has seen (parse warns on grayscale photos unless "wild")
        small["recipe"] = {"augment": aug}
    with atomic_path(out) as tmp:
        torch.save(small, tmp)
    return small


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--fp16"]
    if len(args) != 2:
        sys.exit(__doc__)
    pack(args[0], args[1], fp16="--fp16" in sys.argv)
    print(f"wrote {args[1]}")
