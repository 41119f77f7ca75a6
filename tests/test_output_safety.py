"""What a stage may do to the folders it is given: never delete a user's files or a stage's own input (not even
with --force), take up photos added to a finished folder, and say plainly what it skipped and why."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from facepipe.cli import cli
from facepipe.util.atomic import save_image
from facepipe.util.errors import FacepipeError
from facepipe.util.manifest import FileOutput, StageOutput, parse_shard

REPO = Path(__file__).resolve().parents[1]


def one_line(*args, cwd=REPO):
    r = subprocess.run([sys.executable, "-m", "facepipe", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                       timeout=180, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr, r.stderr
    return r.stderr


def test_a_folder_facepipe_did_not_make_is_never_wiped(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "photo.jpg").write_bytes(b"x")
    for force in (False, True):
        with pytest.raises(FacepipeError, match="not made by facepipe.*notes.txt and 1 more"):
            with StageOutput(out, "x", {"a": 1}, force=force):
                pass
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".lock")) == ["notes.txt", "photo.jpg"]


def test_an_output_holding_its_own_input_is_refused_even_with_force(tmp_path):
    run = tmp_path / "run"
    with StageOutput(run, "train", {"cache": "elsewhere.h5"}) as so:
        so.finish()
    cache = run / "faces.h5"  # the user's cache, moved into a finished run folder
    cache.write_bytes(b"cache")
    for force in (False, True):
        with pytest.raises(FacepipeError, match="holds this stage's input"):
            with StageOutput(run, "train", {"cache": str(cache), "out": str(run)}, force=force):
                pass
        with pytest.raises(FacepipeError, match="is this stage's input"):
            with StageOutput(run, "landmarks", {"src": str(run)}, force=force):
                pass
        with pytest.raises(FacepipeError, match="is this stage's input"):
            with FileOutput(cache, {"src": str(cache)}, force, lambda p: {}, lambda p: None):
                pass
    assert cache.read_bytes() == b"cache"
    link = run / "linked.h5"  # an input that is a link inside OUT: the wipe would remove the link
    link.symlink_to(tmp_path / "elsewhere.h5")
    (tmp_path / "elsewhere.h5").write_bytes(b"x")
    with pytest.raises(FacepipeError, match="holds this stage's input"):
        with StageOutput(run, "train", {"cache": str(link)}, force=True):
            pass
    assert link.is_symlink()
    with StageOutput(tmp_path / "other", "train", {"cache": str(cache), "exclude": ["*/mate/*"]}) as so:
        assert so.state == "fresh"  # an input elsewhere, and values that name no file, are fine


def test_hidden_files_neither_block_a_folder_nor_get_wiped(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / ".DS_Store").write_bytes(b"finder")
    with StageOutput(out, "x", {"a": 1}) as so:
        assert so.state == "fresh"
    assert (out / ".DS_Store").read_bytes() == b"finder"


def test_shard_count_of_zero_is_named():
    with pytest.raises(FacepipeError, match="N, the number of shards"):
        parse_shard("1/0")
    assert parse_shard("1/4") == (1, 4)


def test_pseudolabel_with_a_bundled_teacher_needs_out(tmp_path):
    err = one_line("pseudolabel", "--teacher", "accurate", tmp_path / "u.h5", cwd=tmp_path)
    assert "name OUT" in err and "accurate" in err
    assert not (tmp_path / "accurate").exists()  # the folder that would hide the bundled model was not made


def test_a_folder_named_like_a_bundled_model_is_named_as_hiding_it(tmp_path, monkeypatch):
    from facepipe.infer.checkpoint import run_checkpoint

    monkeypatch.chdir(tmp_path)
    (tmp_path / "accurate" / "pseudo").mkdir(parents=True)
    with pytest.raises(FacepipeError, match="wins over the bundled model 'accurate'"):
        run_checkpoint("accurate")
    with pytest.raises(FacepipeError, match="no checkpoint in"):
        (tmp_path / "mine").mkdir()
        run_checkpoint("mine")


def test_parse_leaves_its_own_outputs_alone_and_knows_a_photo_by_its_file(tmp_path, tiny_run):
    from skimage import data

    photos = tmp_path / "album"
    save_image(photos / "astronaut.jpg", data.astronaut())
    base = ["--model", str(tiny_run), "--out", str(photos), "-q", "--device", "cpu"]
    r = CliRunner().invoke(cli, ["parse", str(photos / "astronaut.jpg"), *base])  # a photo by name, out beside it
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["parse", str(photos), *base])  # then its folder, which finds parse's own PNGs
    assert r.exit_code == 0, r.output
    s = json.loads((photos / "summary.json").read_text())
    assert s["photos"] == 1 and s["resumed"] == 1 and s["faces"] == 1, s
    assert not list(photos.glob("*_1.*")) and not list(photos.glob("*.overlay.overlay.png"))


def test_parse_without_json_says_its_resumed_faces_are_not_counted(tmp_path, tiny_run):
    from skimage import data

    save_image(tmp_path / "astronaut.jpg", data.astronaut())
    args = ["parse", str(tmp_path / "astronaut.jpg"), "--model", str(tiny_run), "--out", str(tmp_path / "o"),
            "--outputs", "overlay", "--device", "cpu"]
    assert CliRunner().invoke(cli, args + ["-q"]).exit_code == 0
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["resumed"] == 1 and s["faces"] == 0 and s["faces_uncounted_photos"] == 1
    assert "resumed without .json" in r.output


@pytest.fixture(scope="module")
def two_photos(tmp_path_factory):
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    save_image(root / "a" / "astronaut.jpg", data.astronaut())
    save_image(root / "b" / "mirrored.jpg", np.ascontiguousarray(data.astronaut()[:, ::-1]))
    return root


def _heard():
    """A Reporter that prints into a buffer, and the buffer."""
    import io

    from rich.console import Console

    from facepipe.util.progress import Reporter

    buf = io.StringIO()
    return Reporter(quiet=False, console=Console(file=buf, width=300)), buf


def test_a_finished_landmarks_folder_names_photos_added_since_and_stays_as_it_was(tmp_path, two_photos):
    from facepipe.data.landmarks import LandmarksConfig, run_landmarks

    src = tmp_path / "src"
    src.mkdir()
    (src / "astronaut.jpg").write_bytes((two_photos / "a" / "astronaut.jpg").read_bytes())
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    cfg = LandmarksConfig(src=str(src), out=str(tmp_path / "lm"), workers=1)
    m = run_landmarks(cfg)
    assert m["counts"]["read"] == 1 and m["counts"]["unreadable"] == 1
    rep, heard = _heard()
    assert run_landmarks(cfg, rep)["finished"] == m["finished"] and "not in" not in heard.getvalue()
    (src / "mirrored.jpg").write_bytes((two_photos / "b" / "mirrored.jpg").read_bytes())
    rep, heard = _heard()
    m2 = run_landmarks(cfg, rep)
    assert m2 == m  # the manifest the next stage was made from is left alone
    assert "1 photo(s)" in heard.getvalue() and "mirrored.jpg" in heard.getvalue() and "--force" in heard.getvalue()


def test_an_align_output_inside_its_photo_folder_does_not_take_its_crops_for_new_photos(tmp_path, two_photos):
    from facepipe.data.align import AlignConfig, run_align

    src = tmp_path / "photos"
    src.mkdir()
    (src / "astronaut.jpg").write_bytes((two_photos / "a" / "astronaut.jpg").read_bytes())
    cfg = AlignConfig(src=str(src), out=str(src / "aligned"), size=64, workers=1)
    m = run_align(cfg)
    rep, heard = _heard()
    assert run_align(cfg, rep) == m and "not in" not in heard.getvalue()


def test_landmarks_with_no_readable_photo_fails_naming_one(tmp_path):
    from facepipe.data.landmarks import LandmarksConfig, run_landmarks

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_text("not an image")
    with pytest.raises(FacepipeError, match="no photo in .* could be read .*x.jpg"):
        run_landmarks(LandmarksConfig(src=str(tmp_path / "bad"), out=str(tmp_path / "lm"), workers=1))


def test_align_names_a_landmarks_folder_made_from_other_photos(tmp_path, two_photos):
    from facepipe.data.align import AlignConfig, run_align
    from facepipe.data.landmarks import LandmarksConfig, run_landmarks

    run_landmarks(LandmarksConfig(src=str(two_photos / "a"), out=str(tmp_path / "lm"), workers=1))
    with pytest.raises(FacepipeError, match="landmarks for none of the 1 photos.*made from"):
        run_align(AlignConfig(src=str(two_photos / "b"), out=str(tmp_path / "al"), landmarks=str(tmp_path / "lm"),
                              workers=1))
    both = tmp_path / "both"
    both.mkdir()
    for p in (two_photos / "a" / "astronaut.jpg", two_photos / "b" / "mirrored.jpg"):
        (both / p.name).write_bytes(p.read_bytes())
    m = run_align(AlignConfig(src=str(both), out=str(tmp_path / "al2"), landmarks=str(tmp_path / "lm"), workers=1))
    assert m["counts"]["not_in_landmarks"] == 1 and m["counts"]["unreadable"] == 0 and m["counts"]["faces"] >= 1


def test_rnorm_sweep_names_cells_that_all_scored_alike():
    from facepipe.analysis.rnorm_sweep import SAME_F1, analyse

    cells = [{"cell": f"s64-d{d}", "s": 64, "d": d, "r": r, "r_norm": r / 64, "overall_f1": 0.0}
             for d, r in ((1, 40), (2, 60), (4, 100))]
    assert analyse(cells)["optimum_from"] == SAME_F1
    cells[1]["overall_f1"] = 0.5
    assert analyse(cells)["optimum_from"] != SAME_F1


def test_check_landmarks_on_boxes_without_points_writes_valid_json(tmp_path):
    from facepipe.data.landmark_eval import evaluate

    (tmp_path / "lm" / "faces").mkdir(parents=True)
    (tmp_path / "lm" / "faces" / "p.json").write_text(json.dumps(
        {"faces": [{"box": [10, 10, 60, 60], "lm68": [[30, 30]] * 68}]}))
    xml = tmp_path / "boxes.xml"
    xml.write_text("<dataset><images><image file='p.jpg'><box top='10' left='10' width='50' height='50'/>"
                   "</image></images></dataset>")
    r = evaluate(tmp_path / "lm", [xml])
    assert r["found"] == 1 and r["scored_faces"] == 0 and r["nme_mean"] is None
    json.loads(json.dumps(r, allow_nan=False))


def test_backgrounds_skips_images_too_small_to_be_a_backdrop(tmp_path):
    from facepipe.data.backgrounds import MIN_SIDE, BackgroundsConfig, run_backgrounds

    rng = np.random.default_rng(0)
    save_image(tmp_path / "src" / "icon.png", rng.integers(0, 255, (20, 20, 3), np.uint8))
    save_image(tmp_path / "src" / "wall.png", rng.integers(0, 255, (MIN_SIDE, 200, 3), np.uint8))
    m = run_backgrounds(BackgroundsConfig(sources=(str(tmp_path / "src"),), out=str(tmp_path / "bg")))
    assert m["counts"]["photos"] == 1
    assert any("icon" in s["source"] and "too small" in s["reason"] for s in m["skipped"])


def test_parse_knows_a_record_by_its_absolute_path_not_by_a_relative_name(tmp_path, monkeypatch):
    from facepipe.infer.parse import _same_photo

    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.jpg").write_bytes(b"x")
    here = tmp_path / "x.jpg"
    assert _same_photo({"photo": "x.jpg", "photo_abs": str(here)}, here)
    # Written from another working directory, a relative name may be another photo: not matched through ours.
    assert not _same_photo({"photo": "x.jpg"}, here)
    assert _same_photo({"photo": str(here)}, here)


def test_a_run_that_failed_before_writing_anything_leaves_no_mark(tmp_path):
    from facepipe.data.backgrounds import MIN_SIDE, BackgroundsConfig, run_backgrounds

    rng = np.random.default_rng(0)
    save_image(tmp_path / "icons" / "icon.png", rng.integers(0, 255, (20, 20, 3), np.uint8))
    save_image(tmp_path / "walls" / "wall.png", rng.integers(0, 255, (MIN_SIDE, 200, 3), np.uint8))
    with pytest.raises(FacepipeError):
        run_backgrounds(BackgroundsConfig(sources=(str(tmp_path / "icons"),), out=str(tmp_path / "bg")))
    assert not (tmp_path / "bg" / ".inprogress.json").exists()
    # The corrected command into the same folder runs without --force.
    m = run_backgrounds(BackgroundsConfig(sources=(str(tmp_path / "walls"),), out=str(tmp_path / "bg")))
    assert m["counts"]["photos"] == 1


def test_a_failed_run_that_wrote_work_keeps_its_mark(tmp_path):
    out = tmp_path / "o"
    with pytest.raises(RuntimeError):
        with StageOutput(out, "x", {"a": 1}):
            (out / "item.png").write_bytes(b"x")
            raise RuntimeError("cut short")
    with StageOutput(out, "x", {"a": 1}) as so:
        assert so.state == "resume"
    with pytest.raises(FacepipeError, match="unfinished"):
        with StageOutput(out, "x", {"a": 2}):
            pass


def _face_photo(path):
    from skimage import data

    save_image(path, data.astronaut())
    return path


def test_parse_never_writes_over_files_it_did_not_make(tmp_path):
    photo = _face_photo(tmp_path / "in" / "face.png")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "face.json").write_text('{"precious": 1}')
    r = CliRunner().invoke(cli, ["parse", str(photo), "--out", str(mine), "-q", "--device", "cpu", "--force"])
    assert r.exit_code == 1 and "which parse did not write" in str(r.exception)
    assert (mine / "face.json").read_text() == '{"precious": 1}' and not (mine / "face.labels.png").exists()
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text('{"stage": "distill"}')
    r = CliRunner().invoke(cli, ["parse", str(photo), "--out", str(run), "-q", "--device", "cpu"])
    assert r.exit_code == 1 and "`distill` output" in str(r.exception)
    assert json.loads((run / "manifest.json").read_text()) == {"stage": "distill"}
    # A folder of photos and notes only (no name parse writes): parsed into, as before.
    (tmp_path / "in" / "notes.txt").write_text("x")
    r = CliRunner().invoke(cli, ["parse", str(photo), "--out", str(tmp_path / "in"), "-q", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "in" / "face.labels.png").exists()


def test_parse_says_which_setting_differs_and_names_what_it_could_not_parse(tmp_path):
    photo = _face_photo(tmp_path / "in" / "face.png")
    base = ["parse", str(photo), "--out", str(tmp_path / "o"), "-q", "--device", "cpu", "--crop-only"]
    assert CliRunner().invoke(cli, base).exit_code == 0
    r = CliRunner().invoke(cli, [*base, "--tta-flip"])
    assert r.exit_code == 1 and "differing: tta_flip)" in str(r.exception)
    (tmp_path / "text.jpg").write_text("not a photo")
    (tmp_path / "IMG_1.HEIC").write_bytes(b"x")
    r = CliRunner().invoke(cli, ["parse", str(tmp_path / "text.jpg"), "--out", str(tmp_path / "q"), "-q"])
    assert r.exit_code == 1 and "see above" not in str(r.exception) and "text.jpg" in str(r.exception)
    r = CliRunner().invoke(cli, ["parse", str(tmp_path / "IMG_1.HEIC"), "--out", str(tmp_path / "h"), "-q"])
    assert r.exit_code == 1 and "convert them to JPEG or PNG" in str(r.exception)
    r = CliRunner().invoke(cli, ["parse", str(tmp_path / "IMG_1.HEIC"), str(photo), "--out", str(tmp_path / "h2"),
                                 "-q", "--device", "cpu", "--crop-only"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "h2" / "summary.json").read_text())
    assert summary["skipped_format"] == [str(tmp_path / "IMG_1.HEIC")] and summary["parsed"] == 1


def test_parse_redoes_its_own_damaged_record_and_leaves_a_sidecar_alone(tmp_path):
    photo = _face_photo(tmp_path / "in" / "face.png")
    (tmp_path / "in" / "face.png.json").write_text('{"taken": "2026"}')  # a photo service's sidecar
    base = ["parse", str(tmp_path / "in"), "--out", str(tmp_path / "in"), "-q", "--device", "cpu", "--crop-only"]
    r = CliRunner().invoke(cli, base)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "in" / "face.png.json").read_text() == '{"taken": "2026"}'
    (tmp_path / "in" / "face.json").write_text("")  # parse's own record, emptied by a crash
    r = CliRunner().invoke(cli, base)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "in" / "face.json").read_text())["photo"] == str(photo)
    assert not (tmp_path / "in" / "face_1.json").exists()
