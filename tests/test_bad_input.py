"""Bad input, fuzzed with hypothesis: every importer and `parse` fed random bytes, truncated PNG/JPEG,
odd modes and sizes, decompression-bomb headers, hostile file names and symlinks, broken split files and
labels outside the palette. Each must import/parse, count a skip, or stop with one FacepipeError line:
never another exception, a hang (alarm), a write outside OUT or SRC changes.

The number of examples each test really ran is written to .pytest_cache (key facepipe/fuzz_examples)
and to $FACEPIPE_FUZZ_COUNTS when set; docs/reliability.md quotes it."""
from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import zlib
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_importers import make_celeba, make_fasseg_v2, make_helen, make_lapa, make_lfw, photo, save

from facepipe.data.importers import import_dataset
from facepipe.util.errors import BadImage, FacepipeError
from facepipe.util.images import load_ids, load_rgb, load_rgb_raw
from facepipe.util.schema import LabelSchema

REPO = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
EXAMPLES: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def _write_counts(request):
    yield
    counts = dict(EXAMPLES)
    if hasattr(request.config, "cache"):
        old = request.config.cache.get("facepipe/fuzz_examples", {})
        request.config.cache.set("facepipe/fuzz_examples", {**old, **counts})
    if os.environ.get("FACEPIPE_FUZZ_COUNTS"):
        Path(os.environ["FACEPIPE_FUZZ_COUNTS"]).write_text(json.dumps(counts, indent=1))


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (pytest-timeout is not a dependency)."""
    def boom(*_):
        raise TimeoutError(f"took more than {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------- bad image bytes

def png_claiming(w: int, h: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


# mode -> formats Pillow can write it in
MODES = {"L": ("PNG", "JPEG"), "LA": ("PNG",), "P": ("PNG", "GIF"), "I;16": ("PNG", "TIFF"), "CMYK": ("JPEG", "TIFF"),
         "RGBA": ("PNG", "TIFF"), "RGB": ("PNG", "JPEG", "BMP"), "1": ("PNG", "BMP"), "F": ("TIFF",), "I": ("TIFF",)}


def encode(mode: str, fmt: str, w: int, h: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    elif mode == "F":
        im = Image.fromarray(rng.random((h, w), dtype=np.float32))
    elif mode == "I":
        im = Image.fromarray(rng.integers(-5, 70000, (h, w), dtype=np.int32))
    else:
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


@st.composite
def bad_image(draw) -> bytes:
    kind = draw(st.sampled_from(["random", "truncated", "mode", "bomb", "mode", "truncated"]))
    if kind == "random":
        return draw(st.binary(max_size=2048))
    if kind == "bomb":
        return png_claiming(draw(st.integers(20_000, 100_000)), draw(st.integers(20_000, 100_000)))
    mode = draw(st.sampled_from(sorted(MODES)))
    data = encode(mode, draw(st.sampled_from(MODES[mode])), draw(st.integers(1, 70)), draw(st.integers(1, 70)),
                  draw(st.integers(0, 1000)))
    if kind == "truncated":
        data = data[: draw(st.integers(0, len(data) - 1))]
    return data


@pytest.mark.slow  # hypothesis
@FUZZ
@given(data=bad_image(), reader=st.sampled_from([load_rgb, load_rgb_raw, load_ids]))
def test_image_readers_give_an_array_or_bad_image(data, reader):
    EXAMPLES["image_readers"] += 1
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.png"
        p.write_bytes(data)
        with deadline(20):
            try:
                a = reader(p)
            except BadImage as e:
                assert "\n" not in str(e) and str(e).startswith("x.png: ")
                return
        assert a.dtype == np.uint8 and (a.ndim == 2 if reader is load_ids else a.shape[2:] == (3,))


def test_pillow_bomb_limit_applies():
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "bomb.png"
        p.write_bytes(png_claiming(100_000, 100_000))
        with pytest.raises(BadImage, match="too large|larger than"):
            load_rgb(p)


# ---------------------------------------------------------------- importers

def make_folder(root: Path) -> dict:
    LabelSchema(name="mine", classes=("background", "face", "hair"),
                colors=((0, 0, 0), (255, 200, 150), (90, 60, 30))).save(root / "schema.json")
    for k, stem in enumerate(("a", "b", "c")):
        save(root / "images" / f"{stem}.png", photo(k))
        save(root / "labels" / f"{stem}.png", np.full((24, 32), k % 3, np.uint8), "L")
    (root / "splits.json").write_text(json.dumps({"train": ["a", "b"], "test": ["c"]}))
    return {}


# format -> (maker, photo file, label file, split file) relative to SRC
LAYOUTS = {
    "fasseg": (make_fasseg_v2, "V2/Train_RGB/1.png", "V2/Train_Labels/1.png", None),
    "helen": (make_helen, "images/100032540_1.jpg", "labels/100032540_1/100032540_1_lbl00.png", "exemplars.txt"),
    "lfw-pl": (make_lfw, "lfw_funneled/Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
               "parts_lfw_funneled_gt_images/Aaron_Peirsol_0001.ppm", "parts_train.txt"),
    "celebamask-hq": (make_celeba, "CelebA-HQ-img/0.jpg", "CelebAMask-HQ-mask-anno/0/00000_skin.png",
                      "CelebA-HQ-to-CelebA-mapping.txt"),
    "lapa": (make_lapa, "train/images/10405424_2.jpg", "train/labels/10405424_2.png", "train/landmarks/10405424_2.txt"),
    "folder": (make_folder, "images/a.png", "labels/a.png", "splits.json"),
}


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(root.rglob("*")) if not p.is_dir() or p.is_symlink()}


def check_import(fmt: str, root: Path, src: Path):
    """Run the import; any outcome but success or one FacepipeError line fails. Returns the manifest or None."""
    outside = root / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "keep.txt").write_text("untouched")
    before_src, before_out = tree(src), tree(outside)
    out = root / "out"
    with deadline(60):
        try:
            m = import_dataset(fmt, src, out, workers=1, max_bad=0.99)
        except FacepipeError as e:
            assert "\n" not in str(e), str(e)
            m = None
    assert tree(src) == before_src, "the import wrote into SRC"
    assert tree(outside) == before_out
    assert {p.name for p in root.iterdir()} <= {"outside", "out", src.name}, "something was written beside OUT"
    if m is not None:
        for p in out.rglob("*"):
            assert os.path.realpath(p).startswith(os.path.realpath(out)), p
        recs = [json.loads(l) for l in (out / "items.jsonl").read_text().splitlines()]
        assert m["counts"]["images"] == len(recs) and m["counts"]["skipped"] == len(m["skipped"])
        for r in recs:
            assert (out / r["image"]).is_file() and (not r.get("label") or (out / r["label"]).is_file())
    return m


@pytest.mark.parametrize("fmt", list(LAYOUTS))
@pytest.mark.slow  # hypothesis
@FUZZ
@given(data=bad_image(), slot=st.sampled_from(["photo", "label"]))
def test_importer_survives_a_bad_photo_or_label(fmt, data, slot):
    EXAMPLES[f"import_{fmt}"] += 1
    maker, photo_rel, label_rel, _ = LAYOUTS[fmt]
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        src = root / "src"
        maker(src)
        n_items = len(__import__("facepipe.data.importers", fromlist=["get_format"]).get_format(fmt).items(src))
        (src / (photo_rel if slot == "photo" else label_rel)).write_bytes(data)
        m = check_import(fmt, root, src)
        assert m is not None, "one bad file out of several must be skipped, not fail the import"
        assert m["counts"]["images"] + m["counts"]["skipped"] == n_items


@pytest.mark.parametrize("fmt", [f for f in LAYOUTS if LAYOUTS[f][3]])
@pytest.mark.slow  # hypothesis
@FUZZ
@given(data=st.one_of(st.binary(max_size=600), st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))))
@example(data=b"INF")  # a LaPa landmark count of infinity once escaped as an OverflowError
def test_importer_survives_a_broken_split_or_landmark_file(fmt, data):
    EXAMPLES[f"split_file_{fmt}"] += 1
    maker, _, _, split_rel = LAYOUTS[fmt]
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        maker(root / "src")
        (root / "src" / split_rel).write_bytes(data)
        check_import(fmt, root, root / "src")


@pytest.mark.slow  # hypothesis
@FUZZ
@given(colours=st.lists(st.tuples(*[st.integers(0, 255)] * 3), min_size=1, max_size=6),
       fmt=st.sampled_from(["fasseg", "lfw-pl", "folder", "lapa"]))
def test_label_colours_outside_the_palette(colours, fmt):
    EXAMPLES["label_colours"] += 1
    maker, _, label_rel, _ = LAYOUTS[fmt]
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        src = root / "src"
        maker(src)
        lab = src / label_rel
        h, w = np.asarray(Image.open(lab)).shape[:2]
        pal = np.array(colours, np.uint8)
        rgb = pal[np.arange(h * w).reshape(h, w) % len(pal)]
        Image.fromarray(rgb if fmt in ("fasseg", "lfw-pl") else rgb[..., 0]).save(lab, format="PNG" if lab.suffix
                                                                                  != ".ppm" else "PPM")
        m = check_import(fmt, root, src)
        assert m is not None
        skipped = {s["id"] for s in m["skipped"]}
        if fmt in ("folder", "lapa") and (rgb[..., 0] != 255).any() and (rgb[..., 0] >= (3 if fmt == "folder" else 11)).any():
            assert skipped, "ids outside the schema must be refused"


# ---------------------------------------------------------------- hostile names and links

HOSTILE = ["with space", "ünïcødé 😀", "..", "...", "-rf", "new\nline", "semi;colon$(x)", "back\\slash",
           os.fsdecode(b"latin1 \xe9\xff"), "a" * 240, "é" * 125, "x" * 10 + "%s%n", "CON", " lead"]


def save_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    """Like test_importers.save, with the format given: a stem such as ".." hides the suffix from PIL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8), mode).save(path, format="PNG")
    return path


