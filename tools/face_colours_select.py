"""Choose the weight and clip of the face's own colours (facepipe/infer/face_colours.py): score a model
on cache splits without the rule and with each (BETA, TAU) of a grid, and print the change in pixel
accuracy / overall F1 per setting. The bundled setting is the one whose smallest gain over the
selection sets (training splits only) is largest.

    python tools/face_colours_select.py default data/robust-wide-train-t4.h5:train \
        data/fasseg-hc-b2.0-t4.h5:train data/robust-hair-train-t4.h5:train
"""
import argparse
import functools

import facepipe.infer.evaluate as evaluate_mod
from facepipe.infer.face_colours import FaceColours
from facepipe.infer.model import LoadedModel

GRID = "0.125:4,0.25:2,0.25:4,0.25:8,0.375:4,0.5:4,1:4"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("sets", nargs="+", help="CACHE[:SPLIT]")
    ap.add_argument("--grid", default=GRID, help="BETA:TAU,... settings to try")
    a = ap.parse_args()
    grid = [tuple(float(v) for v in g.split(":")) for g in a.grid.split(",")]
    m = LoadedModel.load(a.model)
    gains = {g: [] for g in grid}
    for spec in a.sets:
        path, _, split = spec.partition(":")
        base = evaluate_mod.evaluate_model(m, path, split=split or "test")
        row = [f"{spec}: {base['pixel_acc'] * 100:.3f}% / {base['overall_f1']:.4f}"]
        for beta, tau in grid:
            evaluate_mod.FaceColours = functools.partial(FaceColours, beta=beta, tau=tau)
            r = evaluate_mod.evaluate_model(m, path, split=split or "test", face_colours=True)
            evaluate_mod.FaceColours = FaceColours
            d = (r["pixel_acc"] - base["pixel_acc"]) * 100
            gains[(beta, tau)].append(d)
            row.append(f"{beta:g}:{tau:g} {d:+.3f} / {r['overall_f1'] - base['overall_f1']:+.4f}")
        print(" | ".join(row), flush=True)
    best = max(grid, key=lambda g: min(gains[g]))
    print(f"largest smallest gain: beta {best[0]:g}, tau {best[1]:g} ({min(gains[best]):+.3f} points)")


if __name__ == "__main__":
    main()
