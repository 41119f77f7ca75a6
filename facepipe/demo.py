"""`facepipe demo`: every stage once, end to end, on data that ships with the install (nothing downloaded).

Two parts, kept apart on purpose:

1. A smoke run on cartoons. Labelled and unlabelled faces are drawn by facepipe.data.synthetic (they carry
   their own landmarks, since dlib finds almost none of them); import -> align -> cache -> train a small
   teacher (270 steps at 64 px) -> pseudo-label the unlabelled cartoons -> distil a student (72 steps)
   -> eval -> bench -> export to ONNX. Its scores are real but say only that the chain runs: a minute
   of training on a few dozen cartoons makes no usable parser.
2. A real photo, scikit-image's astronaut: dlib landmarks with a minimum detector score (a mission patch
   on the spacesuit scores 0.12, the face 1.16), alignment of the face found, and a parse with the
   bundled model (facepipe/assets/default.pt, trained on FASSEG). Its overlay is the demo's picture.

scikit-image's sample photos are kept for measuring, so the astronaut never enters training: it is
detected, aligned and parsed, never pseudo-labelled. Each step is the stage function the CLI runs,
writing the folders a real run writes; a rerun skips what is finished (the stages resume).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from skimage import data as skimage_data  # ships the astronaut photo: no download

from facepipe.data.align import AlignConfig, run_align
from facepipe.data.cache import CacheConfig, run_cache
from facepipe.data.face_cache import read_cache_manifest
from facepipe.data.importers import import_dataset
from facepipe.data.landmarks import LandmarksConfig, run_landmarks
from facepipe.data.pseudo_file import default_output
from facepipe.data.synthetic import write_folder_set
from facepipe.infer.bench import BenchConfig, bench_speed, run_entry
from facepipe.infer.evaluate import best_worst_sheet, evaluate_model
from facepipe.infer.export import export_run
from facepipe.infer.model import LoadedModel
from facepipe.infer.parse import Parser, parse_photos
from facepipe.learn.distill import DistillConfig, distill
from facepipe.learn.pseudolabel import PseudoConfig, run_pseudolabel
from facepipe.learn.train import TrainConfig, train
from facepipe.util.atomic import save_image, write_json
from facepipe.util.device import set_threads
from facepipe.util.errors import FacepipeError, OtherConfig
from facepipe.util.progress import SILENT, Reporter

# One torch thread for the whole demo: its models are tiny (64 px, batches of 4), and where other
# programs share the cores, two torch threads wait on each other. On 2 shared cores (load 4-5) a
# teacher-small step took 0.34 s with 2 threads and 0.05 s with 1; the whole demo 347 s and 77 s.
THREADS = 1
# Drawn cartoons on flat colours in a minute of training: the basic recipe (flips, small jitter). The
# wild one (real backdrops, recoloured hair, grayscale) is for photos and needs more steps than a smoke run.
SMOKE_AUGMENT = "basic"

# dlib HOG scores of the astronaut: face 1.16, mission patch 0.12. parse's --min-score default (0.2)
# is the same cut, so the landmarks step and the parse agree on what is a face.
MIN_SCORE = 0.2


@dataclass(frozen=True)
class DemoConfig:
    out: str = "runs/demo"
    faces: int = 48  # labelled cartoons (a quarter are the test split)
    unlabelled: int = 24  # unlabelled cartoons for pseudolabel -> distill
    size: int = 64  # aligned crop side of the smoke run (the bundled model parses at its own 256)
    # 270 steps of 4 faces: about where teacher-small starts to find eyes and nose on the cartoons
    # (20 epochs: none yet, F1 0.00; 30: eyes 0.87, nose 0.84, mouth 0.00; sc and ce alike at lr 5e-3).
    teacher_epochs: int = 30
    # The student at 64 px finds no small part in 20 or 30 epochs either; 8 epochs show the stage runs.
    student_epochs: int = 8
    batch_size: int = 4  # 36 training cartoons: 9 steps an epoch rather than 4
    min_score: float = MIN_SCORE
    bench: bool = True
    export: bool = True


@dataclass
class _Steps:
    """The demo's record: one row (stage, seconds, what it did) per step run."""
    reporter: Reporter
    rows: list = field(default_factory=list)

    def run(self, name: str, done, fn, what):
        """Run one stage; `done()` says before the call whether an earlier run finished it."""
        before = done()
        self.reporter.log(f"[bold]{name}[/]" + (" (done before)" if before else ""))
        t0 = time.time()
        m = fn()
        self.rows.append((name, round(time.time() - t0, 1), what(m) + (" (done before)" if before else "")))
        return m


