"""Stage `paste` (the robustness benchmark): faces kept, backgrounds replaced, layout unchanged.

Everything is drawn here: a tiny synthetic imported set (facepipe.data.synthetic) and two generated
background images; no real backgrounds are needed or used."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from facepipe.data.paste import PasteConfig, defocus, feather_sigma, run_paste, seam_radius
from facepipe.util.atomic import save_image
from facepipe.util.images import load_ids, load_rgb
from facepipe.util.photos import list_photos

HAIR, SKIN = 1, 2  # FASSEG schema: background, hair, skin, eyes, nose, mouth


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    from facepipe.data.importers import import_dataset
    from facepipe.data.synthetic import write_folder_set

    root = tmp_path_factory.mktemp("paste_src")
    raw = write_folder_set(root / "raw", n=8, test_fraction=0.5, seed=5, size=(96, 112))
    import_dataset("folder", raw, root / "imp", workers=1)
    return root / "imp"


@pytest.fixture(scope="module")
def backgrounds(tmp_path_factory):
    """Two textured 'photos' of other sizes and aspects than the faces."""
    d = tmp_path_factory.mktemp("bgs")
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:150, 0:200]
    a = np.stack([xx * 255 // 200, yy * 255 // 150, (xx + yy) % 256], -1).astype(np.uint8)
    save_image(d / "grad.png", a)
    save_image(d / "noise.jpg", rng.integers(0, 256, (90, 300, 3), dtype=np.uint8))
    return d


def _paste(imported, backgrounds, out, **kw):
    return run_paste(PasteConfig(src=str(imported), backgrounds=str(backgrounds), out=str(out), workers=1, **kw))


def _items(folder):
    return [json.loads(l) for l in (Path(folder) / "items.jsonl").read_text().splitlines() if l.strip()]


def _bands(lab: np.ndarray, mask: np.ndarray):
    """(inside, outside) of `mask`, each farther than the seam from its edge."""
    r = seam_radius(feather_sigma(*lab.shape, 0.006)) + 1
    inside = mask & ~binary_dilation(~mask, iterations=r)
    outside = ~mask & ~binary_dilation(mask, iterations=r)
    return inside, outside


@pytest.fixture(scope="module")
def pasted(imported, backgrounds, tmp_path_factory):
    out = tmp_path_factory.mktemp("pasted") / "out"
    _paste(imported, backgrounds, out)
    return out


def test_layout_labels_and_splits_match_the_source(imported, pasted):
    m = json.loads((pasted / "manifest.json").read_text())
    assert m["stage"] == "paste" and m["variant"] == "pasted" and not (pasted / ".inprogress.json").exists()
    assert m["inputs"]["src"]["manifest_sha256"] and len(m["inputs"]["backgrounds"]["files"]) == 2
    src_splits = json.loads((imported / "splits.json").read_text())
    assert json.loads((pasted / "splits.json").read_text()) == {"test": src_splits["test"]}
    assert (pasted / "schema.json").read_text() == (imported / "schema.json").read_text()
    src = {r["id"]: r for r in _items(imported)}
    recs = _items(pasted)
    assert [r["id"] for r in recs] == src_splits["test"] and m["counts"]["images"] == len(recs) == 4
    for r in recs:
        assert (pasted / r["label"]).read_bytes() == (imported / src[r["id"]]["label"]).read_bytes()
        assert (pasted / r["landmarks"]).read_bytes() == (imported / src[r["id"]]["landmarks"]).read_bytes()
        assert (r["width"], r["height"]) == (src[r["id"]]["width"], src[r["id"]]["height"])
    # The rest of the chain reads it as an imported set.
    photos, man = list_photos(pasted)
    assert man["stage"] == "paste" and all(p.label and p.split == "test" for p in photos)


def test_pasted_keeps_the_face_and_replaces_the_background(imported, pasted):
    src = {r["id"]: r for r in _items(imported)}
    for r in _items(pasted):
        lab = load_ids(pasted / r["label"])
        a, b = load_rgb(imported / src[r["id"]]["image"]), load_rgb(pasted / r["image"])
        inside, outside = _bands(lab, lab != 0)
        assert inside.sum() > 100 and outside.sum() > 100
        assert np.array_equal(a[inside], b[inside])
        changed = np.any(a != b, axis=-1)
        assert changed[outside].mean() > 0.9


def test_plain_is_a_byte_copy(imported, backgrounds, tmp_path):
    _paste(imported, backgrounds, tmp_path / "plain", variant="plain")
    src = {r["id"]: r for r in _items(imported)}
    for r in _items(tmp_path / "plain"):
        assert (tmp_path / "plain" / r["image"]).read_bytes() == (imported / src[r["id"]]["image"]).read_bytes()


def test_gray_has_equal_channels(imported, backgrounds, pasted, tmp_path):
    _paste(imported, backgrounds, tmp_path / "gray", variant="gray")
    for r in _items(tmp_path / "gray"):
        g = load_rgb(tmp_path / "gray" / r["image"])
        assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 0], g[..., 2])
        assert g.std() > 5  # not a blank image
        assert (tmp_path / "gray" / r["label"]).read_bytes() == (pasted / r["label"]).read_bytes()


def test_sepia_is_the_gray_photo_on_a_brown_ramp(imported, backgrounds, pasted, tmp_path):
    _paste(imported, backgrounds, tmp_path / "sepia", variant="sepia")
    _paste(imported, backgrounds, tmp_path / "gray", variant="gray")
    for r in _items(tmp_path / "sepia"):
        s = load_rgb(tmp_path / "sepia" / r["image"]).astype(int)
        g = load_rgb(tmp_path / "gray" / r["image"])[..., 0].astype(int)
        assert (s[..., 0] >= s[..., 1]).all() and (s[..., 1] >= s[..., 2]).all()  # brown, one hue
        assert (s[..., 0] > s[..., 2]).mean() > 0.5  # toned, not gray
        assert np.abs(s[..., 1] - g).max() <= 1  # green carries the luma (gamma 1)
        assert (tmp_path / "sepia" / r["label"]).read_bytes() == (pasted / r["label"]).read_bytes()


def test_hair_changes_only_hair(imported, backgrounds, pasted, tmp_path):
    _paste(imported, backgrounds, tmp_path / "hair", variant="hair")
    recs = _items(tmp_path / "hair")
    assert all(r["hair_colour"] in ("blonde", "grey", "red") for r in recs)
    for r in recs:
        lab = load_ids(pasted / r["label"])
        h, p = load_rgb(tmp_path / "hair" / r["image"]), load_rgb(pasted / r["image"])
        hair_core, not_hair = _bands(lab, lab == HAIR)
        diff = np.any(h != p, axis=-1)
        # Same seed, same background: the variants differ in the hair (and its seam) alone.
        assert not diff[not_hair].any()
        assert diff[hair_core].mean() > 0.9



def test_hair_backdrop_takes_the_hair_s_colours_and_keeps_the_face(imported, backgrounds, pasted, tmp_path):
    """The background recoloured to the face's hair: away from the seam its mean colour is the hair's (to
    a few grey levels: clipping at 0 and 255), and the face is the pasted variant's, pixel for pixel."""
    _paste(imported, backgrounds, tmp_path / "hb", variant="hair-backdrop")
    for r in _items(tmp_path / "hb"):
        lab = load_ids(tmp_path / "hb" / r["label"])
        b, p = load_rgb(tmp_path / "hb" / r["image"]), load_rgb(pasted / r["image"])
        inside, outside = _bands(lab, lab != 0)
        assert np.array_equal(b[inside], p[inside])
        hair = load_rgb(r["source"])[lab == HAIR]
        assert len(hair) >= 100  # the synthetic faces all have hair: the rule is exercised, not skipped
        assert np.abs(b[outside].mean(0) - hair.mean(0)).max() < 4


