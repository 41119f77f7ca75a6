"""Average the weights of runs of one network ("a soup"): python tools/soup.py OUT.pt RUN... [--weights W...]

Every floating-point tensor of the runs' best checkpoints (BatchNorm's running statistics included) is
averaged, uniformly or with --weights; integer tensors (BatchNorm's step counts) are the first run's.
OUT.pt is the first run's checkpoint with those weights and `soup` (the runs and weights) added to its
config, so every command that takes a checkpoint file scores or parses it. Worth trying on runs
fine-tuned from one start with different settings; docs/results.md ("Grayscale or F1") measures it.
"""
import argparse

import torch

from facepipe.infer.checkpoint import load_checkpoint, run_checkpoint


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--weights", nargs="+", type=float)
    a = ap.parse_args()
    w = a.weights or [1.0] * len(a.runs)
    if len(w) != len(a.runs):
        ap.error("give one weight per run")
    cks = [load_checkpoint(run_checkpoint(r)) for r in a.runs]
    if len({(c["arch"], str(c["model_kwargs"])) for c in cks}) != 1:
        ap.error("the runs are not all the same network")
    sd = {}
    for k, v in cks[0]["state_dict"].items():
        if v.is_floating_point():
            sd[k] = (sum(wi * c["state_dict"][k].float() for wi, c in zip(w, cks)) / sum(w)).to(v.dtype)
        else:
            sd[k] = v
    out = dict(cks[0], state_dict=sd, config=dict(cks[0]["config"], soup={"runs": a.runs, "weights": w}))
    torch.save(out, a.out)


if __name__ == "__main__":
    main()
