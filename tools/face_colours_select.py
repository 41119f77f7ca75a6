"""Choose the weight and clip of the face's own colours (facepipe/infer/face_colours.py): score a model
on cache splits without the rule and with each (BETA, TAU) of a grid, and print the change in pixel
accuracy / overall F1 per setting (for a student the edges filter, infer.edges, runs with the colours
as in parse; the bundled setting was chosen before it existed). The bundled setting is the one whose
smallest gain over the selection sets (training splits only) is largest.

    python tools/face_colours_select.py default data/robust-wide-train-t4.h5:train \
        data/fasseg-hc-b2.0-t4.h5:train data/robust-hair-train-t4.h5:train
"""
import functools

import grid_select

import facepipe.infer.evaluate as evaluate_mod
from facepipe.infer.face_colours import FaceColours

GRID = "0.125:4,0.25:2,0.25:4,0.25:8,0.375:4,0.5:4,1:4"


def _score(m, path: str, split: str, setting) -> dict:
    """eval with the face's colours at `setting` (beta, tau), or without them for None."""
    if setting is None:
        return evaluate_mod.evaluate_model(m, path, split=split)
    evaluate_mod.FaceColours = functools.partial(FaceColours, beta=setting[0], tau=setting[1])
    try:
        return evaluate_mod.evaluate_model(m, path, split=split, face_colours=True)
    finally:
        evaluate_mod.FaceColours = FaceColours


def main():
    grid_select.run(_score, GRID, ("beta", "tau"), "BETA:TAU")


if __name__ == "__main__":
    main()
