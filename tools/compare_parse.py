"""Side by side: `facepipe parse` of two checkouts on the same photos, on this machine, in one run.

    git worktree add /tmp/facepipe-base <old-rev>
    python tools/compare_parse.py --base /tmp/facepipe-base --shared ../shared --out runs/parse-compare \
        --model facepipe/assets/default.pt

Four photo sets: the example photos (face-recognition + dlib-faces in shared/data/unlabeled), the
first N utkface-5k crops, and two 6000x4000 photos made here with Pillow (LANCZOS, JPEG quality 92):
examples_two_people.jpg upscaled (two faces), and the middle 3:2 of
examples_knn_examples_train_biden_biden2.jpg upscaled (one face filling the photo). Each set is parsed by each checkout as a fresh process (`python -m facepipe
parse ... -q`, the checkout first on PYTHONPATH), alternately, --repeats times; wall time is the median.
Peak memory is the largest sum of RSS over the process tree (main + workers), sampled every 20 ms.
Then the outputs are compared photo by photo: faces found and label-map pixels that differ.
Run it alone on the cores: other work skews the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (from /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            pass
    return total


def run_parse(checkout: Path, photos: list[str], out: Path, model: str | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    args = [sys.executable, "-m", "facepipe", "parse", *photos, "--out", str(out.resolve()), "-q"]
    if model:
        args += ["--model", str(Path(model).resolve())]
    t0 = time.perf_counter()
    # cwd = the checkout: `python -m` puts the working directory ahead of PYTHONPATH.
    p = subprocess.Popen(args, env=env, cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while p.poll() is None:
        peak = max(peak, tree_rss(p.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    if p.returncode not in (0, 1):
        raise SystemExit(f"{checkout}: parse failed ({p.returncode}): {err[-2000:]}")
    return {"wall_s": wall, "peak_rss_mb": peak / 2**20}


def compare_outputs(a: Path, b: Path) -> dict:
    """Faces found per photo and label pixels that differ, over the photos both parsed."""
    recs = {}
    for side in (a, b):
        for j in side.glob("*.json"):
            if j.name in ("summary.json", "manifest.json"):
                continue
            r = json.loads(j.read_text())
            recs.setdefault(r["photo"], {})[side] = (j.stem, len(r["faces"]))
    faces_a = sum(v[a][1] for v in recs.values() if a in v)
    faces_b = sum(v[b][1] for v in recs.values() if b in v)
    fewer = [k for k, v in recs.items() if a in v and (b not in v or v[b][1] < v[a][1])]
    px = diff = 0
    worst = (0.0, "")
    for photo, v in recs.items():
        if a in v and b in v and (a / f"{v[a][0]}.labels.png").exists():
            la = np.asarray(Image.open(a / f"{v[a][0]}.labels.png"))
            lb = np.asarray(Image.open(b / f"{v[b][0]}.labels.png"))
            d = int((la != lb).sum()) if la.shape == lb.shape else la.size
            px, diff = px + la.size, diff + d
            worst = max(worst, (d / la.size, Path(photo).name))
    return {"photos": len(recs), "faces_base": faces_a, "faces_new": faces_b, "photos_with_fewer_faces": fewer,
            "label_pixels_differing": diff, "label_pixels": px,
            "label_fraction_differing": diff / max(px, 1), "worst_photo": worst}


def photo_sets(shared: Path, tmp: Path, n_utk: int) -> dict[str, list[str]]:
    un = shared / "data" / "unlabeled"
    ex = sorted(str(p) for p in (un / "face-recognition").iterdir())
    ex += sorted(str(p) for p in (un / "dlib-faces").glob("*.jpg"))
    utk = sorted(str(p) for p in (un / "utkface-5k").glob("*.jpg"))[:n_utk]
    big = tmp / "two_people_6000x4000.jpg"
    if not big.exists():
        Image.open(un / "face-recognition" / "examples_two_people.jpg").convert("RGB").resize(
            (6000, 4000), Image.LANCZOS).save(big, quality=92)
    close = tmp / "biden_closeup_6000x4000.jpg"  # one face filling the photo: the warp back's worst case
    if not close.exists():
        im = Image.open(un / "face-recognition" / "examples_knn_examples_train_biden_biden2.jpg").convert("RGB")
        w, h = im.size
        top = (h - w * 2 // 3) // 2
        im.crop((0, top, w, top + w * 2 // 3)).resize((6000, 4000), Image.LANCZOS).save(close, quality=92)
    return {"examples": ex, f"utkface-{n_utk}": utk, "6000x4000": [str(big)], "6000x4000-closeup": [str(close)]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="checkout of the old version")
    ap.add_argument("--new", default=str(REPO), help="checkout of the new version (default: this one)")
    ap.add_argument("--shared", default=str(REPO.parent / "shared"))
    ap.add_argument("--out", default="runs/parse-compare")
    ap.add_argument("--utk", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--sets", default="", help="comma list of set names to run (default: all)")
    ap.add_argument("--model", help="the same model for both checkouts (default: each one's bundled default, "
                                    "which differs when the bundled model changed in between)")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sets = photo_sets(Path(a.shared).resolve(), out, a.utk)  # absolute: each parse runs in its checkout
    if a.sets:
        sets = {k: v for k, v in sets.items() if k in a.sets.split(",")}
    report = {"model": a.model or "each checkout's default", "cpu": _cpu(), "cores": len(os.sched_getaffinity(0)), "load_before": os.getloadavg(), "sets": {}}
    for name, photos in sets.items():
        runs = {"base": [], "new": []}
        for r in range(a.repeats):
            for side, co in (("base", a.base), ("new", a.new)):
                dest = out / f"{name}-{side}"
                subprocess.run(["rm", "-rf", str(dest)], check=True)
                runs[side].append(run_parse(Path(co), photos, dest, a.model))
        row = {side: {"wall_s": statistics.median(x["wall_s"] for x in v),
                      "peak_rss_mb": max(x["peak_rss_mb"] for x in v), "walls": [round(x["wall_s"], 2) for x in v]}
               for side, v in runs.items()}
        row["photos"] = len(photos)
        for side in ("base", "new"):
            row[side]["photos_per_s"] = len(photos) / row[side]["wall_s"]
        row["speedup"] = row["base"]["wall_s"] / row["new"]["wall_s"]
        row["memory_ratio"] = row["base"]["peak_rss_mb"] / row["new"]["peak_rss_mb"]
        row["outputs"] = compare_outputs(out / f"{name}-base", out / f"{name}-new")
        report["sets"][name] = row
        print(f"{name:>14}: {len(photos)} photos  base {row['base']['wall_s']:.2f} s  new {row['new']['wall_s']:.2f} s"
              f"  speed-up {row['speedup']:.2f}x  peak RSS {row['base']['peak_rss_mb']:.0f} -> "
              f"{row['new']['peak_rss_mb']:.0f} MB ({row['memory_ratio']:.2f}x)  faces "
              f"{row['outputs']['faces_base']} -> {row['outputs']['faces_new']}  label px differing "
              f"{100 * row['outputs']['label_fraction_differing']:.4f}%", flush=True)
    report["load_after"] = os.getloadavg()
    (out / "compare.json").write_text(json.dumps(report, indent=2))
    print(f"-> {out / 'compare.json'}")


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
