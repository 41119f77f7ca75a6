"""The loop `face_colours_select.py` and `edges_select.py` share: score a model on cache splits once
without a rule and once per setting of a grid, print each setting's change in pixel accuracy / overall
F1 per set, and name the setting whose smallest gain over the sets is largest (how the bundled settings
of the face rules were chosen, on training splits only).
"""
import argparse

from facepipe.infer.model import LoadedModel


def parse_args(grid: str, what: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("sets", nargs="+", help="CACHE[:SPLIT]")
    ap.add_argument("--grid", default=grid, help=f"{what},... settings to try")
    return ap.parse_args()


def run(score, grid: str, names: tuple[str, str], what: str) -> None:
    """score(model, cache, split, setting): eval's result with the rule at `setting`, or without it for
    None. names: the two numbers of a setting, as the last line calls them."""
    a = parse_args(grid, what)
    settings = [tuple(float(v) for v in g.split(":")) for g in a.grid.split(",")]
    m = LoadedModel.load(a.model)
    gains = {g: [] for g in settings}
    for spec in a.sets:
        path, _, split = spec.partition(":")
        base = score(m, path, split or "test", None)
        row = [f"{spec}: {base['pixel_acc'] * 100:.3f}% / {base['overall_f1']:.4f}"]
        for g in settings:
            r = score(m, path, split or "test", g)
            d = (r["pixel_acc"] - base["pixel_acc"]) * 100
            gains[g].append(d)
            row.append(f"{g[0]:g}:{g[1]:g} {d:+.3f} / {r['overall_f1'] - base['overall_f1']:+.4f}")
        print(" | ".join(row), flush=True)
    best = max(settings, key=lambda g: min(gains[g]))
    print(f"largest smallest gain: {names[0]} {best[0]:g}, {names[1]} {best[1]:g} ({min(gains[best]):+.3f} points)")