def _has_manifest(folder):
    return lambda: (Path(folder) / "manifest.json").exists()


def _has_cache(path):
    def done():
        try:
            read_cache_manifest(path)
            return True
        except Exception:  # absent or unfinished: the stage will say which, if it fails
            return False
    return done


def run_demo(cfg: DemoConfig, reporter: Reporter = SILENT) -> dict:
    """Run the demo into cfg.out. Returns {"rows": [(stage, seconds, result)], "overlay", "seconds"}.

    A stage that an earlier run finished is not redone: its row says "(done before)". The seconds count
    from this call: the library imports (torch's alone takes seconds) happened when this module loaded."""
    t_start = time.time()
    set_threads(THREADS)
    out = Path(cfg.out)
    steps = _Steps(reporter)
    try:
        # part 1: the smoke run on cartoons
        lab, unl = _cartoon_data(cfg, out, steps)
        teacher, student = _cartoon_models(cfg, out, lab, unl, steps)
        _cartoon_checks(cfg, out, lab, teacher, student, steps)
        # part 2: a real photo, the bundled model
        overlay, summary = _photo(cfg, out, steps)
    except OtherConfig as e:  # the stage's own advice (--force) is not an option of the demo
        raise FacepipeError(f"{out} holds a demo made with other options or another facepipe version "
                            f"({str(e).split(';')[0]}); remove it or run the demo into another folder.") from None
    result = {"rows": steps.rows, "overlay": str(overlay) if overlay.exists() else None,
              "seconds": round(time.time() - t_start, 1), "faces_parsed": summary.get("faces"),
              "config": asdict(cfg)}
    write_json(out / "demo.json", result)  # last: the record of the latest run
    return result


def _cartoon_data(cfg: DemoConfig, out: Path, steps: _Steps) -> tuple[Path, Path]:
    """Draw labelled and unlabelled cartoons, import, align and cache them; returns the two imports."""
    sets = {"labelled": (out / "raw-cartoons", cfg.faces, 0, True),
            "unlabelled": (out / "raw-cartoons-unlabelled", cfg.unlabelled, 1, False)}
    steps.run("draw cartoons", lambda: all((raw / "splits.json").exists() for raw, *_ in sets.values()),
              lambda: [write_folder_set(raw, n=n, seed=seed, labelled=labelled)
                       for raw, n, seed, labelled in sets.values() if not (raw / "splits.json").exists()],
              lambda _: f"{cfg.faces} labelled, {cfg.unlabelled} unlabelled (facepipe/data/synthetic.py)")
    lab, unl = out / "cartoons", out / "cartoons-unlabelled"
    rep = steps.reporter
    steps.run("import", _has_manifest(unl),
              lambda: [import_dataset("folder", r, d, reporter=rep) for (r, *_), d in zip(sets.values(), (lab, unl))],
              lambda ms: f"{ms[0]['counts']['images']} labelled + {ms[1]['counts']['images']} unlabelled cartoons")
    steps.run("align", _has_manifest(f"{unl}-aligned"),
              lambda: [run_align(AlignConfig(src=str(d), out=f"{d}-aligned", size=cfg.size, landmarks="dataset"),
                                 rep) for d in (lab, unl)],
              lambda ms: f"{sum(m['counts']['faces'] for m in ms)} crops at {cfg.size} px (drawn landmarks)")
    steps.run("cache", _has_cache(f"{unl}.h5"),
              lambda: [run_cache(CacheConfig(src=f"{d}-aligned", out=f"{d}.h5"), rep) for d in (lab, unl)],
              lambda ms: f"{lab.name}.h5 ({ms[0]['counts']['faces']}), {unl.name}.h5 ({ms[1]['counts']['faces']})")
    return lab, unl


