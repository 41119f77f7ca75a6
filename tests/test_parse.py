"""`facepipe parse` on photos the tests make (scikit-image's astronaut, a blank, a broken file)."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facepipe.cli import cli
from facepipe.util.atomic import save_image


@pytest.fixture(scope="module")
def letterbox_run(tmp_path_factory, synthetic_set, train_tiny):
    """A tiny model trained on letterboxed crops (`align --letterbox`: whole photos fitted into 64 px)."""
    from facepipe.data.align import AlignConfig, run_align
    from facepipe.data.cache import CacheConfig, run_cache
    from facepipe.data.importers import import_dataset

    root = tmp_path_factory.mktemp("letterbox")
    import_dataset("folder", synthetic_set, root / "imp", workers=1)
    run_align(AlignConfig(src=str(root / "imp"), out=str(root / "al"), size=64, landmarks="dataset", letterbox=True,
                          workers=1))
    run_cache(CacheConfig(src=str(root / "al"), out=str(root / "c.h5")))
    return train_tiny(root / "r", cache=root / "c.h5")


def test_letterbox_model_gets_each_photo_fitted_whole_once(tmp_path, letterbox_run):
    """A model trained on letterboxed photos is fed letterboxed photos (not aligned face crops): one crop
    per photo, whatever the number of faces, with every face's landmarks in its heatmap."""
    from skimage import data

    from facepipe.infer.parse import DETECTOR, Parser, parse_photos
    from facepipe.infer.parse_work import align_photo
    from facepipe.util.geometry import letterbox_matrix

    save_image(tmp_path / "two.png", np.concatenate([data.astronaut(), data.astronaut()[:, ::-1]], axis=1))
    parser = Parser.load(str(letterbox_run), "cpu")
    assert parser.align.letterbox and parser.align.size == 64
    r = align_photo({"path": str(tmp_path / "two.png"), "det_args": DETECTOR, "min_score": 0.2,
                     "align": parser.align})
    assert len(r["faces"]) == 2 and len(r["crops"]) == 1 and r["crops"][0].shape == (64, 64, 3)
    lb = letterbox_matrix(512, 1024, 64)
    assert np.allclose(r["matrices"][0], lb) and all(np.allclose(m, lb) for m in r["face_matrices"])
    hm = r["heatmaps"][0]
    assert hm[:, :32].any() and hm[:, 32:].any()  # both faces' landmarks, one in each half
    s = parse_photos(parser, [tmp_path / "two.png"], tmp_path / "out", workers=1)
    assert s["faces"] == 2 and s["parsed"] == 1
    rec = json.loads((tmp_path / "out" / "two.json").read_text())
    assert len(rec["faces"]) == 2 and all(np.allclose(f["matrix"], lb) for f in rec["faces"])
    assert sum(rec["pixel_counts"].values()) == 512 * 1024


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

    from facepipe.infer.parse import DEFAULT_MODEL, Parser

    assert DEFAULT_MODEL.exists() and DEFAULT_MODEL.stat().st_size < 5_000_000
    p = Parser.load(None, "cpu")
    assert p.size == 256 and p.schema.name == "fasseg" and p.heatmap
    save_image(tmp_path / "a.png", data.astronaut())
    res = CliRunner().invoke(cli, ["parse", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 0, res.output
    counts = json.loads((tmp_path / "o" / "a.json").read_text())["pixel_counts"]
    # A face was parsed: the eyes, nose and mouth of the astronaut get some pixels.
    assert counts["eyes"] > 0 and counts["nose"] > 0 and counts["mouth"] > 0


def test_grayscale_warning_only_for_models_that_never_saw_gray_faces(tmp_path, tiny_run):
    """The bundled models and a run trained with --augment wild were shown grayscale faces: no warning.
    A checkpoint that says it was not, or says nothing, gets one."""
    import torch
    from skimage import data

    from facepipe.infer.checkpoint import run_checkpoint
    from facepipe.infer.model import LoadedModel
    from facepipe.infer.pack import pack

    default = LoadedModel.load("default")  # its colour network saw no gray faces, its gray branch nothing else
    assert default.augment == "wild,gray=0" and default.gray_branch and default.saw_grayscale
    assert LoadedModel.load("accurate").augment == "wild"
    save_image(tmp_path / "gray.png", np.repeat(data.astronaut().mean(2, keepdims=True), 3, 2).astype(np.uint8))
    basic = torch.load(run_checkpoint(tiny_run), weights_only=True)
    basic["config"]["augment"] = "basic"
    torch.save(basic, tmp_path / "basic.pt")
    silent = dict(pack(tmp_path / "basic.pt", tmp_path / "packed.pt"))
    assert silent["recipe"] == {"augment": "basic"}
    del silent["recipe"]
    torch.save(silent, tmp_path / "unsaid.pt")
    basic["config"]["augment"] = "wild,gray=0"  # an ablation row: wild without its grayscale faces
    torch.save(basic, tmp_path / "nogray.pt")
    said = {}
    for name, model in [("default", "default"), ("basic", tmp_path / "basic.pt"), ("unsaid", tmp_path / "unsaid.pt"),
                        ("nogray", tmp_path / "nogray.pt")]:
        res = CliRunner().invoke(cli, ["parse", str(tmp_path / "gray.png"), "--model", str(model), "--out",
                                       str(tmp_path / name), "--device", "cpu"])
        assert res.exit_code == 0, res.output
        said[name] = " ".join(res.output.split())  # rich wraps long lines
        assert json.loads((tmp_path / name / "gray.json").read_text())["grayscale"]
    assert "often missed" not in said["default"]
    assert "trained without grayscale faces (--augment basic)" in said["basic"]
    assert "does not say whether it was trained on grayscale" in said["unsaid"]
    assert "trained without grayscale faces (--augment wild,gray=0)" in said["nogray"]


def test_tta_flip_changes_the_prediction_and_is_part_of_the_config(tmp_path):
    from skimage import data

    save_image(tmp_path / "p" / "a.png", data.astronaut())
    base = ["parse", str(tmp_path / "p"), "-q", "--device", "cpu"]
    r = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "plain")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "tta"), "--tta-flip"])
    assert r.exit_code == 0, r.output
    plain, tta = (np.asarray(Image.open(tmp_path / d / "a.labels.png")) for d in ("plain", "tta"))
    assert 0 < (plain != tta).mean() < 0.05  # the mirror's vote moves boundaries, not faces
    assert json.loads((tmp_path / "tta" / "manifest.json").read_text())["config"]["tta_flip"] is True
    assert "tta_flip" not in json.loads((tmp_path / "plain" / "manifest.json").read_text())["config"]
    r = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "plain"), "--tta-flip"])
    assert r.exit_code == 1 and "another model or settings" in str(r.exception)
    # The model is judged by its file: `fast` is the file `default` names, so the folder resumes (nothing redone);
    # `accurate` is another file, refused.
    mtime = (tmp_path / "plain" / "a.labels.png").stat().st_mtime_ns
    r = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "plain"), "--model", "fast"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "plain" / "a.labels.png").stat().st_mtime_ns == mtime
    r = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "plain"), "--model", "accurate"])
    assert r.exit_code == 1 and "another model or settings" in str(r.exception)


