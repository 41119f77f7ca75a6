"""Score models on the robustness benchmark's four variants and print one markdown table.

    python tools/robust_table.py default runs/tw runs/tw-student [--data data] [--out runs/robust] [--wide]

Needs data/robust-{plain,pasted,gray,hair}.h5, made as docs/results.md ("Robustness benchmark") shows;
for models trained with `align --turn-shift 4` (the bundled ones since "Turned faces"), a folder of the
same four cut with `--turn-shift 4`, passed as --data, and another --out (the kept JSONs are keyed by
model, not by data).
Each model is scored with `facepipe eval` (V2 test split, photo coordinates); the JSON of every cell is
kept under --out/<model>-<sha>/<variant>.json, <sha> the start of the checkpoint file's sha256 (an
existing one is read, not recomputed; a retrained run or a new bundled file gets a new folder). Losses are against
the same model's plain row. --wide: one row per model (pixel acc / overall F1 of each variant, then the
largest loss of each), as the ablation of the wild recipe in docs/results.md shows it.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

from facepipe.infer.checkpoint import run_checkpoint
from facepipe.util.manifest import file_sha256

VARIANTS = ("plain", "pasted", "gray", "hair")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", default="data")
    ap.add_argument("--out", default="runs/robust")
    ap.add_argument("--wide", action="store_true")
    a = ap.parse_args()
    scores = {}
    for m in a.models:
        scores[m] = score_all(m, a.data, a.out)
    print("\n".join(wide(scores) if a.wide else long(scores)))


def score_all(model: str, data: str = "data", out: str = "runs/robust") -> dict:
    """{variant: eval JSON} of one model; the checkpoint is hashed once, not once per variant."""
    kept = Path(out) / f"{Path(model).name}-{file_sha256(run_checkpoint(model))[:10]}"
    return {v: score(model, v, data, kept) for v in VARIANTS}


def score(model: str, variant: str, data: str, kept: Path) -> dict:
    js = kept / f"{variant}.json"
    if not js.exists():
        js.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "facepipe", "eval", model, f"{data}/robust-{variant}.h5", "--json",
                        str(js), "--sheet", str(js.with_suffix(".png")), "-q"], check=True)
    return json.loads(js.read_text())


def long(scores: dict) -> list[str]:
    rows = ["| model | variant | overall F1 | pixel acc | bg F1 | hair F1 | skin F1 | F1 lost | acc lost |",
            "|---|---|---|---|---|---|---|---|---|"]
    for m, by_variant in scores.items():
        base = by_variant["plain"]
        for v, r in by_variant.items():
            f1 = r["per_class_f1"]
            rows.append(f"| {m} | {v} | {r['overall_f1']:.4f} | {100 * r['pixel_acc']:.2f}% | "
                        f"{f1.get('background', float('nan')):.3f} | {f1.get('hair', float('nan')):.3f} | "
                        f"{f1.get('skin', float('nan')):.3f} | {100 * (base['overall_f1'] - r['overall_f1']):.1f} | "
                        f"{100 * (base['pixel_acc'] - r['pixel_acc']):.1f} |")
    return rows


def wide(scores: dict) -> list[str]:
    rows = ["| model | " + " | ".join(f"{v} acc / F1" for v in VARIANTS) + " | most acc lost | most F1 lost |",
            "|---|" + "---|" * (len(VARIANTS) + 2)]
    for m, by_variant in scores.items():
        base = by_variant["plain"]
        cells = [f"{100 * r['pixel_acc']:.2f}% / {r['overall_f1']:.3f}" for r in by_variant.values()]
        lost_acc = max(100 * (base["pixel_acc"] - r["pixel_acc"]) for r in by_variant.values())
        lost_f1 = max(100 * (base["overall_f1"] - r["overall_f1"]) for r in by_variant.values())
        rows.append(f"| {m} | " + " | ".join(cells) + f" | {lost_acc:.1f} | {lost_f1:.1f} |")
    return rows


if __name__ == "__main__":
    main()