def test_bald_draws_a_scalp_labelled_skin_and_changes_nothing_else(imported, backgrounds, pasted, tmp_path):
    """The hair above the eyes becomes a scalp labelled skin (or backdrop around it); eyes, nose and mouth
    keep their labels; away from the changed pixels the photo is the pasted variant's, pixel for pixel."""
    _paste(imported, backgrounds, tmp_path / "bald", variant="bald")
    made = 0
    for r in _items(tmp_path / "bald"):
        src, lab = load_ids(pasted / r["label"]), load_ids(tmp_path / "bald" / r["label"])
        changed = src != lab
        assert set(np.unique(src[changed])) <= {0, HAIR} and set(np.unique(lab[changed])) <= {0, SKIN}
        assert np.array_equal(src[src >= 3], lab[src >= 3])  # the parts
        scalp = changed & (lab == SKIN)
        if scalp.sum() < 50:
            continue
        made += 1
        b, p = load_rgb(tmp_path / "bald" / r["image"]), load_rgb(pasted / r["image"])
        kept, _ = _bands(lab, (lab != 0) & ~binary_dilation(changed, iterations=3))
        assert np.array_equal(b[kept], p[kept])
        skin = load_rgb(r["source"])[src == SKIN].astype(float).mean(0)
        assert np.abs(b[scalp].astype(float).mean(0) - skin).max() < 0.35 * skin.max()
    assert made >= 2  # the synthetic faces have hair above their eyes: the variant is exercised


