"""The main job end to end on the embedded default data (nothing downloaded).

Labelled: procedurally drawn faces (facepipe.synthetic) carrying their own landmarks.
Unlabelled: scikit-image's astronaut photo (shipped inside scikit-image), for dlib detection.
Each step is the same stage function the CLI runs, writing the same folders, so the demo folder
shows the layout a real run produces. Later stages are added here as they land.
"""
from __future__ import annotations

from pathlib import Path

from facepipe.align import AlignConfig, run_align
from facepipe.atomic import save_image
from facepipe.cache import CacheConfig, run_cache
from facepipe.importers import import_dataset
from facepipe.landmarks import LandmarksConfig, run_landmarks
from facepipe.progress import SILENT, Reporter
from facepipe.synthetic import write_folder_set


def run_demo(out, n_faces: int = 48, size: int = 128, epochs: int = 80, reporter: Reporter = SILENT) -> list[tuple]:
    """Run every stage on the embedded data into `out`; returns (step, seconds, what) rows."""
    import time

    out = Path(out)
    rows = []

    def step(name, fn, what):
        t0 = time.time()
        m = fn()
        rows.append((name, round(time.time() - t0, 2), what(m)))
        reporter.log(f"[green]done[/] {name}")
        return m

    raw = out / "raw-synthetic"
    if not (raw / "splits.json").exists():
        write_folder_set(raw, n=n_faces, seed=0)
    step("import", lambda: import_dataset("folder", raw, out / "synthetic", reporter=reporter),
         lambda m: f"{m['counts']['images']} faces")
    step("align", lambda: run_align(AlignConfig(src=str(out / "synthetic"), out=str(out / "synthetic-aligned"),
                                                size=size, landmarks="dataset"), reporter),
         lambda m: f"{m['counts']['faces']} crops at {size}px")
    step("cache", lambda: run_cache(CacheConfig(src=str(out / "synthetic-aligned"),
                                                out=str(out / "synthetic.h5")), reporter),
         lambda m: f"{m['counts']['faces']} faces -> synthetic.h5")

    photos = out / "photos"
    if not (photos / "astronaut.png").exists():
        from skimage import data

        save_image(photos / "astronaut.png", data.astronaut())
    step("landmarks", lambda: run_landmarks(LandmarksConfig(src=str(photos), out=str(out / "photos-lm")), reporter),
         lambda m: f"{m['counts']['faces']} face(s) in {m['counts']['photos']} photo(s)")
    step("align photos", lambda: run_align(AlignConfig(src=str(photos), out=str(out / "photos-aligned"), size=size,
                                                       landmarks=str(out / "photos-lm")), reporter),
         lambda m: f"{m['counts']['faces']} crops")
    step("cache photos", lambda: run_cache(CacheConfig(src=str(out / "photos-aligned"),
                                                       out=str(out / "photos.h5")), reporter),
         lambda m: f"{m['counts']['faces']} faces -> photos.h5")

    # Teacher -> pseudo-labels -> student, small and short: the demo proves the chain, not accuracy.
    from facepipe.distill import DistillConfig, distill
    from facepipe.pseudolabel import PseudoConfig, default_output, run_pseudolabel
    from facepipe.train import TrainConfig, train

    teacher = out / "teacher"
    step("train teacher", lambda: train(TrainConfig(cache=str(out / "synthetic.h5"), out=str(teacher),
                                                   arch="teacher-small", epochs=epochs, val_split="test",
                                                   loss_warmup=20), reporter),
         lambda m: _f1(m))
    step("pseudolabel", lambda: run_pseudolabel(PseudoConfig(teacher=str(teacher), src=str(out / "photos.h5"),
                                                             out=str(default_output(teacher))), reporter),
         lambda m: f"{m['counts']['faces']} faces, mean confidence {m['counts']['mean_confidence']:.2f}")
    step("distill student", lambda: distill(DistillConfig(teacher=str(teacher), out=str(out / "student"),
                                                         arch="student", epochs=epochs, val_split="test"), reporter),
         lambda m: _f1(m))
    from facepipe.parse import Parser, parse_photos

    step("parse photo", lambda: parse_photos(Parser.load(str(out / "student"), "cpu"), [photos / "astronaut.png"],
                                             out / "parsed", reporter=reporter),
         lambda m: f"{m['faces']} face(s) -> parsed/astronaut.overlay.png")
    return rows


def _f1(m) -> str:
    e = m.get("eval") or {}
    if not e:
        return "trained"
    return f"test overall F1 {e['overall_f1']:.3f}, pixel acc {e['pixel_acc']:.3f} (cartoons)"
