"""Score the stray-hair step of the face's colours (infer.face_colours.drop_stray_hair): each cache split
as `parse` answers (colours + landmark prior) without the step, then the change with it at each margin
(99: every hair blob apart from the face is dropped, the connection rule alone, without the colour test).

    python tools/stray_hair_check.py default data/t4/robust-plain.h5 data/t4/robust-pasted.h5 --margins 0,99
    python tools/stray_hair_check.py default data/robust-wide-train-t4.h5:train --margins -1,-0.5,0,0.5,1
"""
import argparse
import functools

import facepipe.infer.evaluate as evaluate_mod
import facepipe.infer.face_colours as face_colours
from facepipe.infer.model import LoadedModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("sets", nargs="+", help="CACHE[:SPLIT]")
    ap.add_argument("--margins", default="0", help="STRAY_MARGIN values to try, comma-separated")
    a = ap.parse_args()
    m = LoadedModel.load(a.model)
    shipped = face_colours.STRAY_MARGIN
    for spec in a.sets:
        path, _, split = spec.partition(":")
        score = functools.partial(evaluate_mod.evaluate_model, m, path, split=split or "test", face_colours=True,
                                  landmark_prior=True)
        evaluate_mod.FaceColours = functools.partial(face_colours.FaceColours, stray_hair=False)
        base = score()
        evaluate_mod.FaceColours = face_colours.FaceColours
        f1 = base["per_class_f1"]
        row = [f"{a.model} {spec}: {base['pixel_acc'] * 100:.3f}% / {base['overall_f1']:.4f}, background F1 "
               f"{f1['background']:.4f}, hair F1 {f1['hair']:.4f}"]
        for margin in (float(v) for v in a.margins.split(",")):
            face_colours.STRAY_MARGIN = margin
            r = score()
            g = r["per_class_f1"]
            row.append(f"margin {margin:g}: {(r['pixel_acc'] - base['pixel_acc']) * 100:+.3f} / "
                       f"{r['overall_f1'] - base['overall_f1']:+.4f}, background {g['background'] - f1['background']:+.4f}, "
                       f"hair {g['hair'] - f1['hair']:+.4f}")
        face_colours.STRAY_MARGIN = shipped
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
