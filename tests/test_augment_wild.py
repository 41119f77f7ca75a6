"""The wild recipe: faces on other backgrounds, hair recoloured, grayscale; labels change only where a
scalp is made bald."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from facepipe.data.backgrounds import BackgroundsConfig, gather, run_backgrounds
from facepipe.data.bald import bald_scalps
from facepipe.data.face_cache import MEAN, STD
from facepipe.learn.augment import (
    BASIC,
    NONE,
    WILD,
    augment,
    recipe_config,
    saw_grayscale,
    training_recipe,
)
from facepipe.learn.background_bank import BackgroundBank, load_bank
from facepipe.util.errors import FacepipeError
from facepipe.util.schema import FASSEG

PERM = torch.as_tensor(FASSEG.flip_permutation().astype(np.int64))
BG, HAIR, SKIN, EYES = 0, FASSEG.index("hair"), FASSEG.index("skin"), FASSEG.index("eyes")
# Only the wild parts: no flip, no geometry, no brightness, so pixels can be compared one for one.
ONLY = replace(NONE, paste=0, hair=0, gray=0, hue=0, saturation=0, shadow=0, blur=0, noise=0, jpeg=0)


def face_batch(n=4, s=32):
    """A skin disc with a hair cap on a flat grey wall, the wall being class 0."""
    yy, xx = np.mgrid[:s, :s]
    y = np.zeros((s, s), np.int64)
    disc = (yy - s / 2) ** 2 + (xx - s / 2) ** 2 < (s / 3) ** 2
    y[disc] = SKIN
    y[disc & (yy < s / 2 - 3)] = HAIR
    rgb = np.full((s, s, 3), 128.0)
    rgb[y == SKIN] = (220, 170, 140)
    rgb[y == HAIR] = (30, 20, 15)
    x = torch.from_numpy(((rgb - MEAN) / STD).astype(np.float32)).permute(2, 0, 1)
    x = torch.cat([x, torch.zeros(1, s, s)])[None].repeat(n, 1, 1, 1)
    return x, torch.from_numpy(y)[None].repeat(n, 1, 1)


def rgb(x):
    return (x[:, :3].permute(0, 2, 3, 1) * torch.as_tensor(STD) + torch.as_tensor(MEAN)).numpy()


def bank(s=32):
    g = torch.Generator().manual_seed(0)
    return BackgroundBank((torch.rand(6, 3, s, s, generator=g) * 255).to(torch.uint8))


def interior(y, cls, margin=5):
    """Pixels of `cls` farther than `margin` from any other class (beyond the feathered seam)."""
    m = (y == cls).float()[:, None]
    k = 2 * margin + 1
    return (-torch.nn.functional.max_pool2d(-m, k, 1, margin) > 0)[:, 0]


def test_paste_replaces_the_background_and_keeps_face_and_labels():
    x, y = face_batch()
    xo, yo = augment(x, y, PERM, replace(ONLY, paste=1.0), torch.Generator().manual_seed(0), bank=bank(),
                     ids=(BG, (HAIR,)))
    assert torch.equal(yo, y)
    a, b = rgb(x), rgb(xo)
    face = interior(y, SKIN).numpy()
    assert np.abs(a[face] - b[face]).max() < 1e-3
    wall = interior(y, BG).numpy()
    assert np.abs(a[wall] - b[wall]).mean() > 20  # the flat grey wall is gone
    assert b[wall].std() > 10  # replaced by the (random) photo, not by another flat colour
    # Without a bank, the wall stays (and the rest of the recipe still runs).
    xn, _ = augment(x, y, PERM, replace(ONLY, paste=1.0), torch.Generator().manual_seed(0), ids=(BG, (HAIR,)))
    assert torch.allclose(xn, x, atol=1e-5)


def test_hair_coloured_backdrop_takes_the_hair_s_colours_and_leaves_the_rest_of_the_draws_alone():
    """hairbg: the pasted photo's colours moved to the face's hair (flat dark brown here, so the wall becomes
    that brown); the face and labels are those of the same paste without it, draw for draw."""
    x, y = face_batch()
    def run(p):
        return augment(x, y, PERM, replace(ONLY, paste=1.0, hairbg=p), torch.Generator().manual_seed(0),
                       bank=bank(), ids=(BG, (HAIR,)))
    (plain, yp), (coloured, yc) = run(0.0), run(1.0)
    assert torch.equal(yp, yc)
    a, b = rgb(plain), rgb(coloured)
    face, wall = interior(y, SKIN).numpy(), interior(y, BG).numpy()
    assert np.abs(a[face] - b[face]).max() < 1e-3
    assert np.abs(b[wall] - np.array([30, 20, 15])).max() < 2  # the hair's colour, its spread (none) too
    assert np.abs(a[wall] - np.array([30, 20, 15])).mean() > 40  # without it: the random photo


def test_hair_recolouring_touches_hair_only():
    x, y = face_batch()
    xo, yo = augment(x, y, PERM, replace(ONLY, hair=1.0), torch.Generator().manual_seed(3), ids=(BG, (HAIR,)))
    assert torch.equal(yo, y)
    a, b = rgb(x), rgb(xo)
    hair = interior(y, HAIR, 2).numpy()
    assert (b[hair].mean(-1) > a[hair].mean(-1) + 20).any()  # dark hair lightened on some faces
    rest = interior(y, BG, 3).numpy() | interior(y, SKIN, 3).numpy()
    assert np.abs(a[rest] - b[rest]).max() < 1e-3


def bald_batch(n=2, s=48):
    """A head: a skin disc, eyes across its middle, brows and a hair cap above them, hair down the sides."""
    yy, xx = np.mgrid[:s, :s]
    y = np.zeros((s, s), np.int64)
    disc = (yy - s / 2) ** 2 + (xx - s / 2) ** 2 < (s / 3) ** 2
    y[disc] = SKIN
    y[disc & (yy < 16)] = HAIR  # the cap
    y[(yy >= 16) & (yy < 30) & disc & ((xx < 12) | (xx > 35))] = HAIR  # down the sides
    y[(yy >= 22) & (yy < 25) & (((xx >= 17) & (xx < 21)) | ((xx >= 27) & (xx < 31)))] = EYES
    y[(yy >= 20) & (yy < 21) & (((xx >= 17) & (xx < 21)) | ((xx >= 27) & (xx < 31)))] = HAIR  # brows
    rgb_ = np.full((s, s, 3), 128.0)
    rgb_[y == SKIN] = (220, 170, 140)
    rgb_[y == HAIR] = (30, 20, 15)
    rgb_[y == EYES] = (20, 20, 60)
    x = torch.from_numpy(((rgb_ - MEAN) / STD).astype(np.float32)).permute(2, 0, 1)
    x = torch.cat([x, torch.zeros(1, s, s)])[None].repeat(n, 1, 1, 1)
    return x, torch.from_numpy(y)[None].repeat(n, 1, 1)


def test_bald_scalps_take_the_cap_not_the_brows_nor_the_hair_below_the_eyes():
    x, y = bald_batch()
    soft = torch.nn.functional.one_hot(y, FASSEG.num_classes).permute(0, 3, 1, 2).float()
    ids = (BG, (HAIR,), SKIN)
    xo, yo, so = augment(x, y, PERM, replace(ONLY, bald=1.0), torch.Generator().manual_seed(0), soft=soft,
                         bank=bank(48), ids=ids)
    cap = (y == HAIR) & (torch.arange(48).view(48, 1) < 16)
    assert (yo[cap] != HAIR).all() and (yo[cap] == SKIN).float().mean() > 0.5  # mostly scalp, the rest backdrop
    rows, cols = torch.arange(48).view(48, 1), torch.arange(48).view(1, 48)
    brows, below = (y == HAIR) & (rows == 20) & (cols >= 17) & (cols < 31), (y == HAIR) & (rows >= 22)
    assert (yo[brows] == HAIR).all() and (yo[below] == HAIR).all()
    assert torch.equal(yo[y == EYES], y[y == EYES])
    # The teacher's probabilities follow the labels and still sum to one.
    assert torch.equal(so.argmax(1), yo) and torch.allclose(so.sum(1), torch.ones_like(so.sum(1)))
    # The scalp is the face's own skin colour (lit from above: within a third of it), not the hair's.
    scalp = (yo == SKIN) & cap
    got, skin = rgb(xo)[scalp.numpy()].mean(0), np.array([220, 170, 140])
    assert np.abs(got / skin - 1).max() < 0.34 and np.abs(got - np.array([30, 20, 15])).min() > 60
    # Without backdrops the hair outside the scalp could not be taken away: then nothing is made bald.
    xn, yn = augment(x, y, PERM, replace(ONLY, bald=1.0), torch.Generator().manual_seed(0), ids=ids)
    assert torch.equal(yn, y)
    # A schema without skin (ids without its id): nothing either.
    assert torch.equal(augment(x, y, PERM, replace(ONLY, bald=1.0), torch.Generator().manual_seed(0),
                               bank=bank(48), ids=(BG, (HAIR,)))[1], y)


def test_grayscale_gives_equal_channels_and_the_heatmap_is_untouched():
    x, y = face_batch()
    x[:, 3] = torch.rand(x.shape[0], 32, 32)
    xo, _ = augment(x, y, PERM, replace(ONLY, gray=1.0), torch.Generator().manual_seed(0), ids=(BG, (HAIR,)))
    b = rgb(xo)
    assert np.abs(b[..., 0] - b[..., 1]).max() < 1e-3 and np.abs(b[..., 1] - b[..., 2]).max() < 1e-3
    assert torch.equal(xo[:, 3], x[:, 3])


def test_wild_recipe_is_seeded_keeps_labels_valid_and_uses_teacher_argmax_for_soft_targets():
    x, y = face_batch(n=8)
    soft = torch.nn.functional.one_hot(y, FASSEG.num_classes).permute(0, 3, 1, 2).float()
    run = lambda s: augment(x, None, PERM, WILD, torch.Generator().manual_seed(s), soft=soft, bank=bank(),
                            ids=(BG, (HAIR,)))
    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(p, q) for p, q in zip(a, b)) and not torch.equal(a[0], c[0])
    assert torch.isfinite(a[0]).all() and a[0].shape == x.shape
    # Unlabelled faces: the teacher's argmax marks the background, so a pasted face keeps its skin.
    xo, _, so = augment(x, None, PERM, replace(ONLY, paste=1.0), torch.Generator().manual_seed(0), soft=soft,
                        bank=bank(), ids=(BG, (HAIR,)))
    face = interior(y, SKIN).numpy()
    assert np.abs(rgb(x)[face] - rgb(xo)[face]).max() < 1e-3
    assert np.abs(rgb(x)[interior(y, BG).numpy()] - rgb(xo)[interior(y, BG).numpy()]).mean() > 20


def test_pixels_the_teacher_said_nothing_of_get_a_backdrop_and_stay_out_of_the_targets():
    """Pseudo-labels are all zero on the black fill outside a tight photo (pseudolabel --outside-photo
    ignore): a face not picked for pasting keeps its own wall but loses the fill to a backdrop, and the
    targets there stay empty, so the loss leaves them out."""
    x, y = face_batch(n=4)
    soft = torch.nn.functional.one_hot(y, FASSEG.num_classes).permute(0, 3, 1, 2).float()
    fill = torch.zeros_like(y, dtype=torch.bool)
    fill[:, :6] = True  # the top rows lie outside the photo
    x[:, :3][fill[:, None].expand(-1, 3, -1, -1)] = float(-MEAN[0] / STD[0])  # black (close enough: channel 0)
    soft[fill[:, None].expand_as(soft)] = 0
    xo, _, so = augment(x, None, PERM, replace(ONLY, paste=1e-9), torch.Generator().manual_seed(0), soft=soft,
                        bank=bank(), ids=(BG, (HAIR,)))
    assert so[fill[:, None].expand_as(so)].abs().max() == 0
    top, wall = fill.clone(), interior(y, BG)
    top[:, 4:], wall[:, :10] = False, False  # both beyond the feathered seam
    assert np.abs(rgb(x)[top.numpy()] - rgb(xo)[top.numpy()]).mean() > 20  # the fill took a backdrop
    assert np.abs(rgb(x)[wall.numpy()] - rgb(xo)[wall.numpy()]).max() < 1e-3  # the face's own wall stayed


def test_ranks_augment_their_rows_as_one_process_would():
    x, y = face_batch(n=4)
    whole = augment(x, y, PERM, WILD, torch.Generator().manual_seed(7), bank=bank(), ids=(BG, (HAIR,)))
    halves = [augment(x[i:i + 2], y[i:i + 2], PERM, WILD, torch.Generator().manual_seed(7), part=(i, 4),
                      bank=bank(), ids=(BG, (HAIR,))) for i in (0, 2)]
    # JPEG runs through PIL per face: identical inputs give identical outputs.
    assert torch.allclose(torch.cat([h[0] for h in halves]), whole[0], atol=1e-5)
    assert torch.equal(torch.cat([h[1] for h in halves]), whole[1])


def _photo(path, seed, size=(192, 128)):  # at least backgrounds.MIN_SIDE on the short side
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def test_backgrounds_stage_dedupes_sizes_excludes_reserved_drops_faces(tmp_path):
    from skimage import data

    src = tmp_path / "src"
    (src / "Kite" / "contents" / "images").mkdir(parents=True)
    for i, wh in enumerate(["640x480", "1280x960", "800x600"]):
        _photo(src / "Kite" / "contents" / "images" / f"{wh}.png", i)
    (src / "dlib-faces").mkdir()
    _photo(src / "dlib-faces" / "reserved.jpg", 5)
    (src / "mate").mkdir()
    _photo(src / "mate" / "eval.jpg", 6)
    _photo(src / "wall.jpg", 7, (900, 700))
    Image.fromarray(data.astronaut()).save(src / "astronaut.png")
    files, skipped = gather([src], exclude=["*/mate/*"])
    names = sorted(f.name for f in files)
    assert names == ["1280x960.png", "astronaut.png", "wall.jpg"]
    reasons = " ".join(s["reason"] for s in skipped)
    assert "dlib-faces" in reasons and "*/mate/*" in reasons and reasons.count("another size") == 2

    out = tmp_path / "bg"
    m = run_backgrounds(BackgroundsConfig(sources=(str(src),), out=str(out), exclude=("*/mate/*",)))
    assert m["counts"]["photos"] == 2  # the astronaut has a face
    assert any("face" in s["reason"] and "astronaut" in s["source"] for s in m["skipped"])
    recs = [json.loads(l) for l in (out / "sources.jsonl").read_text().splitlines()]
    assert {r["source"].split("/")[-1] for r in recs} == {"1280x960.png", "wall.jpg"}
    assert all(min(r["width"], r["height"]) <= 640 for r in recs)
    b = load_bank(out, 32, tiles_per_photo=3)
    assert b.tiles.shape == (6, 3, 32, 32) and b.tiles.dtype == torch.uint8
    cfg, bk, ids = training_recipe("wild", str(out), 32, 0, FASSEG)
    assert cfg == WILD and len(bk) == 8 and ids == (BG, (HAIR,), SKIN)
    with pytest.raises(FacepipeError, match="backgrounds"):
        load_bank(tmp_path / "src", 32)  # not a backgrounds output


def test_recipe_spec_lays_fields_over_a_named_recipe():
    # `--augment wild,paste=0` is one ablation row: the wild recipe with one part switched off.
    assert recipe_config("wild") == WILD and recipe_config("none") == NONE
    assert recipe_config("wild,paste=0") == replace(WILD, paste=0.0)
    assert recipe_config(" basic , gray = 0.5,flip=0") == replace(BASIC, gray=0.5, flip=False)
    assert recipe_config("wild,rotate=10,hue=0") == replace(WILD, rotate=10.0, hue=0.0)
    assert [saw_grayscale(s) for s in ("wild", "wild,gray=0", "basic", "basic,gray=0.1", None, "bogus")] == \
        [True, False, False, True, None, None]


@pytest.mark.parametrize("spec, says", [
    ("fancy", "unknown augmentation recipe 'fancy'"), ("wild,paste", "expected FIELD=VALUE"),
    ("wild,colour=1", "expected FIELD=VALUE with FIELD one of flip, rotate"), ("wild,gray=2", "expected 0..1"),
    ("wild,gray=nan", "expected 0..1"), ("wild,rotate=-5", "expected 0..180"), ("wild,jpeg=lots", "a number"),
    ("wild,flip=yes", "expected 0 or 1")])
def test_recipe_spec_refuses_bad_fields_in_one_line(spec, says):
    with pytest.raises(ValueError) as e:
        recipe_config(spec)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_train_takes_a_recipe_spec_and_refuses_a_bad_one_before_starting(tmp_path, synthetic_cache, train_tiny):
    from click.testing import CliRunner

    from facepipe.cli import cli
    from facepipe.infer.checkpoint import load_checkpoint, run_checkpoint
    from facepipe.infer.model import LoadedModel

    res = CliRunner().invoke(cli, ["train", str(synthetic_cache), "--out", str(tmp_path / "bad"),
                                   "--augment", "wild,gray=2"])
    assert res.exit_code == 2 and "gray=2: expected 0..1" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "bad").exists()
    # Spaces are not part of a spec: the same recipe spelt with them is the same config.
    ctx = cli.commands["train"].make_context("train", [str(synthetic_cache), "--out", "r", "--augment", "wild, paste = 0"])
    assert ctx.params["augment"] == "wild,paste=0"
    run = train_tiny(tmp_path / "t", augment="basic,gray=1")
    assert load_checkpoint(run_checkpoint(run))["config"]["augment"] == "basic,gray=1"
    assert LoadedModel.load(run).saw_grayscale is True


def test_textured_scalps_carry_the_skin_detail_from_below_and_change_no_label():
    s = 96
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    cls = torch.zeros(s, s, dtype=torch.long)
    disc = (yy - 48) ** 2 + (xx - 48) ** 2 < 40 ** 2
    cls[disc] = SKIN
    cls[disc & (yy < 30)] = HAIR
    cls[(yy >= 34) & (yy < 37) & (((xx >= 34) & (xx < 42)) | ((xx >= 54) & (xx < 62)))] = EYES
    img = torch.full((1, 3, s, s), 0.5)
    stripes = 0.1 * torch.sin(xx.float() * 1.3) * (cls == SKIN)  # fine vertical stripes on the skin only
    img[0] += stripes
    img[0, :, cls == HAIR] = 0.1
    args = (img, cls[None], (cls == HAIR)[None], torch.ones(1, dtype=torch.bool), torch.full((1, 3), 0.5),
            torch.full((1, s, s), 0.5), BG, SKIN)
    plain, scalp, out = bald_scalps(*args)
    tex, scalp_t, out_t = bald_scalps(*args, texture=torch.ones(1, dtype=torch.bool))
    assert torch.equal(scalp, scalp_t) and torch.equal(out, out_t) and scalp.sum() > 200
    near = torch.nn.functional.max_pool2d(scalp[0].float()[None, None], 9, 1, 4)[0, 0] > 0  # its feathered seam
    assert torch.equal(tex[:, :, ~near], plain[:, :, ~near])  # only the scalp changes
    d = (tex - plain)[0, 0][scalp[0]]
    assert d.abs().max() > 0.03  # the smooth dome now has detail on it
    # ... and it is the stripes' (across columns, none along rows): each scalp row repeats the pattern
    rows = torch.nonzero(scalp[0].any(1)).flatten()
    r = int(rows[len(rows) // 2])
    band = (tex - plain)[0, 0, r]
    assert band.abs().max() > 0.03 and torch.corrcoef(torch.stack([band, stripes[60]]))[0, 1] > 0.5
    # Not picked: the smooth dome, as before
    same, _, _ = bald_scalps(*args, texture=torch.zeros(1, dtype=torch.bool))
    assert torch.equal(same, plain)
    assert recipe_config("wild,bald=0.2,baldtex=1").baldtex == 1.0
    with pytest.raises(ValueError, match="set bald"):
        recipe_config("wild,baldtex=1")
