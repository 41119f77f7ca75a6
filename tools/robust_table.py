"""Score models on the robustness benchmark's four variants and print one markdown table.

    python tools/robust_table.py default runs/tw runs/tw-student [--data data] [--out runs/robust]

Needs data/robust-{plain,pasted,gray,hair}.h5, made as docs/results.md ("Robustness benchmark") shows.
Each model is scored with `facepipe eval` (V2 test split, photo coordinates); the JSON of every cell is
kept under --out/<model>/<variant>.json. Losses are against the same model's plain row.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

VARIANTS = ("plain", "pasted", "gray", "hair")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", default="data")
    ap.add_argument("--out", default="runs/robust")
    a = ap.parse_args()
    rows = ["| model | variant | overall F1 | pixel acc | bg F1 | hair F1 | skin F1 | F1 lost | acc lost |",
            "|---|---|---|---|---|---|---|---|---|"]
    for m in a.models:
        base = None
        for v in VARIANTS:
            js = Path(a.out) / Path(m).name / f"{v}.json"
            js.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "facepipe", "eval", m, f"{a.data}/robust-{v}.h5", "--json", str(js),
                            "--sheet", str(js.with_suffix(".png")), "-q"], check=True)
            r = json.loads(js.read_text())
            f1 = r["per_class_f1"]
            base = base or r
            rows.append(f"| {m} | {v} | {r['overall_f1']:.4f} | {100 * r['pixel_acc']:.2f}% | "
                        f"{f1.get('background', float('nan')):.3f} | {f1.get('hair', float('nan')):.3f} | "
                        f"{f1.get('skin', float('nan')):.3f} | {100 * (base['overall_f1'] - r['overall_f1']):.1f} | "
                        f"{100 * (base['pixel_acc'] - r['pixel_acc']):.1f} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
