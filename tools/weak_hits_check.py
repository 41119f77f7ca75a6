"""HOG's weak hits on a set of photos and what dlib's CNN says of each (FaceDetector.kept, parse's
--confirm-below): per folder, the photos, HOG's hits at parse's --min-score, the weak ones, how many the
CNN confirms, the seconds per look, and each dropped hit (photo, score, box) to look at. Sets no constant;
it measured the rule (docs/results.md, "HOG's weak hits confirmed by the CNN").

    python tools/weak_hits_check.py ../shared/data/unlabeled/utkface-5k --limit 1500
    python tools/weak_hits_check.py /usr/share/backgrounds /usr/share/wallpapers    # faceless photos
"""
import argparse
import inspect
import time

from facepipe.data.face_detector import CONFIRM_BELOW, PARSE_DETECTOR, detector
from facepipe.infer.parse import collect_photos, parse_photos
from facepipe.util.errors import FacepipeError
from facepipe.util.images import load_rgb

MIN_SCORE = inspect.signature(parse_photos).parameters["min_score"].default  # parse's --min-score


def main(folders, limit):
    det = detector(PARSE_DETECTOR)
    for folder in folders:
        photos = sorted(collect_photos([folder]))[:limit]
        hits = weak = kept = 0
        dropped, look = [], 0.0
        for p in photos:
            rgb = load_rgb(p)
            for face in (f for f in det(rgb) if f["score"] >= MIN_SCORE):
                hits += 1
                if face["score"] >= CONFIRM_BELOW:
                    continue
                weak += 1
                t0 = time.perf_counter()
                ok = det.kept(rgb, face)
                look += time.perf_counter() - t0
                kept += ok
                if not ok:
                    dropped.append((str(p), face["score"], face["box"]))
        print(f"{folder}: {len(photos)} photos, {hits} hits, {weak} under {CONFIRM_BELOW}, {kept} confirmed by the "
              f"CNN, {look / max(weak, 1):.2f} s a look")
        for d in dropped:
            print("  dropped:", *d)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--limit", type=int, default=None, help="the first N photos of each folder (sorted)")
    a = ap.parse_args()
    try:
        main(a.folders, a.limit)
    except FacepipeError as e:
        raise SystemExit(f"error: {e}") from None
