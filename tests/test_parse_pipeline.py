"""`parse` as a pipeline: worker processes give the same files as one process, reruns resume, failures
are named, outputs are chosen, label PNGs carry the class colours."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from facepipe.util.atomic import save_image


@pytest.fixture(scope="module")
def parser():
    from facepipe.infer.parse import Parser

    return Parser.load(None, "cpu")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from skimage import data

    d = tmp_path_factory.mktemp("photos")
    a = data.astronaut()
    save_image(d / "a.png", a)
    save_image(d / "b.png", a[:, ::-1])  # a different face position
    save_image(d / "small.png", np.asarray(Image.fromarray(a).resize((300, 300))))
    save_image(d / "gray.png", np.repeat(np.asarray(Image.fromarray(a).convert("L"))[..., None], 3, -1))
    save_image(d / "blank.png", np.full((90, 70, 3), 200, np.uint8))
    return sorted(d.iterdir())


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".png"}


def test_workers_write_what_one_process_writes(parser, photos, tmp_path):
    from facepipe.infer.parse import parse_photos

    one = parse_photos(parser, photos, tmp_path / "one", batch_size=2, workers=1)
    two = parse_photos(parser, photos, tmp_path / "two", batch_size=2, workers=2)
    assert {k: one[k] for k in ("photos", "parsed", "faces", "no_face")} == {
        k: two[k] for k in ("photos", "parsed", "faces", "no_face")}
    a, b = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert sorted(a) == sorted(b) and len([n for n in a if n.endswith(".labels.png")]) == 4
    for name in a:
        if name.endswith(".labels.png"):
            assert np.array_equal(np.asarray(Image.open(tmp_path / "one" / name)),
                                  np.asarray(Image.open(tmp_path / "two" / name))), name
    assert two["workers"] == 2 and set(two["stage_seconds"]) >= {"decode", "detect+landmarks", "network",
                                                                  "warp back", "encode+write"}


def test_labels_are_palette_pngs_and_records_name_schema_and_model(parser, photos, tmp_path):
    from facepipe.infer.parse import parse_photos

    s = parse_photos(parser, photos[:1], tmp_path, workers=1)
    im = Image.open(tmp_path / "a.labels.png")
    assert im.mode == "P"
    ids = np.asarray(im)
    assert ids.max() < parser.schema.num_classes and ids.max() > 0
    pal = np.array(im.getpalette()[: 3 * parser.schema.num_classes]).reshape(-1, 3)
    assert (pal == np.array(parser.schema.colors)).all()
    rec = json.loads((tmp_path / "a.json").read_text())
    assert rec["schema"]["classes"] == list(parser.schema.classes)
    assert rec["model"]["sha256"] == parser.sha256 and len(parser.sha256) == 64
    assert s["model"] == rec["model"] and s["schema"] == rec["schema"]
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["stage"] == "parse" and man["config"]["model"]["sha256"] == parser.sha256
    # The overlay shows a legend in its top-left corner (black box, class swatches); the photo is not black.
    ov = np.asarray(Image.open(tmp_path / "a.overlay.png"))
    assert (ov[:4, :40] == 0).all() and ov[200:300, 200:300].mean() > 20


def test_rerun_skips_finished_photos_and_force_redoes_them(parser, photos, tmp_path):
    from facepipe.infer.parse import parse_photos

    first = parse_photos(parser, photos, tmp_path, batch_size=4, workers=1)
    stamp = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    again = parse_photos(parser, photos, tmp_path, batch_size=4, workers=1)
    assert again["resumed"] == len(photos) and again["faces"] == first["faces"]
    assert again["parsed"] == first["parsed"] and again["no_face"] == first["no_face"]
    assert all(stamp[p.name] == p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.name.startswith("a."))
    # An interrupted photo (its record missing: the record is written last) is the only one redone.
    (tmp_path / "b.json").unlink()
    part = parse_photos(parser, photos, tmp_path, batch_size=4, workers=1)
    assert part["resumed"] == len(photos) - 1 and part["faces"] == first["faces"]
    forced = parse_photos(parser, photos, tmp_path, batch_size=4, workers=1, force=True)
    assert forced["resumed"] == 0
    assert stamp["a.json"] != (tmp_path / "a.json").stat().st_mtime_ns


def test_another_model_into_the_same_folder_is_refused_without_force(parser, photos, tmp_path):
    from dataclasses import replace

    from facepipe.infer.parse import parse_photos
    from facepipe.util.errors import FacepipeError

    parse_photos(parser, photos[:1], tmp_path, workers=1)
    other = replace(parser, sha256="0" * 64, name="other")
    with pytest.raises(FacepipeError, match="another model"):
        parse_photos(other, photos[:1], tmp_path, workers=1)
    assert parse_photos(other, photos[:1], tmp_path, workers=1, force=True)["resumed"] == 0


def test_manifest_is_written_last_and_an_interrupted_run_keeps_the_refusal(parser, photos, tmp_path):
    from dataclasses import replace

    from facepipe.infer.parse import parse_photos
    from facepipe.util.errors import FacepipeError

    parse_photos(parser, photos[:1], tmp_path, workers=1)
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["command"] and man["counts"]["faces"] == 1 and not (tmp_path / ".inprogress.json").exists()
    # An interrupted run leaves .inprogress.json (its config) and no manifest: another model is refused there too.
    (tmp_path / "manifest.json").unlink()
    (tmp_path / ".inprogress.json").write_text(json.dumps({"stage": "parse", "config": man["config"]}))
    with pytest.raises(FacepipeError, match="another model"):
        parse_photos(replace(parser, sha256="0" * 64, name="other"), photos[:1], tmp_path, workers=1)
    assert parse_photos(parser, photos[:1], tmp_path, workers=1)["resumed"] == 1
    assert (tmp_path / "manifest.json").exists() and not (tmp_path / ".inprogress.json").exists()


def test_outputs_can_be_chosen(parser, photos, tmp_path):
    from facepipe.infer.parse import parse_photos

    parse_photos(parser, photos[:1], tmp_path, workers=1, outputs=("labels",))
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "a.labels.png", "manifest.json", "summary.json"]


def test_grayscale_photo_is_flagged(parser, photos, tmp_path):
    from facepipe.infer.parse import parse_photos

    gray = [p for p in photos if p.name == "gray.png"]
    s = parse_photos(parser, gray, tmp_path, workers=1)
    assert s["grayscale"] == [str(gray[0])] and json.loads((tmp_path / "gray.json").read_text())["grayscale"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "facepipe", "parse", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                                                       "COLUMNS": "200"})


def test_cli_names_each_failure_and_exits_1_when_nothing_was_parsed(photos, tmp_path):
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    blank = [p for p in photos if p.name == "blank.png"][0]
    r = _cli(bad, blank, "--out", tmp_path / "o", "--workers", "1")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "cut.jpg" in r.stderr and "no face" in r.stderr and "error: no face parsed in 2 photo(s)" in r.stderr
    assert "--detector hog+cnn" in r.stderr  # the way to profiles is named where HOG found nothing
    ok = _cli(bad, photos[0], "--out", tmp_path / "o2", "--workers", "1")
    assert ok.returncode == 0 and "cut.jpg" in ok.stderr, ok.stderr


def test_cli_refuses_bad_numbers_and_outputs_before_claiming_the_folder(tmp_path, photos):
    for args in (["--batch-size", "0"], ["--workers", "-1"], ["--outputs", "labels,movie"], ["--outputs", ""]):
        r = _cli(photos[0], "--out", tmp_path / "o", *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (args, r.stderr)
        assert not (tmp_path / "o").exists(), args


def test_the_legend_goes_to_the_corner_that_hides_the_fewest_labelled_pixels():
    """On a face crop the top-left corner holds an eye: the legend moves to the corner that hides the least,
    the top-left among equals; clipped to photos smaller than itself."""
    from facepipe.infer.parse_work import paste_legend

    tile = np.full((20, 30, 3), 7, np.uint8)
    labels = np.zeros((100, 120), np.uint8)
    rgb = np.full((100, 120, 3), 200, np.uint8)
    assert paste_legend(rgb.copy(), tile, labels) == (0, 0) == paste_legend(rgb.copy(), tile)
    labels[:50, :60] = 3  # an eye under the top-left corner
    labels[:50, 60:] = 2  # skin under the top-right one
    labels[50:, :] = 2
    labels[90:, 95:] = 0  # the bottom-right one the emptiest (350 labelled), though not empty
    labels[:5, 90:] = 255  # unlabelled pixels are not hidden (the top-right one: 450)
    out = rgb.copy()
    assert paste_legend(out, tile, labels) == (80, 90)
    assert (out[80:, 90:] == 7).all() and (out[:80] == 200).all() and (out[:, :90] == 200).all()
    # Weighed by each class's share: a corner of skin hides less than one with the whole mouth, though
    # the mouth's corner has fewer labelled pixels (300 against 600: the rest of it is background).
    labels[:] = 2
    labels[80:90, 90:] = 0
    labels[90:, 90:100] = 5
    assert paste_legend(rgb.copy(), tile, labels) == (0, 0)
    small = np.full((10, 12, 3), 200, np.uint8)
    assert paste_legend(small, tile, np.zeros((10, 12), np.uint8)) == (0, 0) and (small == 7).all()