def hostile_tree(root: Path, names: list[str], links: list[str], with_labels: bool) -> tuple[Path, int]:
    """SRC in the folder format with hostile stems and links; returns (src, regular images listed)."""
    src = root / "src"
    make_folder(src)
    outside = root / "outside"
    outside.mkdir(exist_ok=True)
    save(outside / "real.png", photo(9))
    n = 3
    for k, stem in enumerate(names):
        if (src / "images" / f"{stem}.png").exists():
            continue  # a stem of make_folder's own photos (hypothesis found "a"): overwriting adds no image
        try:
            save_png(src / "images" / f"{stem}.png", photo(20 + k))
            if with_labels:
                save_png(src / "labels" / f"{stem}.png", np.zeros((24, 32), np.uint8), "L")
            n += 1
        except OSError:  # a name this filesystem refuses
            pass
    for kind in links:
        p = src / "images" / f"link_{kind}.png"
        if kind == "outside":
            p.symlink_to(outside / "real.png")
            n += 1
        elif kind == "devzero":
            p.symlink_to("/dev/zero")
        elif kind == "fifo":
            os.mkfifo(p)
        elif kind == "dangling":
            p.symlink_to(root / "nowhere.png")
        elif kind == "dir":
            p.mkdir()
    return src, n


@pytest.mark.slow  # hypothesis
@FUZZ
@given(names=st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(min_size=1, max_size=40).filter(
           lambda t: "/" not in t and "\0" not in t)), max_size=4, unique=True),
       links=st.lists(st.sampled_from(["outside", "devzero", "fifo", "dangling", "dir"]), max_size=5, unique=True),
       labels=st.booleans())
