"""`--detector cnn` (dlib's CNN face detector) and the box alignment of faces whose landmarks are not
trusted, on scikit-image's astronaut and on faces the tests make up. The CNN runs on a 300x400 crop of
the astronaut (upsample 0 by the auto rule): about a second a call."""
import contextlib
import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from facepipe.cli import cli, main
from facepipe.data.face_detector import TRUST_MAX_DISAGREEMENT, detector, detector_args, landmarks_trusted
from facepipe.data.landmarks import LandmarksConfig, run_landmarks
from facepipe.util.atomic import save_image
from facepipe.util.errors import FacepipeError
from facepipe.util.images import load_rgb
from facepipe.util.geometry import (
    BOX_CENTER_DY_IN_IOD,
    BOX_WIDTH_IN_IOD,
    apply,
    box_matrix,
    fit_similarity,
    five_from,
    template,
)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from skimage import data

    d = tmp_path_factory.mktemp("photos")
    save_image(d / "astronaut.png", data.astronaut()[0:400, 56:356])  # her face, ~95 px: upsample 0 finds it
    save_image(d / "blank.png", np.full((120, 160, 3), 128, np.uint8))
    return d


@pytest.fixture(scope="module")
def both(photos, tmp_path_factory):
    """landmarks with hog and with cnn over the same photos: (manifest, astronaut record) per detector."""
    root = tmp_path_factory.mktemp("lm")
    out = {}
    for det in ("hog", "cnn"):
        m = run_landmarks(LandmarksConfig(src=str(photos), out=str(root / det), workers=1, detector=det))
        out[det] = (m, json.loads((root / det / "faces" / "astronaut.json").read_text()), root / det)
    return out


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_cnn_finds_the_astronaut_in_hogs_record_format(both):
    (hm, hrec, _), (cm, crec, _) = both["hog"], both["cnn"]
    assert cm["counts"]["faces"] == 1 and cm["counts"]["no_face"] == 1  # the blank has none
    assert set(crec) == set(hrec)
    hf, cf = hrec["faces"][0], crec["faces"][0]
    assert set(cf) == set(hf) | {"lm_trusted"} and "lm_trusted" not in hf  # HOG records are unchanged
    assert cf["lm_trusted"] is True and cf["score"] > 0.5
    assert len(cf["lm5"]) == 5 and len(cf["lm68"]) == 68 and len(cf["box"]) == 4
    assert all(isinstance(v, float) for v in cf["box"] + [cf["score"]] + cf["lm68"][0])
    assert _iou(cf["box"], hf["box"]) > 0.5
    # The detector is part of the config (a cnn output is never taken for a hog one), except the default
    # hog, whose config stays as it was before --detector existed.
    assert cm["config"]["detector"] == "cnn" and "detector" not in hm["config"]


def test_a_rerun_with_the_other_detector_is_refused(both, photos):
    with pytest.raises(FacepipeError, match="another config"):
        run_landmarks(LandmarksConfig(src=str(photos), out=str(both["cnn"][2]), workers=1, detector="hog"))


def test_settings_tuples():
    from facepipe.infer.parse import DETECTOR, DETECTORS

    assert detector_args("hog") == DETECTOR == DETECTORS["hog"] == (-1, 1600, 0.0)  # parse's hog config unchanged
    assert DETECTORS["cnn"] == (-1, 1600, 0.0, "cnn") and DETECTORS["hog+cnn"] == (-1, 1600, 0.0, "hog+cnn")
    assert detector((-1, 1600, 0.0, "hog")) is detector((-1, 1600, 0.0))