def _cartoon_models(cfg: DemoConfig, out: Path, lab: Path, unl: Path, steps: _Steps) -> tuple[Path, Path]:
    """Train the small teacher, pseudo-label the unlabelled cartoons, distil the student."""
    # Named for what they are; distinct from an older demo's folders, which hold other configs.
    teacher, student = out / "cartoon-teacher", out / "cartoon-student"
    rep = steps.reporter
    steps.run("train teacher", _has_manifest(teacher),
              lambda: train(TrainConfig(cache=f"{lab}.h5", out=str(teacher), arch="teacher-small",
                                        epochs=cfg.teacher_epochs, batch_size=cfg.batch_size, lr=5e-3,
                                        val_split="test", val_every=cfg.teacher_epochs,
                                        loss_warmup=4 * cfg.teacher_epochs, augment=SMOKE_AUGMENT,
                                        threads=THREADS), rep),
              _trained)
    pseudo = default_output(teacher)
    steps.run("pseudolabel", lambda: pseudo.exists(),
              lambda: run_pseudolabel(PseudoConfig(teacher=str(teacher), src=f"{unl}.h5", out=str(pseudo),
                                                   threads=THREADS), rep),
              lambda m: f"{m['counts']['faces']} unlabelled cartoons, mean confidence "
                        f"{m['counts']['mean_confidence']:.2f}")
    steps.run("distill student", _has_manifest(student),
              lambda: distill(DistillConfig(teacher=str(teacher), out=str(student), unlabeled=str(pseudo),
                                            epochs=cfg.student_epochs, batch_size=cfg.batch_size,
                                            unlabeled_batch=cfg.batch_size, val_split="test",
                                            val_every=cfg.student_epochs, augment=SMOKE_AUGMENT, threads=THREADS),
                              rep),
              _trained)
    return teacher, student


def _cartoon_checks(cfg: DemoConfig, out: Path, lab: Path, teacher: Path, student: Path, steps: _Steps) -> None:
    """Score both runs, time them (cfg.bench), export the student to ONNX (cfg.export)."""
    steps.run("eval", lambda: all((r / "eval-test.png").exists() for r in (teacher, student)),
              lambda: [_eval(r, f"{lab}.h5") for r in (teacher, student)],
              lambda rs: "F1 " + "; ".join(f"{n}: {_per_class(r)}" for n, r in zip(("teacher", "student"), rs)) +
              " (test cartoons; worst/best faces: cartoon-*/eval-test.png)")
    if cfg.bench:
        steps.run("bench", lambda: (out / "bench.json").exists(), lambda: _bench(out, teacher, student, cfg.size),
                  lambda rs: ", ".join(f"{r['model'].split(' ')[0]} {r['fps']:.0f}" for r in rs) +
                  f" FPS at {cfg.size} px, batch 1, {THREADS} thread")
    if cfg.export:
        steps.run("export", lambda: (out / "cartoon-student.onnx.json").exists(),
                  lambda: _export(student, out / "cartoon-student.onnx"),
                  lambda r: f"cartoon-student.onnx, max |onnx - torch| {r['max_abs_diff']:.1e}")


