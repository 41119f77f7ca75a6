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


def run_demo(out, n_faces: int = 48, size: int = 128, reporter: Reporter = SILENT) -> list[tuple]:
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
    return rows