def test_hog_then_cnn_runs_the_cnn_only_where_hog_finds_no_face(both, photos, tmp_path, monkeypatch):
    from PIL import Image

    import facepipe.data.face_detector as lmod

    src = tmp_path / "src"
    src.mkdir()
    for f in ("astronaut.png", "blank.png"):
        (src / f).write_bytes((photos / f).read_bytes())
    # Rolled 50 degrees, the astronaut is lost to HOG but not to the CNN; its landmarks come from the
    # quarter turn (270 degrees) that leaves her 40 degrees off upright, where HOG finds her again.
    save_image(src / "rolled.png", np.asarray(Image.open(photos / "astronaut.png").rotate(50, Image.BILINEAR)))
    m = run_landmarks(LandmarksConfig(src=str(src), out=str(tmp_path / "hc"), workers=1, detector="hog+cnn"))
    rec = {f: json.loads((tmp_path / "hc" / "faces" / f"{f}.json").read_text()) for f in ("astronaut", "rolled", "blank")}
    assert rec["astronaut"]["faces"] == both["hog"][1]["faces"]  # HOG found it: HOG's record, no CNN flag
    rolled = rec["rolled"]["faces"]
    assert len(rolled) == 1 and rolled[0]["lm_trusted"] is True and rolled[0]["roll"] == 270
    assert rec["blank"]["faces"] == []
    assert m["config"]["detector"] == "hog+cnn"
    counts = m["counts"]
    assert (counts["faces"], counts["no_face"], counts["cnn_faces"], counts["box_cut"], counts["turned"]) == (2, 1, 1, 0, 1)
    assert detector(detector_args("hog"))(load_rgb(src / "rolled.png")) == []  # the premise: HOG misses it
    # Without the turn (as for a profile, which no turn makes frontal), its landmarks fail the trust rule
    # and the face is counted as cut from its box.
    monkeypatch.setattr(lmod.FaceDetector, "_turned_landmarks", lambda self, rgb, box: None)
    m = run_landmarks(LandmarksConfig(src=str(src), out=str(tmp_path / "hc-noturn"), workers=1, detector="hog+cnn"))
    face = json.loads((tmp_path / "hc-noturn" / "faces" / "rolled.json").read_text())["faces"][0]
    assert face["lm_trusted"] is False and "roll" not in face and m["counts"]["box_cut"] == 1


def test_trust_rule(both):
    f = both["cnn"][1]["faces"][0]
    box, lm5, lm68 = f["box"], np.array(f["lm5"]), np.array(f["lm68"])
    assert landmarks_trusted(box, lm5, lm68)
    w = box[2] - box[0]
    moved = lm5.copy()
    moved[0:2, 0] += 1.5 * TRUST_MAX_DISAGREEMENT * w  # the two shape models disagree about one eye
    assert not landmarks_trusted(box, moved, lm68)
    far = lm5.copy()
    far[4] = [box[2] + w, box[3] + w]  # a point far outside the box
    assert not landmarks_trusted(box, far, lm68)
    assert not landmarks_trusted(box, np.full((5, 2), np.nan), lm68)


def test_box_matrix_puts_the_box_where_landmarks_would():
    size, iod = 256, 0.22
    t = template(size, iod)
    m = box_matrix([100, 50, 300, 250], t)
    tiod = np.linalg.norm(t[1] - t[0])
    (cx, cy), = apply(m, np.array([[200.0, 150.0]]))
    assert np.allclose([cx, cy], t.mean(0) + [0, BOX_CENTER_DY_IN_IOD * tiod])
    assert np.isclose(m[0, 0] * 200, BOX_WIDTH_IN_IOD * tiod) and m[0, 1] == 0 and m[1, 0] == 0
    with pytest.raises(ValueError):
        box_matrix([10, 10, 10, 10], t)


def test_box_crop_is_close_to_the_landmark_crop_on_a_frontal_face(both):
    f = both["cnn"][1]["faces"][0]
    t = template(256, 0.22)
    by_lm = fit_similarity(five_from(np.array(f["lm68"])), t)
    by_box = box_matrix(f["box"], t)
    scale = lambda m: np.sqrt(abs(np.linalg.det(m[:2, :2])))
    assert 0.8 < scale(by_box) / scale(by_lm) < 1.25
    eyes = np.array(f["lm68"])[36:48].mean(0, keepdims=True)
    assert np.linalg.norm(apply(by_box, eyes) - apply(by_lm, eyes)) < 0.1 * 256


