"""Faces on their side: FASSEG V2 test turned by 90 and 270 degrees (np.rot90, no EXIF tag; --turns 2: upside down), parsed with
`--detector hog+cnn` (or --detector), labels turned back and scored against the upright labels; `--no-turn` parses as
before faces were turned upright for their landmarks (docs/results.md, "Faces on their side").

    python tools/turned_photos_check.py data/fasseg /tmp/turned            # k = 0, 1, 3
    python tools/turned_photos_check.py data/fasseg /tmp/turned --no-turn
    python tools/turned_photos_check.py data/fasseg /tmp/turned --detector hog    # parse's default
    python tools/turned_photos_check.py data/fasseg /tmp/turned --turns 2         # upside down
"""
import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

import facepipe.data.face_detector as face_detector
from facepipe.util.metrics import confusion, scores
from facepipe.util.schema import FASSEG


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fasseg", help="an imported FASSEG folder (facepipe import fasseg)")
    ap.add_argument("work", help="folder for the turned photos and the parses")
    ap.add_argument("--no-turn", action="store_true")
    ap.add_argument("--detector", default="hog+cnn", choices=("hog", "hog+cnn", "cnn"))
    ap.add_argument("--turns", default="0,1,3", help="quarter turns to try, e.g. 2 for upside down")
    a = ap.parse_args()
    if a.no_turn:
        face_detector.FaceDetector._turned_landmarks = lambda self, rgb, box: None
    from facepipe.cli import cli

    images, labels, work = Path(a.fasseg) / "images", Path(a.fasseg) / "labels", Path(a.work)
    tag = ("noturn" if a.no_turn else "turn") + "-" + a.detector
    for k in (int(v) for v in a.turns.split(",")):
        src, out = work / f"photos-{k}", work / f"parsed-{k}-{tag}"
        src.mkdir(parents=True, exist_ok=True)
        for f in sorted(images.glob("v2_test_*.png")):
            if not (src / f.name).exists():
                Image.fromarray(np.ascontiguousarray(np.rot90(np.asarray(Image.open(f).convert("RGB")), k))).save(src / f.name)
        cli.main(["parse", str(src), "--out", str(out), "--detector", a.detector, "-q", "--workers", "1", "--force"],
                 standalone_mode=False)
        cm, faces, turned = np.zeros((6, 6), np.int64), 0, 0
        for f in sorted(labels.glob("v2_test_*.png")):
            gt = np.asarray(Image.open(f))
            pred = np.zeros_like(gt)
            if (out / f.name.replace(".png", ".labels.png")).exists():
                pred = np.rot90(np.asarray(Image.open(out / f.name.replace(".png", ".labels.png"))), -k)
                rec = json.loads((out / f.name.replace(".png", ".json")).read_text())
                faces += len(rec["faces"])
                turned += sum("roll" in x for x in rec["faces"])
            cm += confusion(pred, gt, 6)
        s = scores(cm, FASSEG)
        print(f"turned {90 * k} ({tag}): faces {faces}, turned upright {turned}, pixel accuracy "
              f"{s['pixel_acc'] * 100:.2f}%, overall F1 {s['overall_f1']:.4f}", flush=True)


if __name__ == "__main__":
    main()
