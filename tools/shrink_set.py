"""An imported set with every photo shrunk F times: small faces with their labels (docs/results.md,
"Where hair beyond the crop goes wrong"). Images are box-filtered, label maps taken nearest; the rest
of the layout is copied, heights and widths updated. Landmark files are not rescaled: run `facepipe
landmarks` on the result.

    python tools/shrink_set.py data/robust-wide data/robust-wide-x8 8
"""
import argparse
import json
import shutil
from pathlib import Path

from PIL import Image


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path, help="an imported set (facepipe import or paste)")
    ap.add_argument("dst", type=Path, help="a new folder")
    ap.add_argument("factor", type=int, help="shrink factor, 2 or more")
    a = ap.parse_args()
    if a.factor < 2 or a.dst.exists() or not (a.src / "items.jsonl").exists():
        raise SystemExit("need an imported set, a folder that does not exist yet and a factor of 2 or more")
    shutil.copytree(a.src, a.dst, ignore=shutil.ignore_patterns("landmarks"))
    items = []
    for line in (a.src / "items.jsonl").read_text().splitlines():
        r = json.loads(line)
        r.pop("landmarks", None)
        im, lab = Image.open(a.src / r["image"]), Image.open(a.src / r["label"])
        w, h = im.size[0] // a.factor, im.size[1] // a.factor
        im.convert("RGB").resize((w, h), Image.BOX).save(a.dst / r["image"])
        lab.resize((w, h), Image.NEAREST).save(a.dst / r["label"])
        r["height"], r["width"] = h, w
        items.append(r)
        (a.dst / "records" / f"{r['id']}.json").write_text(json.dumps(r, indent=2))
    (a.dst / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    # The manifest last, as stages write theirs, saying what was done to the copy
    m = json.loads((a.src / "manifest.json").read_text())
    m["config"] = {**m.get("config", {}), "shrink": a.factor, "shrunk_from": str(a.src)}
    (a.dst / "manifest.json").write_text(json.dumps(m, indent=2))


if __name__ == "__main__":
    main()