class _Profile:
    """A detector that reports one face whose landmarks are not trusted (made-up points)."""

    def __call__(self, rgb):
        pts = np.tile([[200.0, 120.0]], (68, 1)) + np.random.default_rng(0).normal(0, 1, (68, 2))
        return [{"box": [168.0, 69.0, 263.0, 164.0], "score": 1.0, "lm5": pts[:5].tolist(), "lm68": pts.tolist(),
                 "lm_trusted": False}]

    def kept(self, rgb, face, below):
        return True  # a CNN face: FaceDetector.kept lets it stand without a second look


def test_untrusted_face_is_cut_from_its_box_and_parsed(tmp_path, monkeypatch):
    from skimage import data

    import facepipe.infer.parse_work as pw
    from facepipe.infer.parse import Parser, parse_photos
    from facepipe.util.align_spec import AlignSpec

    monkeypatch.setattr(pw, "detector", lambda args: _Profile())
    save_image(tmp_path / "astronaut.png", data.astronaut())
    size, t = 256, template(256, 0.22)
    job = {"path": str(tmp_path / "astronaut.png"), "det_args": (-1, 1600, 0.0), "min_score": 0.2,
           "align": AlignSpec(size, 0.22)}
    r = pw.align_photo(job)
    assert r["crops"][0].shape == (size, size, 3) and r["crops"][0].any()
    assert r["heatmaps"][0].shape == (size, size) and not r["heatmaps"][0].any()  # no made-up landmarks drawn
    assert np.allclose(r["matrices"][0], box_matrix([168.0, 69.0, 263.0, 164.0], t))
    wide = pw.align_photo({**job, "align": AlignSpec(size, 0.22, box_width=1.8)})  # a model cut with --box-width
    assert np.allclose(wide["matrices"][0], box_matrix([168.0, 69.0, 263.0, 164.0], t, 1.8))
    assert np.isclose(wide["matrices"][0][0, 0] / r["matrices"][0][0, 0], 1.8 / BOX_WIDTH_IN_IOD)

    s = parse_photos(Parser.load(None, "cpu"), [tmp_path / "astronaut.png"], tmp_path / "out", workers=1)
    assert s["faces"] == 1 and s["parsed"] == 1 and s["box_cut"] == 1
    rec = json.loads((tmp_path / "out" / "astronaut.json").read_text())
    assert rec["faces"][0]["lm_trusted"] is False
    # A resumed run counts the box cuts from the records it finds, and the manifest carries the count.
    again = parse_photos(Parser.load(None, "cpu"), [tmp_path / "astronaut.png"], tmp_path / "out", workers=1)
    assert again["resumed"] == 1 and again["box_cut"] == 1
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]["box_cut"] == 1
    assert rec["pixel_counts"]["skin"] > 1000  # the face was parsed from its box crop


@contextlib.contextmanager
def _untrusted(lm):
    """The astronaut's CNN face marked as untrusted (as on a profile) in the shared landmarks folder, for
    the duration of one test."""
    rec_path = lm / "faces" / "astronaut.json"
    rec = json.loads(rec_path.read_text())
    rec["faces"][0]["lm_trusted"] = False
    rec_path.write_text(json.dumps(rec))
    try:
        yield rec
    finally:
        rec["faces"][0]["lm_trusted"] = True
        rec_path.write_text(json.dumps(rec))


def test_align_aligns_untrusted_faces_from_their_box(both, photos, tmp_path):
    from PIL import Image

    from facepipe.data.align import AlignConfig, run_align
    from facepipe.data.aligned_set import read_faces

    lm = both["cnn"][2]
    with _untrusted(lm) as rec:
        m = run_align(AlignConfig(src=str(photos), out=str(tmp_path / "al"), size=96, landmarks=str(lm), workers=1))
    assert m["counts"]["box_aligned"] == 1 and m["counts"]["faces"] == 1
    (face,) = read_faces(tmp_path / "al")
    assert face["lm_trusted"] is False and face["landmarks"] is None and not face["fitted"]
    assert np.allclose(face["matrix"], box_matrix(rec["faces"][0]["box"], template(96, 0.22)))
    assert Image.open(tmp_path / "al" / face["image"]).size == (96, 96)
    from facepipe.data.cache import _align_entry
    from facepipe.util.align_spec import AlignSpec
    assert _align_entry(m["config"], 96)["box_width"] == BOX_WIDTH_IN_IOD  # what parse will cut with
    assert AlignSpec.from_dict({"size": 96}).box_width == BOX_WIDTH_IN_IOD  # checkpoints made before the option


