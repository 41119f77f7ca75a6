"""Every command once, on the command line, in the README's workflow order, each on what the one before
it wrote: import -> paste, backgrounds -> landmarks -> align -> cache -> show, check-landmarks -> train
-> eval -> pseudolabel -> distill -> bench -> export -> parse -> rnorm -> models -> demo. Each step's
exit code and output (with its manifest, where the command writes one) are checked; how well each stage
does its job is for its own test module. The data: conftest's drawn cartoons (synthetic_set), the
astronaut photo from scikit-image and two drawn photos without a face. `demo` is conftest's demo_run,
shared with tests/test_demo.py so that it runs once."""
import importlib.util
import json

import click
import numpy as np
import pytest
from click.testing import CliRunner

from facepipe.cli import cli
from facepipe.data.face_cache import read_cache_manifest
from facepipe.data.pseudo_file import read_pseudo_manifest
from facepipe.util.atomic import save_image

# Small and single-threaded: the whole chain (demo_run apart) takes ~15 s on 2 shared cores.
FAST = ["--device", "cpu", "--threads", "1", "-q"]


def manifest(folder, stage=None) -> dict:
    m = json.loads((folder / "manifest.json").read_text())
    assert stage is None or m["stage"] == stage, (folder, m.get("stage"))
    assert not (folder / ".inprogress.json").exists(), folder
    return m


def no_face_photo(path, seed, size=(260, 200)):
    """Smooth colour fields and a few boxes: a photo without a face (for `backgrounds`)."""
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([np.sin(6 * x + c) * np.cos(4 * y - c) for c in rng.uniform(0, 6, 3)], -1) * 100 + 128
    for _ in range(4):
        t, l = rng.integers(0, h - 40), rng.integers(0, w - 40)
        img[t:t + 40, l:l + 40] = rng.uniform(0, 255, 3)
    save_image(path, img.clip(0, 255).astype(np.uint8))


def imglab_xml(lm_dir, path):
    """dlib imglab XML ground truth from a `landmarks` output's own faces (check-landmarks then scores ~0)."""
    images = []
    for rec in sorted((lm_dir / "faces").glob("*.json")):
        boxes = []
        for f in json.loads(rec.read_text())["faces"]:
            l, t, r, b = f["box"]
            parts = "".join(f'<part name="{i:02d}" x="{x:.0f}" y="{y:.0f}"/>' for i, (x, y) in enumerate(f["lm68"]))
            boxes.append(f'<box top="{t:.0f}" left="{l:.0f}" width="{r - l:.0f}" height="{b - t:.0f}">{parts}</box>')
        images.append(f"<image file='{rec.stem}.png'>{''.join(boxes)}</image>")
    path.write_text(f"<dataset><images>{''.join(images)}</images></dataset>")
    return path


