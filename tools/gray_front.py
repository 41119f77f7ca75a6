"""Students against the two targets that pull apart: grayscale's loss and the F1 gap to the teacher.

    python tools/gray_front.py default runs/g/g15 runs/g/pc-g15 ... --teacher accurate \
        --out docs/figures/gray-front.png

Every model is scored on the robustness benchmark as tools/robust_table.py scores it (same cache of eval
JSONs under runs/robust). Prints one markdown row per model: the four variants (pixel acc / overall F1),
pixel accuracy lost on pasted and gray photos against the model's own plain row, and overall F1 below
--teacher on plain and pasted photos. The figure puts grayscale's loss against the larger of the two F1
gaps, with the issue's targets (1.5 points, 1 point) as the corner a default has to sit in.
"""
import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on the machines this runs on
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).parent))
from robust_table import VARIANTS, score_all  # noqa: E402

GRAY_TARGET, F1_TARGET = 1.5, 1.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--teacher", default="accurate")
    ap.add_argument("--data", default="data")
    ap.add_argument("--cache", default="runs/robust")
    ap.add_argument("--out", help="PNG of the front")
    a = ap.parse_args()
    t = score_all(a.teacher, a.data, a.cache)
    rows = []
    print("| model | plain | pasted | gray | hair | acc lost, pasted / gray | F1 below teacher, plain / pasted |")
    print("|---|---|---|---|---|---|---|")
    for m in a.models:
        r = score_all(m, a.data, a.cache)
        lost = [100 * (r["plain"]["pixel_acc"] - r[v]["pixel_acc"]) for v in ("pasted", "gray")]
        gap = [100 * (t[v]["overall_f1"] - r[v]["overall_f1"]) for v in ("plain", "pasted")]
        cells = " | ".join(f"{100 * r[v]['pixel_acc']:.2f}% / {r[v]['overall_f1']:.4f}" for v in VARIANTS)
        print(f"| {m} | {cells} | {lost[0]:.2f} / {lost[1]:.2f} | {gap[0]:.2f} / {gap[1]:.2f} |")
        rows.append((m, lost[1], max(gap)))
    if a.out:
        draw(rows, a.out, a.teacher)


def draw(rows, out, teacher):
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    ax.axhline(F1_TARGET, color="#2e7d32", lw=1, ls="--")
    ax.axvline(GRAY_TARGET, color="#2e7d32", lw=1, ls="--")
    for name, gray, gap in rows:
        ax.scatter(gray, gap, s=30, zorder=3)
        ax.annotate(Path(name).stem if name.endswith(".pt") else Path(name).name, (gray, gap), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    xs, ys = [r[1] for r in rows], [r[2] for r in rows]
    ax.set_xlim(min(xs + [GRAY_TARGET]) - 0.1, max(xs) + 0.1)
    ax.set_ylim(min(ys + [F1_TARGET]) - 0.1, max(ys) + 0.1)
    ax.fill_between([0, GRAY_TARGET], 0, F1_TARGET, color="#c8e6c9", zorder=0)
    ax.set_xlabel("grayscale: pixel accuracy lost against plain photos (points)")
    ax.set_ylabel(f"overall F1 below {teacher}, larger of plain / pasted (points)")
    ax.set_title("Default student candidates: both targets are the lower-left corner", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main()