def test_hair_gray_is_the_hair_photo_in_grayscale(imported, backgrounds, tmp_path):
    _paste(imported, backgrounds, tmp_path / "hair", variant="hair")
    m = _paste(imported, backgrounds, tmp_path / "hg", variant="hair-gray")
    colours = {r["id"]: r["hair_colour"] for r in _items(tmp_path / "hair")}
    recs = _items(tmp_path / "hg")
    assert {r["id"]: r["hair_colour"] for r in recs} == colours  # the same draw as the hair variant
    assert sum(v for k, v in m["counts"].items() if k.startswith("hair_")) == len(recs)
    for r in recs:
        g = load_rgb(tmp_path / "hg" / r["image"]).astype(int)
        assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 0], g[..., 2])
        h = load_rgb(tmp_path / "hair" / r["image"]) @ np.array([0.299, 0.587, 0.114])
        assert np.abs(g[..., 0] - h).max() <= 1  # the luma of the recoloured photo

def test_deterministic_and_rerun_is_a_no_op(imported, backgrounds, tmp_path):
    for name in ("a", "b"):
        _paste(imported, backgrounds, tmp_path / name, variant="hair", seed=7)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                   if p.is_file() and p.name != "manifest.json")
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*")
                           if p.is_file() and p.name != "manifest.json")
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    # Another seed picks other backgrounds: the seed is really used.
    _paste(imported, backgrounds, tmp_path / "c", variant="pasted", seed=8)
    _paste(imported, backgrounds, tmp_path / "d", variant="pasted", seed=7)
    assert any((tmp_path / "c" / f).read_bytes() != (tmp_path / "d" / f).read_bytes()
               for f in files if str(f).startswith("images/"))

    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*") if p.is_file()}
    m = _paste(imported, backgrounds, tmp_path / "a", variant="hair", seed=7)
    assert m == json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*") if p.is_file()}


