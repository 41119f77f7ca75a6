"""Pack a run's best checkpoint as the package's default model: weights, schema and alignment only
(no optimiser state, no absolute paths of the machine that trained it).

Usage: python -m facepipe.tools_pack RUN OUT.pt
"""
from __future__ import annotations

import sys

import torch

from facepipe.atomic import atomic_path
from facepipe.checkpoint import load_checkpoint, run_checkpoint

KEEP = ("format", "format_version", "facepipe_version", "arch", "model_kwargs", "num_classes", "in_channels",
        "heatmap", "size", "schema", "state_dict", "align", "epoch", "metrics")


def pack(run, out) -> dict:
    ck = load_checkpoint(run_checkpoint(run))
    small = {k: ck[k] for k in KEEP if k in ck}
    small["state_dict"] = {k: v.clone() for k, v in small["state_dict"].items()}
    with atomic_path(out) as tmp:
        torch.save(small, tmp)
    return small


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    pack(sys.argv[1], sys.argv[2])
    print(f"wrote {sys.argv[2]}")