@pytest.mark.slow  # ~15 s of its own plus demo_run's 15-24 s, on 2 shared cores
def test_every_command_in_workflow_order(synthetic_set, demo_run, tmp_path):
    from skimage import data

    ran = []

    def facepipe(*args):
        r = CliRunner().invoke(cli, [str(a) for a in args])
        assert r.exit_code == 0, (args, r.output, r.exception)
        ran.append(args[0])
        return r

    w = tmp_path
    # data: import (folder format), the robustness set, photos without faces
    facepipe("import", "folder", synthetic_set, w / "imp", "--workers", "1", "-q")
    assert manifest(w / "imp", "import")["counts"]["images"] == 12
    for i in range(2):
        no_face_photo(w / "walls" / f"wall{i}.png", i)
    facepipe("paste", w / "imp", w / "walls", w / "pasted", "--workers", "1", "-q")
    assert manifest(w / "pasted", "paste")["counts"]["images"] == 3  # the test split
    facepipe("backgrounds", w / "walls", w / "bg", "-q")
    assert manifest(w / "bg", "backgrounds")["counts"]["photos"] == 2

    # landmarks -> align -> cache on the cartoons dlib finds (the rest are fitted whole into the crop)
    facepipe("landmarks", w / "imp", w / "lm", "--workers", "1", "-q")
    assert len(list((w / "lm" / "faces").glob("*.json"))) == manifest(w / "lm", "landmarks")["counts"]["photos"] == 12
    facepipe("align", w / "imp", w / "al", "--landmarks", w / "lm", "--size", "48", "--workers", "1", "-q")
    assert manifest(w / "al", "align")["counts"]["faces"] == 12
    facepipe("cache", w / "al", w / "c.h5", "-q")
    assert read_cache_manifest(w / "c.h5")["counts"]["faces"] == 12
    facepipe("show", w / "c.h5", "--out", w / "sheet.png", "-n", "4")
    assert (w / "sheet.png").stat().st_size > 0
    facepipe("check-landmarks", w / "lm", imglab_xml(w / "lm", w / "gt.xml"), "--json", w / "check.json")
    assert json.loads((w / "check.json").read_text())["images"] == 12

    # the accurate half, then the fast half
    t, s = w / "t", w / "s"
    facepipe("train", w / "c.h5", "--out", t, "--arch", "teacher-small", "--epochs", "1", "--loss", "ce",
             "--val-split", "none", "--backgrounds", w / "bg", *FAST)
    assert manifest(t, "train")["counts"]["epochs"] == 1 and (t / "checkpoints" / "best.pt").exists()
    facepipe("eval", t, w / "c.h5", "--json", w / "t-eval.json", "--device", "cpu", "-q")
    assert json.loads((w / "t-eval.json").read_text())["coords"] == "original" and (t / "eval-test.png").exists()
    facepipe("pseudolabel", "--teacher", t, w / "c.h5", "--batch-size", "4", *FAST)
    assert read_pseudo_manifest(t / "pseudo" / "unlabeled.h5")["counts"]["faces"] == 12
    facepipe("distill", "--teacher", t, "--out", s, "--arch", "student-tiny", "--epochs", "1", "--augment", "none",
             *FAST)
    assert manifest(s, "distill")["counts"]["unlabeled_faces"] == 12

    # use it: speed and accuracy, ONNX, a real photo
    facepipe("bench", s, w / "c.h5", "--size", "48", "--seconds", "0.05", "--threads", "1", "--no-baseline",
             "--json", w / "bench.json", "-q")
    assert json.loads((w / "bench.json").read_text())["rows"][0]["overall_f1"] >= 0
    if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime"):
        facepipe("export", s, "--onnx", w / "s.onnx")
        assert (w / "s.onnx").stat().st_size > 0
    else:
        ran.append("export")  # optional dependency absent: the step is skipped, not failed
    save_image(w / "photos" / "astronaut.png", data.astronaut())
    facepipe("parse", w / "photos", "--model", s, "--out", w / "parsed", "--workers", "1", "--device", "cpu", "-q")
    assert manifest(w / "parsed")["stage"] == "parse"
    assert json.loads((w / "parsed" / "summary.json").read_text())["faces"] == 1
    assert (w / "parsed" / "astronaut.labels.png").exists() and (w / "parsed" / "astronaut.overlay.png").exists()

    # what is there
    r = facepipe("rnorm", "--arch", "student-tiny", "--size", "48")
    assert "r_norm = r/s" in r.output
    facepipe("models", "--no-rf", "--json", w / "models.json")
    assert json.loads((w / "models.json").read_text())["architectures"]

    # demo: every stage again on its own data, from one command (conftest's demo_run)
    assert demo_run.result.exit_code == 0, demo_run.result.output
    ran.append("demo")
    d = demo_run.out
    for folder, stage in [("cartoons", "import"), ("cartoons-aligned", "align"), ("cartoon-teacher", "train"),
                          ("cartoon-student", "distill"), ("photo-landmarks", "landmarks"),
                          ("photo-aligned", "align"), ("photo-parsed", None)]:
        manifest(d / folder, stage)
    assert read_cache_manifest(d / "cartoons.h5")["counts"]["faces"] == 8
    assert read_pseudo_manifest(d / "cartoon-teacher" / "pseudo" / "unlabeled.h5")["counts"]["faces"] == 4
    assert (d / "bench.json").exists() and (d / "cartoon-student.onnx").exists()
    assert (d / "photo-parsed" / "astronaut.overlay.png").exists()

    # Every command ran, in `facepipe --help`'s order: a new command needs its step here. (`rnorm sweep`
    # trains a model per cell: tests/test_rnorm_sweep.py runs it.)
    assert ran == cli.list_commands(click.Context(cli))
