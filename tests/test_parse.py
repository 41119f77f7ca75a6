"""`facepipe parse` on photos the tests make (scikit-image's astronaut, a blank, a broken file)."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facepipe.atomic import save_image
from facepipe.cli import cli


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, synthetic_cache):
    from facepipe.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run") / "r"
    train(TrainConfig(cache=str(synthetic_cache), out=str(out), arch="teacher-small", epochs=1, loss="ce",
                      val_split="none", threads=1, device="cpu", final_eval=""))
    return out


def test_parse_photos_in_their_own_coordinates(tmp_path, tiny_run):
    from skimage import data

    photos = tmp_path / "photos"
    save_image(photos / "astronaut.jpg", data.astronaut())
    save_image(photos / "blank.png", np.full((90, 70, 3), 200, np.uint8))
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "parsed"
    res = CliRunner().invoke(cli, ["parse", str(photos), "--model", str(tiny_run), "--out", str(out), "-q",
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["photos"] == 3 and summary["faces"] == 1  # the badge false positive is filtered
    assert any("blank" in p for p in summary["no_face"]) and len(summary["unreadable"]) == 1
    rec = json.loads((out / "astronaut.json").read_text())
    lab = np.asarray(Image.open(out / rec["labels"]))
    assert lab.shape == (512, 512) and lab.dtype == np.uint8
    assert sum(rec["pixel_counts"].values()) == 512 * 512
    assert len(rec["faces"][0]["landmarks68"]) == 68 and np.array(rec["faces"][0]["matrix"]).shape == (3, 3)
    assert (out / rec["overlay"]).exists()
    assert summary["seconds_align"] > 0 and summary["seconds_network"] > 0
    # Pixels far outside the face's crop are background: nothing there was parsed.
    assert lab[-5:, -5:].max() == 0


def test_parse_without_model_or_photos_is_one_clear_error(tmp_path):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "facepipe", "parse", str(tmp_path / "none.jpg"), "--out",
                        str(tmp_path / "o")], capture_output=True, text=True)
    assert p.returncode == 1 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1


def test_rnorm_command_reports_exact_r():
    res = CliRunner().invoke(cli, ["rnorm", "--arch", "student", "--size", "256"])
    assert res.exit_code == 0, res.output
    assert "263" in res.output and "1.027" in res.output


def test_default_model_ships_and_parses_without_model_option(tmp_path):
    from skimage import data

    from facepipe.parse import DEFAULT_MODEL, Parser

    assert DEFAULT_MODEL.exists() and DEFAULT_MODEL.stat().st_size < 5_000_000
    p = Parser.load(None, "cpu")
    assert p.size == 256 and p.schema.name == "fasseg" and p.heatmap
    save_image(tmp_path / "a.png", data.astronaut())
    res = CliRunner().invoke(cli, ["parse", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 0, res.output
    counts = json.loads((tmp_path / "o" / "a.json").read_text())["pixel_counts"]
    # A face was parsed: the eyes, nose and mouth of the astronaut get some pixels.
    assert counts["eyes"] > 0 and counts["nose"] > 0 and counts["mouth"] > 0
