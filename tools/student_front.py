"""Students of several widths against their teacher and bisenet-r18: overall F1 against FPS, one figure.

    python tools/student_front.py --bench runs/front/bench.json --out docs/figures/student-front.png \
        runs/front/eval/*-test.json

The FPS of every model comes from `facepipe bench --fps ... --json` runs of the same models (so the
ratios are of one machine); with several --bench files, each model's FPS and ratio are the medians over
them, and the table gives the ratio's range (a small network's FPS moves 20-30% between processes on a
2-core VM, bisenet-r18's about 10%); the F1 of each from `facepipe eval RUN CACHE --json` files named
<model>-<set>.json, <model> being the bench row's model name without its " (arch)" (a run folder's name, or `accurate`).
Plain (V2 test) and pasted points are drawn for each model that has both files; the table printed is
the one in docs/results.md. --earlier NAME=F1_TEST,F1_PASTED draws a bench row whose model was scored in
another session (its eval files are gone): hollow markers, "(F1 earlier)" in its label and table row.
"""
import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on the machines this runs on
import matplotlib.pyplot as plt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("evals", nargs="+", help="eval JSON files named <model>-<set>.json")
    ap.add_argument("--bench", required=True, action="append",
                    help="`facepipe bench --fps --json` output (repeatable: medians over the runs)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--earlier", action="append", default=[], metavar="NAME=F1_TEST,F1_PASTED",
                    help="a bench row scored in an earlier session, e.g. bisenet-r18=0.855,0.852")
    a = ap.parse_args()
    fps = median_rows(a.bench)
    scores = {}
    for f in a.evals:
        name, _, which = Path(f).stem.rpartition("-")
        scores.setdefault(name, {})[which] = json.loads(Path(f).read_text())
    earlier = set()
    for e in a.earlier:
        name, _, f1s = e.partition("=")
        try:
            test, pasted = (float(v) for v in f1s.split(","))
        except ValueError:
            raise SystemExit(f"--earlier {e!r}: expected NAME=F1_TEST,F1_PASTED") from None
        scores[name] = {"test": {"overall_f1": test}, "pasted": {"overall_f1": pasted}}
        earlier.add(name)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    print("| model | params | FPS | x bisenet-r18 | V2 test acc / F1 | pasted acc / F1 |")
    print("|---|---|---|---|---|---|")
    # neighbours in FPS get their labels above and below in turn, so that close points stay readable
    for i, (name, s) in enumerate(sorted(scores.items(), key=lambda kv: -fps.get(kv[0], {}).get("fps", 0))):
        r = fps.get(name)
        if r is None:
            raise SystemExit(f"{name}: no row in {a.bench} (bench rows: {', '.join(fps)})")
        for which, marker in (("test", "o"), ("pasted", "^")):
            if which in s:
                c = _colour(name, str(r["model"]))
                ax.scatter(r["fps"], s[which]["overall_f1"], marker=marker,
                           **({"facecolors": "none", "edgecolors": c} if name in earlier else {"color": c}))
        if "test" in s:
            ax.annotate(name + (" (F1 earlier)" if name in earlier else ""), (r["fps"], s["test"]["overall_f1"]), textcoords="offset points", xytext=(4, -12 if i % 2 else 4),
                        fontsize=8)
        cells = [("" if "pixel_acc" not in s[w] else f"{100 * s[w]['pixel_acc']:.2f}% / ")
                 + f"{s[w]['overall_f1']:.3f}" if w in s else "-" for w in ("test", "pasted")]
        if name in earlier:
            cells[0] += " (earlier session)"
        print(f"| {name} | {r.get('params', '?')} | {r['fps']:.1f} | {r['ratio_to_baseline']:.1f}{r['range']} | "
              f"{cells[0]} | {cells[1]} |")
    ax.set_xscale("log")
    ax.set_xlabel("FPS, 256x256, batch 1, 2 CPU threads (log; median of the bench runs)")
    ax.set_ylabel("overall F1 (eyes, nose, mouth)")
    ax.set_title("circles: FASSEG V2 test; triangles: the same faces pasted on real photos", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(f"-> {a.out}")


def median_rows(paths) -> dict:
    """Model name -> its bench row, fps and ratio_to_baseline the medians over the runs in `paths`, and
    `range` the ratio's ' (lo-hi)' when there is more than one run."""
    runs = {}
    for path in paths:
        rows = json.loads(Path(path).read_text())
        for r in rows["rows"] if isinstance(rows, dict) else rows:
            # bench names a run "NAME (ARCH)"; the untrained baseline row has no F1 unless --earlier gives one
            runs.setdefault(Path(str(r["model"]).split(" (")[0]).name, []).append(r)
    out = {}
    for name, rs in runs.items():
        ratios = [r.get("ratio_to_baseline") or float("nan") for r in rs]
        out[name] = dict(rs[0], fps=statistics.median(r["fps"] for r in rs), ratio_to_baseline=statistics.median(ratios),
                         range=f" ({min(ratios):.1f}-{max(ratios):.1f})" if len(rs) > 1 else "")
    return out


def _colour(name: str, row_model: str) -> str:
    """Red for bisenet-r18, blue for teachers, green for students; a run's arch from its bench row "NAME (ARCH)"."""
    if "bisenet" in row_model:
        return "tab:red"
    return "tab:blue" if name == "accurate" or "teacher" in row_model else "tab:green"


if __name__ == "__main__":
    main()