def test_folder_import_with_hostile_names_and_links(names, links, labels):
    EXAMPLES["hostile_names_import"] += 1
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        src, n = hostile_tree(root, names, links, labels)
        m = check_import("folder", root, src)
        if m is not None:
            assert m["counts"]["images"] + m["counts"]["skipped"] == n


@pytest.fixture(scope="module")
def parser():
    from facepipe.infer.parse import Parser

    return Parser.load(None, "cpu")


@pytest.mark.slow  # hypothesis
@FUZZ
@given(names=st.lists(st.sampled_from(HOSTILE), max_size=3, unique=True),
       links=st.lists(st.sampled_from(["outside", "devzero", "fifo", "dangling", "dir"]), max_size=5, unique=True),
       bad=st.lists(bad_image(), max_size=3))
def test_parse_with_bad_photos_hostile_names_and_links(parser, names, links, bad):
    from facepipe.infer.parse import collect_photos, parse_photos

    EXAMPLES["parse"] += 1
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        src, _ = hostile_tree(root, names, links, False)
        for k, data in enumerate(bad):
            (src / "images" / f"bad{k}.jpg").write_bytes(data)
        # Two photos with the same stem in different folders must not overwrite each other's outputs.
        save(src / "images" / "sub" / "a.png", photo(5))
        photos = collect_photos([src / "images"])
        out = root / "out"
        before, before_outside = tree(src), tree(root / "outside")
        with deadline(120):
            s = parse_photos(parser, photos, out, batch_size=4)
        # Links out of SRC are followed for reading (a folder of links picks a subset); never written through.
        assert tree(src) == before and tree(root / "outside") == before_outside
        assert s["photos"] == len(photos) == s["parsed"] + len(s["no_face"]) + len(s["unreadable"])
        jsons = [p for p in out.iterdir() if p.suffix == ".json" and p.name not in ("summary.json", "manifest.json")]
        assert len(jsons) == s["parsed"] + len(s["no_face"]), "a photo's outputs were overwritten"
        assert {p.name for p in root.iterdir()} == {"src", "out", "outside"}