def _photo(cfg: DemoConfig, out: Path, steps: _Steps) -> tuple[Path, dict]:
    """The astronaut: dlib landmarks, alignment, and a parse with the bundled model; returns the overlay's
    path and the parse summary."""
    photos = out / "photos"
    if not (photos / "astronaut.png").exists():
        save_image(photos / "astronaut.png", skimage_data.astronaut())
    lm_out = out / "photo-landmarks"
    rep = steps.reporter
    steps.run("landmarks", _has_manifest(lm_out),
              lambda: run_landmarks(LandmarksConfig(src=str(photos), out=str(lm_out), threshold=cfg.min_score), rep),
              lambda m: _faces_found(lm_out, m, cfg.min_score))
    steps.run("align photo", _has_manifest(out / "photo-aligned"),
              lambda: run_align(AlignConfig(src=str(photos), out=str(out / "photo-aligned"), landmarks=str(lm_out)),
                                rep),
              lambda m: f"{m['counts']['faces']} crop(s) from dlib's landmarks")
    parsed = out / "photo-parsed"
    overlay = parsed / "astronaut.overlay.png"  # parse_photos names outputs by the photo's stem
    summary = steps.run("parse photo", lambda: (parsed / "summary.json").exists(),
                        lambda: _parse(photos / "astronaut.png", parsed, cfg.min_score, rep),
                        lambda s: f"bundled model: {s.get('faces', '?')} face(s) -> {overlay}")
    return overlay, summary


def _parse(photo: Path, out: Path, min_score: float, reporter) -> dict:
    """`facepipe parse PHOTO --out OUT --min-score S` with the bundled model (no --model)."""
    if (out / "summary.json").exists():  # parse_photos writes it last
        return json.loads((out / "summary.json").read_text())
    return parse_photos(Parser.load(None), [photo], out, 16, reporter, min_score=min_score)


def _faces_found(folder: Path, manifest: dict, min_score: float) -> str:
    scores = []
    for f in sorted((folder / "faces").glob("*.json")):
        scores += [x["score"] for x in json.loads(f.read_text())["faces"]]
    s = ", ".join(f"{x:.2f}" for x in scores)
    return (f"{manifest['counts']['faces']} face(s) in {manifest['counts']['photos']} photo(s)"
            f"{f' (score {s})' if s else ''}, minimum score {min_score}")


def _eval(run: Path, cache: str) -> dict:
    """`facepipe eval RUN CACHE` with its worst/best sheet, on the cartoon test split."""
    if (run / "eval-test.png").exists():
        return json.loads((run / "eval-test.json").read_text())
    m = LoadedModel.load(str(run))
    r = evaluate_model(m, cache, split="test", keep_images=True)
    keep = {k: r[k] for k in ("per_class_f1", "overall_f1", "pixel_acc", "mean_f1", "coords", "faces")}
    write_json(run / "eval-test.json", keep)
    save_image(run / "eval-test.png", best_worst_sheet(r, cache, r["_schema"]))  # last: the sign it is done
    return keep


def _bench(out: Path, teacher: Path, student: Path, size: int) -> list[dict]:
    f = out / "bench.json"
    if f.exists():
        return json.loads(f.read_text())["rows"]
    # The two trained runs only, in a short window: the step shows the command at work. The speed
    # claims (against bisenet-r18, at 256 px) come from `facepipe bench --fps`.
    rows = bench_speed([run_entry(str(teacher)), run_entry(str(student))],
                       BenchConfig(sizes=(size,), batches=(1,), threads=THREADS, seconds=0.3, warmup=2,
                                   min_iters=5))
    write_json(f, {"rows": rows})
    return rows


def _export(run: Path, onnx: Path) -> dict:
    record = onnx.parent / f"{onnx.name}.json"
    if record.exists():  # written after the checked export
        return json.loads(record.read_text())
    r = export_run(str(run), onnx)
    write_json(record, r)
    return r


def _trained(m: dict) -> str:
    c, e = m["counts"], m.get("eval") or {}
    score = f": test F1 {e['overall_f1']:.2f} (eyes+nose+mouth), pixel acc {e['pixel_acc']:.2f}" if e else ""
    return f"{c['epochs']} epochs, {c['steps']} steps{score}"


def _per_class(r: dict) -> str:
    f1 = r["per_class_f1"]
    return " ".join(f"{k} {f1[k]:.2f}" for k in f1 if k != "background")
