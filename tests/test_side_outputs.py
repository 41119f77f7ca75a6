"""What a command's side outputs (show's sheet, eval's sheet and JSON, export's ONNX files, bench's and
check-landmarks' JSON) may do: never replace the command's own input, carry the name their format has, and
fail in one line that names the user's path; and the scores and messages a new user met on the way."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from facepipe.cli import cli
from facepipe.util.errors import FacepipeError
from test_output_safety import one_line  # the real CLI in a subprocess: exit 1, one line, no traceback

REPO = Path(__file__).resolve().parents[1]


def refused(args, *words):
    """The CLI refuses `args` with a FacepipeError (one line in the real CLI) holding `words`."""
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert isinstance(res.exception, FacepipeError), (res.exception, res.output)
    for w in words:
        assert w in str(res.exception), str(res.exception)
    return str(res.exception)


@pytest.fixture
def cache(synthetic_cache, tmp_path):
    """This test's own copy of the synthetic cache."""
    return Path(shutil.copy(synthetic_cache, tmp_path / "faces.h5"))


def test_show_refuses_to_write_its_sheet_over_its_cache(cache, tmp_path):
    before = cache.read_bytes()
    link = tmp_path / "link.h5"
    link.symlink_to(cache)
    refused(["show", cache, "--out", cache], f"the output {cache} is this command's input {cache}")
    refused(["show", link, "--out", cache], "is this command's input")  # the input through a link
    refused(["show", cache, "--out", link], "is this command's input")  # the output through a link
    assert cache.read_bytes() == before and link.is_symlink()
    refused(["show", cache, "--out", tmp_path / "z.gif"], "should end in .png")  # not a PNG named .gif
    assert not (tmp_path / "z.gif").exists()
    assert CliRunner().invoke(cli, ["show", str(cache), "--out", str(tmp_path / "s.png"), "-n", "2"]).exit_code == 0