def test_fifo_and_dev_zero_where_files_are_expected_do_not_hang(tmp_path):
    src = tmp_path / "fasseg"
    make_fasseg_v2(src)
    os.mkfifo(src / "V2" / "Train_RGB" / "9.png")  # fasseg lists every file under Train_RGB
    save(src / "V2" / "Train_Labels" / "9.png", np.zeros((24, 32, 3), np.uint8))
    with deadline(60):
        m = import_dataset("fasseg", src, tmp_path / "o1", workers=1, max_bad=0.5)
    assert "not a regular file" in m["skipped"][0]["reason"]
    folder = tmp_path / "folder"
    make_folder(folder)
    (folder / "landmarks").mkdir()
    (folder / "landmarks" / "a.txt").symlink_to("/dev/zero")
    os.mkfifo(folder / "train.txt")
    (folder / "splits.json").unlink()
    with deadline(60), pytest.raises(FacepipeError, match="not a regular file"):
        import_dataset("folder", folder, tmp_path / "o2", workers=1)


# ---------------------------------------------------------------- through the real CLI

def test_cli_import_and_parse_of_hostile_input_print_no_traceback(tmp_path):
    src, _ = hostile_tree(tmp_path, [os.fsdecode(b"bad \xff"), "ünï cødé"], ["outside", "fifo", "devzero"], True)
    (src / "images" / (os.fsdecode(b"bad \xff") + ".png")).write_bytes(b"\x89PNG\r\n\x1a\n cut")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for args in (["import", "folder", src, tmp_path / "out", "--workers", "1", "--max-bad", "0.5"],
                 ["parse", src / "images", "--out", tmp_path / "parsed", "--device", "cpu"]):
        r = subprocess.run([sys.executable, "-m", "facepipe", *map(str, args)], cwd=REPO, env=env,
                           capture_output=True, timeout=180)
        err = r.stderr.decode("utf-8", "replace")
        assert "Traceback" not in err, err
        if args[0] == "parse":  # no photo holds a face: named one by one, then one error line, exit 1
            assert r.returncode == 1 and err.count("error:") == 1 and "not an image" in err, err
        else:
            assert r.returncode == 0, err
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["counts"]["skipped"] == 1 and m["counts"]["images"] == 5


@pytest.mark.parametrize("text", ["INF 1 2", "-inf", "nan 1 2", "-2 1 2 3 4", "2.5 1 2 3 4", "1e400 1 2"])
def test_landmark_count_that_is_not_a_count_is_an_unreadable_file(tmp_path, text):
    from facepipe.util.errors import BadImage
    from facepipe.util.landmark_txt import read_landmark_txt

    (tmp_path / "a.txt").write_text(text)
    with pytest.raises(BadImage, match="unreadable landmark file"):
        read_landmark_txt(tmp_path / "a.txt")
    (tmp_path / "b.txt").write_text("2 1 2 3 4.5")
    assert read_landmark_txt(tmp_path / "b.txt").tolist() == [[1, 2], [3, 4.5]]