def test_align_box_width_reaches_the_crop_and_the_cache_manifest(both, photos, tmp_path):
    from facepipe.data.align import AlignConfig, run_align
    from facepipe.data.aligned_set import read_faces
    from facepipe.data.cache import _align_entry

    lm = both["cnn"][2]
    with _untrusted(lm) as rec:
        m = run_align(AlignConfig(src=str(photos), out=str(tmp_path / "al"), size=96, landmarks=str(lm), workers=1,
                                  box_width=1.8))
    (face,) = read_faces(tmp_path / "al")
    assert np.allclose(face["matrix"], box_matrix(rec["faces"][0]["box"], template(96, 0.22), 1.8))
    assert _align_entry(m["config"], 96)["box_width"] == 1.8


def _run(argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["facepipe", *argv])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return code, out.out + out.err


def test_cli_option_is_wired(photos, tmp_path, monkeypatch, capsys):
    for cmd in ("landmarks", "parse"):
        text = CliRunner().invoke(cli, [cmd, "--help"]).output
        assert "--detector [hog|cnn|hog+cnn]" in text and "--detector hog+cnn" in text  # the option and an example
    code, out = _run(["landmarks", str(photos), str(tmp_path / "x"), "--detector", "sift"], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in out and "'sift' is not one of 'hog', 'cnn', 'hog+cnn'" in out
    out_dir = tmp_path / "parsed"
    res = CliRunner().invoke(cli, ["parse", str(photos / "astronaut.png"), "--out", str(out_dir), "-q",
                                   "--device", "cpu", "--workers", "1", "--detector", "cnn"])
    assert res.exit_code == 0, res.output
    man = json.loads((out_dir / "manifest.json").read_text())
    assert man["config"]["detector"] == [-1, 1600, 0.0, "cnn"]
    assert json.loads((out_dir / "astronaut.json").read_text())["faces"][0]["lm_trusted"] is True


@pytest.mark.parametrize("problem", ["no model", "upsample"])
def test_problems_are_one_line_and_write_nothing(problem, photos, tmp_path, monkeypatch, capsys):
    import facepipe.data.face_detector as lmod

    args = []
    if problem == "no model":  # the shape predictors are there, the CNN's model file is not
        models = tmp_path / "models"
        models.mkdir()
        for name in ("shape_predictor_5_face_landmarks.dat", "shape_predictor_68_face_landmarks.dat"):
            (models / name).symlink_to(lmod.model_dir() / name)
        monkeypatch.setattr(lmod, "model_dir", lambda: models)
    else:
        args = ["--upsample", "2"]  # 1600 px x 4: several GB for the CNN
    for argv in (["landmarks", str(photos), str(tmp_path / "out"), "--detector", "cnn", *args],
                 ["parse", str(photos), "--out", str(tmp_path / "out"), "--detector", "cnn", "--device", "cpu", *args]):
        code, out = _run(argv, monkeypatch, capsys)
        assert code == 1 and "Traceback" not in out and len(out.strip().splitlines()) == 1, out
        assert out.startswith("error: ") and ("mmod_human_face_detector.dat" in out or "--upsample 2" in out), out
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("k", [1, 3])
def test_a_face_on_its_side_gets_its_landmarks_from_the_turn_that_makes_it_upright(photos, k):
    """The astronaut's photo turned a quarter (np.rot90 k times, no EXIF tag): HOG finds no face, the CNN
    does, and the landmark models, made for upright faces, would make up a shape. Turned back by the
    detector, the face gets the landmarks of the upright photo, moved with the turn, and says so."""
    from facepipe.data.face_detector import _rot90_points

    upright = load_rgb(photos / "astronaut.png")
    ref = detector(detector_args("hog"))(upright)[0]
    faces = detector(detector_args("hog+cnn"))(np.ascontiguousarray(np.rot90(upright, k)))
    assert len(faces) == 1
    f = faces[0]
    assert f["lm_trusted"] is True and f["roll"] == 90 * (4 - k)
    want = _rot90_points(ref["lm68"], upright.shape, k)
    iod = np.linalg.norm(np.subtract(ref["lm68"][36], ref["lm68"][45]))
    assert np.median(np.linalg.norm(np.asarray(f["lm68"]) - want, axis=1)) < 0.1 * iod


def test_an_upside_down_face_is_found_in_the_photo_turned_back_and_says_so(photos):
    """The astronaut's photo upside down (no EXIF tag): neither HOG nor the CNN finds a face that way.
    Where they found none, the photo turned by 180 degrees is searched, a face both find there is kept, and
    its landmarks come back moved with the turn; a photo with no face gets none that way either."""
    upright = load_rgb(photos / "astronaut.png")
    ref = detector(detector_args("hog"))(upright)[0]
    det = detector(detector_args("hog+cnn"))
    faces = det(np.ascontiguousarray(upright[::-1, ::-1]))
    assert len(faces) == 1 and faces[0]["roll"] == 180 and faces[0]["lm_trusted"] is True
    h, w = upright.shape[:2]
    want = np.array([w - 1, h - 1]) - np.asarray(ref["lm68"])
    iod = np.linalg.norm(np.subtract(ref["lm68"][36], ref["lm68"][45]))
    assert np.median(np.linalg.norm(np.asarray(faces[0]["lm68"]) - want, axis=1)) < 0.05 * iod
    l, t, r, b = faces[0]["box"]
    assert l < want[:, 0].mean() < r and t < want[:, 1].mean() < b
    assert det(load_rgb(photos / "blank.png")) == []
    assert detector(detector_args("hog"))(np.ascontiguousarray(upright[::-1, ::-1])) == []  # HOG alone: as before


def test_rot90_points_follow_numpy():
    from facepipe.data.face_detector import _rot90_points

    img = np.arange(15).reshape(3, 5)
    for k in (1, 2, 3):
        turned = np.rot90(img, k)
        for x, y in [(0, 0), (4, 2), (1, 2)]:
            (nx, ny), = _rot90_points([[x, y]], img.shape, k)
            assert turned[int(ny), int(nx)] == img[y, x]
            assert _rot90_points([[nx, ny]], turned.shape, -k).tolist() == [[x, y]]


def test_parse_turns_a_face_on_its_side_upright_and_says_so(photos, tmp_path):
    """parse --detector hog+cnn on the astronaut's photo turned a quarter: the face is parsed upright (its
    nose and mouth are found, which a sideways crop does not give) and its record carries the roll."""
    src = tmp_path / "p"
    save_image(src / "side.png", np.ascontiguousarray(np.rot90(load_rgb(photos / "astronaut.png"), 1)))
    res = CliRunner().invoke(cli, ["parse", str(src), "--out", str(tmp_path / "o"), "-q", "--device", "cpu",
                                   "--workers", "1", "--detector", "hog+cnn"])
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "o" / "side.json").read_text())
    assert len(rec["faces"]) == 1 and rec["faces"][0]["roll"] == 270 and rec["faces"][0]["lm_trusted"] is True
    assert "faces turned upright" not in res.output  # -q: no table; the counts are in the files
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["turned"] == 1
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["counts"]["turned"] == 1
    again = CliRunner().invoke(cli, ["parse", str(src), "--out", str(tmp_path / "o"), "--device", "cpu",
                                     "--workers", "1", "--detector", "hog+cnn"])
    assert again.exit_code == 0 and "faces turned upright" in again.output  # resumed: still counted
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["turned"] == 1
    assert rec["pixel_counts"]["nose"] > 100 and rec["pixel_counts"]["mouth"] > 50