def test_a_small_face_in_a_large_photo_needs_upsample_and_the_setting_is_recorded(tmp_path):
    """The astronaut's face about 90 px wide in a 3200x2400 photo: shrunk to 1600 px for detection it is
    45 px, under HOG's 80 px window, so the default finds nothing and says how to find it; --upsample 1
    finds it, and the folder's config records the setting (a resumed run cannot mix settings)."""
    from skimage import data

    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.normal(120, 20, (2400, 3200, 3)).clip(0, 255).astype(np.uint8))
    photo.paste(Image.fromarray(data.astronaut()).resize((460, 460)), (1500, 1000))
    save_image(tmp_path / "p" / "group.jpg", np.asarray(photo))
    args = ["parse", str(tmp_path / "p"), "--device", "cpu", "--workers", "1"]
    res = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "default")])
    assert res.exit_code == 1 and "--upsample 1 finds faces half that size" in " ".join(res.output.split())
    res = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "up"), "--upsample", "1", "-q"])
    assert res.exit_code == 0, res.output
    faces = json.loads((tmp_path / "up" / "group.json").read_text())["faces"]
    assert len(faces) == 1 and 60 < faces[0]["box"][2] - faces[0]["box"][0] < 130
    assert json.loads((tmp_path / "up" / "manifest.json").read_text())["config"]["detector"] == [1, 1600, 0.0]
    res = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "up"), "-q"])  # other settings, same folder
    assert res.exit_code == 1 and "--force" in str(res.exception)