def test_empty_backgrounds_is_one_line_and_writes_nothing(imported, tmp_path):
    (tmp_path / "empty").mkdir()
    p = subprocess.run([sys.executable, "-m", "facepipe", "paste", str(imported), str(tmp_path / "empty"),
                        str(tmp_path / "out"), "-q"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert "no background photos" in p.stderr
    assert not (tmp_path / "out").exists()


def test_chain_aligns_the_pasted_set(pasted, tmp_path):
    from facepipe.data.align import AlignConfig, run_align

    m = run_align(AlignConfig(src=str(pasted), out=str(tmp_path / "al"), size=64, landmarks="dataset", workers=1))
    assert m["counts"]["faces"] == 4 and m["counts"]["labelled"] == 4



def _points(path) -> np.ndarray:
    v = Path(path).read_text().split()
    return np.array(v[1:], float).reshape(int(v[0]), 2)


def test_margin_widens_the_photo_with_background_and_shifts_labels_and_landmarks(imported, backgrounds, pasted,
                                                                                 tmp_path):
    """--margin 0.5: the photo twice as tall and wide, the source pixels (away from the seam) in the middle
    as in the pasted variant, background labels around them, landmarks moved with the pixels."""
    _paste(imported, backgrounds, tmp_path / "w", margin=0.5)
    src = {r["id"]: r for r in _items(pasted)}
    for r in _items(tmp_path / "w"):
        s = src[r["id"]]
        h, w = s["height"], s["width"]
        dy, dx = round(0.5 * h), round(0.5 * w)
        assert (r["height"], r["width"]) == (h + 2 * dy, w + 2 * dx)
        lab, small = load_ids(tmp_path / "w" / r["label"]), load_ids(pasted / s["label"])
        assert lab.shape == (h + 2 * dy, w + 2 * dx) and np.array_equal(lab[dy:dy + h, dx:dx + w], small)
        ring = np.ones(lab.shape, bool)
        ring[dy:dy + h, dx:dx + w] = False
        assert (lab[ring] == 0).all()
        inside, _ = _bands(small, small != 0)
        big = load_rgb(tmp_path / "w" / r["image"])
        assert np.array_equal(big[dy:dy + h, dx:dx + w][inside], load_rgb(pasted / s["image"])[inside])
        assert big[ring].std() > 5  # background photo, not black padding
        assert np.allclose(_points(tmp_path / "w" / r["landmarks"]), _points(pasted / s["landmarks"]) + [dx, dy],
                           atol=1e-3)


def test_tight_cuts_a_square_around_the_face_with_its_labels_and_landmarks(imported, backgrounds, tmp_path):
    """--variant tight: a square cut of the source photo (pixels, labels and landmarks alike) holding every
    pixel of the face (skin and parts; hair may be cut), 1.2 times the face box's longer side unless the
    photo is smaller, and nothing pasted."""
    _paste(imported, backgrounds, tmp_path / "t", variant="tight")
    src = {p.id: p for p in list_photos(imported)[0]}
    for r in _items(tmp_path / "t"):
        p = src[r["id"]]
        x0, y0, x1, y1 = r["box"]
        big_rgb, big_lab = load_rgb(p.path), load_ids(p.label)
        lab, rgb = load_ids(tmp_path / "t" / r["label"]), load_rgb(tmp_path / "t" / r["image"])
        assert x1 - x0 == y1 - y0 == r["height"] == r["width"] and "background" not in r
        assert np.array_equal(lab, big_lab[y0:y1, x0:x1]) and np.array_equal(rgb, big_rgb[y0:y1, x0:x1])
        face = (big_lab != 0) & (big_lab != HAIR)
        assert face[y0:y1, x0:x1].sum() == face.sum()  # the whole face is in
        ys, xs = np.nonzero(face)
        side = max(np.ptp(ys) + 1, np.ptp(xs) + 1)
        assert x1 - x0 == min(round(1.2 * side), *big_lab.shape)
        assert np.allclose(_points(tmp_path / "t" / r["landmarks"]), _points(p.landmarks) - [x0, y0], atol=1e-3)


def test_defocus_blurs_the_background_only(imported, backgrounds, pasted, tmp_path):
    """--defocus: the face (away from the seam) as in the pasted variant, on the same background draw;
    the blur itself smooths a textured background and keeps its mean."""
    m = _paste(imported, backgrounds, tmp_path / "soft", defocus=0.02)
    assert m["config"]["defocus"] == 0.02
    # Recorded only when on: a folder pasted before the option existed resumes rather than being refused.
    assert "defocus" not in json.loads((pasted / "manifest.json").read_text())["config"]
    src = {r["id"]: r for r in _items(pasted)}
    for r in _items(tmp_path / "soft"):
        lab = load_ids(tmp_path / "soft" / r["label"])
        a, b = load_rgb(pasted / src[r["id"]]["image"]), load_rgb(tmp_path / "soft" / r["image"])
        inside, _ = _bands(lab, lab != 0)
        assert np.array_equal(a[inside], b[inside])
        assert r["background"] == src[r["id"]]["background"]
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    soft = defocus(noise, 3.0)
    assert soft.dtype == np.uint8 and soft.std() < 0.2 * noise.std()
    assert abs(soft.astype(float).mean() - noise.astype(float).mean()) < 1.0


def test_margin_with_plain_or_out_of_range_is_one_line(imported, backgrounds, tmp_path):
    for args, said in ((["--variant", "plain", "--margin", "0.5"], "--variant plain pastes none"),
                       (["--variant", "plain", "--defocus", "0.01"], "--variant plain pastes none"),
                       (["--variant", "tight", "--margin", "0.5"], "--variant tight pastes none"),
                       (["--defocus", "0.2"], "--defocus"),
                       (["--margin", "3"], "--margin")):
        p = subprocess.run([sys.executable, "-m", "facepipe", "paste", str(imported), str(backgrounds),
                            str(tmp_path / "out"), "-q", *args], capture_output=True, text=True, timeout=120)
        assert p.returncode != 0 and "Traceback" not in p.stderr and said in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 or "Usage" in p.stderr
        assert not (tmp_path / "out").exists()
