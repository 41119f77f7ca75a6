"""Choose the radius and eps of the guided filter that moves background, hair and skin onto the crop's
edges (facepipe/infer/edges.py): score a model on cache splits as `parse` answers (face colours and
landmark prior on) without the filter and with each (RADIUS, EPS) of a grid, and print the change in
pixel accuracy / overall F1 per setting. The bundled setting is the one whose smallest gain over the
selection sets (training splits only) is largest.

    python tools/edges_select.py default data/robust-plain-train-t4.h5:train \
        data/robust-wide-train-t4.h5:train data/robust-hair-train-t4.h5:train
"""
import argparse
import functools

import facepipe.infer.evaluate as evaluate_mod
from facepipe.infer.edges import coarse_head, snap_to_edges
from facepipe.infer.model import LoadedModel

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
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("sets", nargs="+", help="CACHE[:SPLIT]")
    ap.add_argument("--grid", default=GRID, help="RADIUS:EPS,... settings to try")
    a = ap.parse_args()
    grid = [tuple(float(v) for v in g.split(":")) for g in a.grid.split(",")]
    m = LoadedModel.load(a.model)
    gains = {g: [] for g in grid}
    for spec in a.sets:
        path, _, split = spec.partition(":")
        base = _score(m, path, split or "test", None)
        row = [f"{spec}: {base['pixel_acc'] * 100:.3f}% / {base['overall_f1']:.4f}"]
        for g in grid:
            r = _score(m, path, split or "test", g)
            d = (r["pixel_acc"] - base["pixel_acc"]) * 100
            gains[g].append(d)
            row.append(f"{g[0]:g}:{g[1]:g} {d:+.3f} / {r['overall_f1'] - base['overall_f1']:+.4f}")
        print(" | ".join(row), flush=True)
    best = max(grid, key=lambda g: min(gains[g]))
    print(f"largest smallest gain: radius {best[0]:g}, eps {best[1]:g} ({min(gains[best]):+.3f} points)")


if __name__ == "__main__":
    main()