def test_eval_refuses_a_sheet_or_json_over_its_model_or_cache(cache, tiny_run_copy, tmp_path):
    run = tiny_run_copy
    best = run / "checkpoints" / "best.pt"
    kept = {p: p.read_bytes() for p in (best, cache, run / "config.json")}
    refused(["eval", run, cache, "--sheet", best], f"the output {best} lies inside this command's input")
    refused(["eval", run, cache, "--json", cache], "is this command's input")
    refused(["eval", best, cache, "--json", best], "is this command's input")
    refused(["eval", run, cache, "--json", run / "config.json"], "is this command's input")
    (tmp_path / "alias").symlink_to(run)  # the run through a link, the output by its real path
    refused(["eval", tmp_path / "alias", cache, "--sheet", best], "lies inside this command's input")
    assert {p: p.read_bytes() for p in kept} == kept
    assert not list(run.glob("eval-*.png"))  # refused before the work, not after it
    # The default sheet goes into the run folder, and so may a JSON beside it.
    res = CliRunner().invoke(cli, ["eval", str(run), str(cache), "--json", str(run / "eval.json"), "-q",
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert (run / "eval-test.png").exists() and (run / "eval.json").exists()


def test_export_refuses_its_model_as_output_and_names_that_are_not_onnx(tiny_run, tmp_path):
    from facepipe.infer.export import export_run, gray_file

    model = Path(shutil.copy(tiny_run / "checkpoints" / "best.pt", tmp_path / "model.pt"))
    before = model.read_bytes()
    refused(["export", model, "--onnx", model], "is this command's input")
    named = Path(shutil.copy(model, tmp_path / "model.onnx"))  # a checkpoint named like the export
    refused(["export", named, "--onnx", named], "is this command's input")
    for name in ("a.txt", "noext"):
        refused(["export", model, "--onnx", tmp_path / name], "should end in .onnx")
    assert model.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.pt"]
    assert gray_file("out/m.onnx") == Path("out/m-gray.onnx")  # as --help and README say: OUT-gray.onnx
    with pytest.raises(FacepipeError, match="lies inside this command's input"):
        export_run(tiny_run, tiny_run / "checkpoints" / "x.onnx")


def test_bench_refuses_its_json_over_a_model_it_times(tiny_run, tmp_path):
    model = Path(shutil.copy(tiny_run / "checkpoints" / "best.pt", tmp_path / "s2.pt"))
    before = model.read_bytes()
    refused(["bench", "--fps", "--model", model, "--json", model], "is this command's input")
    refused(["bench", "--fps", "--model", tiny_run, "--json", tiny_run / "checkpoints" / "best.pt"],
            "lies inside this command's input")
    assert model.read_bytes() == before


def test_check_landmarks_refuses_its_json_over_the_ground_truth(tmp_path):
    (tmp_path / "lm" / "faces").mkdir(parents=True)
    xml = tmp_path / "gt.xml"
    xml.write_text("<dataset><images/></dataset>")
    refused(["check-landmarks", tmp_path / "lm", xml, "--json", xml], "is this command's input")
    assert xml.read_text() == "<dataset><images/></dataset>"


def test_overwrite_guard_compares_files_not_spellings(tmp_path):
    from facepipe.util.manifest import refuse_overwriting_input

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    ck = tmp_path / "run" / "checkpoints" / "best.pt"
    ck.write_bytes(b"model")
    (tmp_path / "hard.pt").hardlink_to(ck)
    for out in (ck, tmp_path / "run" / "checkpoints" / ".." / "checkpoints" / "best.pt", tmp_path / "hard.pt"):
        with pytest.raises(FacepipeError, match="is this command's input"):
            refuse_overwriting_input(out, [None, tmp_path / "absent.h5", ck])
    with pytest.raises(FacepipeError, match="lies inside this command's input"):
        refuse_overwriting_input(tmp_path / "run" / "checkpoints" / "new.pt", [tmp_path / "run" / "checkpoints"])
    refuse_overwriting_input(tmp_path / "run" / "eval.json", [ck, None])  # beside the input: fine
    refuse_overwriting_input(None, [ck])


def _landmark_folder(root: Path, faces: list) -> Path:
    (root / "lm" / "faces").mkdir(parents=True)
    (root / "lm" / "faces" / "p.json").write_text(json.dumps({"faces": faces}))
    return root / "lm"


def _xml(path: Path, boxes: list, points: bool) -> Path:
    def box(left, top):
        parts = "".join(f"<part name='{i:02d}' x='{left + i % 10 * 4}' y='{top + i // 10 * 6}'/>" for i in range(68))
        return f"<box top='{top}' left='{left}' width='50' height='50'>{parts if points else ''}</box>"

    path.write_text(f"<dataset><images><image file='photos/p.jpg'>{''.join(box(*b) for b in boxes)}"
                    "</image></images></dataset>")
    return path


def test_check_landmarks_counts_a_face_annotated_in_two_xmls_once(tmp_path):
    from facepipe.data.landmark_eval import evaluate

    pts = lambda left, top: [[left + i % 10 * 4 + 1, top + i // 10 * 6] for i in range(68)]  # noqa: E731
    lm = _landmark_folder(tmp_path, [{"box": [10, 10, 60, 60], "lm68": pts(10, 10)},
                                     {"box": [200, 10, 250, 60], "lm68": pts(200, 10)}])
    boxes = _xml(tmp_path / "boxes.xml", [(10, 10), (200, 10)], points=False)  # dlib's training.xml
    points = _xml(tmp_path / "points.xml", [(11, 10), (200, 10)], points=True)  # ..._with_face_landmarks.xml
    for order in ([boxes, points], [points, boxes]):
        r = evaluate(lm, order)
        assert (r["annotated_faces"], r["found"], r["missed"], r["scored_faces"]) == (2, 2, 0, 2), r
        assert r["nme_mean"] is not None and r["nme_mean"] < 0.1
    # Two faces of one XML are two faces, however close their boxes.
    r = evaluate(lm, [_xml(tmp_path / "close.xml", [(10, 10), (12, 10)], points=False)])
    assert r["annotated_faces"] == 2 and r["found"] == 1


def test_cache_over_a_damaged_file_names_force_not_itself(synthetic_cache, tmp_path):
    aligned = Path(synthetic_cache).parent / "al"
    out = tmp_path / "c.h5"
    out.write_bytes(b"not hdf5")
    err = refused(["cache", aligned, out], "--force")
    assert "remake it with `facepipe cache`" not in err
    assert CliRunner().invoke(cli, ["cache", str(aligned), str(out), "--force", "-q"]).exit_code == 0


def test_bench_parse_with_no_face_parsed_fails_in_one_line(tiny_run, tmp_path):
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "p" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "p" / name).write_text("not a photo")
    err = one_line("bench", "--parse", tmp_path / "p", "--model", tiny_run, "--workers", "1", "--device", "cpu",
                   "--json", tmp_path / "b.json", "-q")
    assert "no face parsed in 2 photo(s)" in err and "2 unreadable" in err
    assert not (tmp_path / "b.json").exists()


def test_a_file_that_is_no_checkpoint_is_named_so_without_internal_codes(tiny_run, tmp_path):
    from facepipe.infer.checkpoint import load_checkpoint
    from facepipe.util.atomic import save_image

    photo = tmp_path / "face.jpg"
    save_image(photo, np.zeros((40, 40, 3), np.uint8))
    h5 = tmp_path / "cache.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    zipped = tmp_path / "w.pt"
    torch.save({"format": "facepipe-checkpoint"}, zipped)
    shutil.make_archive(str(tmp_path / "arch"), "zip", tmp_path, "face.jpg")
    for f in (photo, h5, tmp_path / "arch.zip"):
        with pytest.raises(FacepipeError) as e:
            load_checkpoint(f)
        assert str(e.value) == (f"{f} is not a facepipe checkpoint (a run folder, a .pt file written by facepipe, "
                                "or a bundled name: default, fast, accurate).")
    data = (tiny_run / "checkpoints" / "best.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(FacepipeError) as e:
        load_checkpoint(tmp_path / "cut.pt")
    msg = str(e.value)
    assert "truncated" in msg and "Errno" not in msg and msg.endswith(".") and len(msg) < 240
    assert not re.search(r"\(\d+\)", msg)
    err = one_line("eval", photo, tmp_path / "absent.h5")
    assert "is not a facepipe checkpoint (a run folder" in err and "weights_only" not in err


def test_export_help_quotes_the_int8_loss_readme_gives():
    readme = (REPO / "README.md").read_text()
    claim = "0.06-0.83 points of pixel accuracy"
    assert claim in readme
    out = CliRunner().invoke(cli, ["export", "--help"], terminal_width=200).output
    assert "0.06-0.83 points of pixel\n" in out or claim in " ".join(out.split())
    assert "0.04-0.69" not in out


def test_a_title_wider_than_its_table_stays_whole_in_a_log(capsys):
    from facepipe.util.progress import Reporter

    title = "runs/demo/cartoon-teacher/checkpoints/best.pt on test (original coordinates)"
    Reporter(quiet=False).table(title, [("F1 hair", 0.5), ("faces", 3)], ("", "score"))
    out = capsys.readouterr().out
    assert title in out.splitlines()[0], out
    assert "F1 hair" in out and "0.5" in out


def test_a_failed_atomic_write_names_the_users_path_not_the_temp_file(tmp_path, monkeypatch):
    import errno
    import os

    from facepipe.util import atomic

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src), None, str(dst))

    monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.raises(OSError) as e:
        atomic.write_text(tmp_path / "r.json", "{}")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "r.json")
    assert not list(tmp_path.iterdir())  # the temp file is gone too


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no file can be made")
def test_show_into_a_folder_that_takes_no_file_names_the_users_path(cache):
    err = one_line("show", cache, "--out", "/proc/z.png")
    assert "(/proc/z.png)" in err and ".tmp" not in err
