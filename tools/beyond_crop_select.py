"""How `parse`'s second pass for hair beyond the crop was set: zoom and whether hair may be added above
the crop, scored on caches whose photos reach beyond the crops.

    python tools/beyond_crop_select.py default data/robust-wide-train-t4.h5:train \
        data/t4/robust-wide.h5:test --json runs/beyond/select.json
    python tools/beyond_crop_select.py runs/turn/s24-pt4 data/fasseg-persons-hc-t4.h5:test

Prints one markdown row per cache and setting (crop only, then each zoom with and without hair above the
crop): pixel accuracy, hair and background F1 in photo coordinates, and the change in pixel accuracy
against the crop alone. The setting is chosen on a selection cache (FASSEG train photos pasted with
--margin), never on the test caches it is then reported on.
"""
import argparse
import json

from facepipe.infer.evaluate import evaluate_model
from facepipe.infer.model import LoadedModel

SETTINGS = [("crop only", None, False), ("zoom 1.5", 1.5, False), ("zoom 1.5, above too", 1.5, True),
            ("zoom 2.0", 2.0, False), ("zoom 2.0, above too", 2.0, True)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("caches", nargs="+", help="CACHE:SPLIT")
    ap.add_argument("--json")
    a = ap.parse_args()
    m = LoadedModel.load(a.model)
    rows = []
    print("| cache | faces | setting | pixel acc | change | hair F1 | background F1 |")
    print("|---|---|---|---|---|---|---|")
    for spec in a.caches:
        cache, split = spec.rsplit(":", 1)
        base = None
        for name, zoom, above in SETTINGS:
            kw = {"beyond_crop": zoom is not None, "beyond_above": above}
            if zoom is not None:
                kw["beyond_zoom"] = zoom
            r = evaluate_model(m, cache, split=split, **kw)
            acc = 100 * r["pixel_acc"]
            base = acc if base is None else base
            f1 = r["per_class_f1"]
            rows.append({"cache": cache, "split": split, "setting": name, "faces": r["faces"], "pixel_acc": acc,
                         "hair_f1": f1["hair"], "background_f1": f1["background"]})
            print(f"| {cache}:{split} | {r['faces']} | {name} | {acc:.2f}% | {acc - base:+.3f} | {f1['hair']:.4f} "
                  f"| {f1['background']:.4f} |", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
