"""`facepipe demo`: every stage runs end to end, the photo is parsed by the bundled model, the mission
patch on the astronaut's suit is not a face, scikit-image's photo never enters training, reruns resume."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from facepipe.cli import cli
from facepipe.data.pseudo_file import read_pseudo_manifest

STAGES = ["draw cartoons", "import", "align", "cache", "train teacher", "pseudolabel", "distill student", "eval",
          "bench", "export", "landmarks", "align photo", "parse photo"]


@pytest.mark.slow  # demo_run (conftest.py): 15-24 s on 2 shared cores, library imports, dlib, ONNX export
def test_demo_end_to_end_and_resume(demo_run):
    out, r = demo_run.out, demo_run.result
    assert r.exit_code == 0, r.output
    assert f"parsed photo: {out / 'photo-parsed' / 'astronaut.overlay.png'}" in r.output
    assert "smoke run" in r.output  # the cartoon scores are labelled as what they are
    rec = json.loads((out / "demo.json").read_text())
    assert [row[0] for row in rec["rows"]] == STAGES
    assert (out / "photo-parsed" / "astronaut.overlay.png").exists()
    assert (out / "cartoon-student.onnx").exists() and (out / "cartoon-student" / "eval-test.png").exists()

    # Only the face: dlib scores the mission patch ~0.12, under the demo's minimum score.
    lm = json.loads((out / "photo-landmarks" / "faces" / "astronaut.json").read_text())
    assert len(lm["faces"]) == 1 and lm["faces"][0]["score"] > 0.5
    assert rec["faces_parsed"] == 1

    # scikit-image's photos are for measuring: teacher and student train on cartoons only.
    t_cfg = json.loads((out / "cartoon-teacher" / "config.json").read_text())
    s_cfg = json.loads((out / "cartoon-student" / "config.json").read_text())
    assert t_cfg["cache"].endswith("cartoons.h5")
    assert s_cfg["labeled"].endswith("cartoons.h5")
    assert read_pseudo_manifest(s_cfg["unlabeled"])["config"]["src"].endswith("cartoons-unlabelled.h5")

    # A rerun finds every stage finished (it rewrites demo.json alone).
    r2 = CliRunner().invoke(cli, ["demo", *demo_run.args])
    assert r2.exit_code == 0, r2.output
    rows = json.loads((out / "demo.json").read_text())["rows"]
    assert all(row[2].endswith("(done before)") for row in rows), rows


@pytest.mark.slow  # reruns the finished stages of demo_run's copy up to the pseudo-labels
def test_demo_into_a_folder_of_another_version_says_to_remove_it(demo_run, tmp_path):
    """A demo folder whose pseudo-labels were made with another config (an older facepipe's pseudolabel):
    one line that names the folder and what to do, not the stage's --force, which demo does not take."""
    out = Path(shutil.copytree(demo_run.out, tmp_path / "old"))
    pseudo = out / "cartoon-teacher" / "pseudo" / "unlabeled.h5"
    with h5py.File(pseudo, "a") as f:
        m = json.loads(f.attrs["manifest"])
        del m["config"]["outside_photo"]
        f.attrs["manifest"] = json.dumps(m)
    r = subprocess.run([sys.executable, "-m", "facepipe", "demo", str(out), *demo_run.args[1:], "-q"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and str(out) in r.stderr
    assert "remove it or run the demo into another folder" in r.stderr and "--force" not in r.stderr


def test_demo_help_states_smoke_run_and_bundled_model():
    r = CliRunner().invoke(cli, ["demo", "--help"])
    assert r.exit_code == 0
    assert "bundled model" in r.output and "--min-score" in r.output
