"""Choose the radius and eps of the guided filter that moves background, hair and skin onto the crop's
edges (facepipe/infer/edges.py): score a model on cache splits as `parse` answers (face colours and
landmark prior on) without the filter and with each (RADIUS, EPS) of a grid, and print the change in
pixel accuracy / overall F1 per setting. The bundled setting is the one whose smallest gain over the
selection sets (training splits only) is largest.

    python tools/edges_select.py default data/robust-plain-train-t4.h5:train \
        data/robust-wide-train-t4.h5:train data/robust-hair-train-t4.h5:train
"""
import functools

import grid_select

import facepipe.infer.evaluate as evaluate_mod
from facepipe.infer.edges import coarse_head, snap_to_edges

GRID = "4:0.001,4:0.0001,6:0.001,6:0.0001,8:0.001,8:0.0001"


def _score(m, path: str, split: str, setting) -> dict:
    """eval as parse answers, the filter at `setting` (radius, eps), or off for None; tried whatever the
    model's head (parse runs it for coarse heads only: edges.coarse_head)."""
    evaluate_mod.snap_to_edges = (lambda *a, **k: 0) if setting is None else functools.partial(
        snap_to_edges, radius=int(setting[0]), eps=setting[1])
    evaluate_mod.coarse_head = lambda net: True
    try:
        return evaluate_mod.evaluate_model(m, path, split=split, face_colours=True, landmark_prior=True)
    finally:
        evaluate_mod.snap_to_edges, evaluate_mod.coarse_head = snap_to_edges, coarse_head


def main():
    grid_select.run(_score, GRID, ("radius", "eps"), "RADIUS:EPS")


if __name__ == "__main__":
    main()
