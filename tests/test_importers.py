"""Importers: each format's release layout, rebuilt in miniature, must land in the common layout."""
from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import facepipe.data.importers.common as common
from facepipe.cli import cli
from facepipe.data.importers import FORMATS, get_format, import_dataset
from facepipe.data.importers.common import read_items
from facepipe.util.errors import FacepipeError
from facepipe.util.schema import CELEBAMASK_HQ, FASSEG, HELEN, LAPA, LFW_PL, LabelSchema, load_schema

H, W = 24, 32
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "formats" / "celebamask-hq-samples"


# ---------------------------------------------------------------- helpers

def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8), mode).save(path)
    return path


def photo(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def block_ids(seed: int, n: int, h: int = H, w: int = W, block: int = 4) -> np.ndarray:
    """Random ids in 4x4 blocks, with every id 0..n-1 present."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, n, (h // block, w // block))
    small.flat[:n] = rng.permutation(n)
    return np.repeat(np.repeat(small, block, 0), block, 1).astype(np.uint8)


def check_common(out: Path, schema: LabelSchema, labels: dict, splits: dict, unlabelled=(), skipped=()):
    """The common layout holds exactly `labels` (id -> expected ids) plus `unlabelled` ids."""
    out = Path(out)
    recs = {r["id"]: r for r in read_items(out)}
    assert set(recs) == set(labels) | set(unlabelled)
    for iid, expected in labels.items():
        got = np.asarray(Image.open(out / recs[iid]["label"]))
        assert got.dtype == np.uint8 and got.shape == expected.shape, iid
        np.testing.assert_array_equal(got, expected, err_msg=iid)
    for iid, r in recs.items():
        with Image.open(out / r["image"]) as im:
            assert im.size == (r["width"], r["height"]) and im.mode == "RGB"
        assert ("label" in r) == (iid not in unlabelled)
    got_splits = json.loads((out / "splits.json").read_text())
    assert {k: sorted(v) for k, v in got_splits.items()} == {k: sorted(v) for k, v in splits.items()}
    assert load_schema(out / "schema.json") == schema
    m = json.loads((out / "manifest.json").read_text())
    counts = {"images": len(recs), "labelled": len(labels), "skipped": len(skipped)}
    counts.update({f"split_{k}": len(v) for k, v in splits.items()})
    assert m["counts"] == counts
    assert sorted(s["id"] for s in m["skipped"]) == sorted(skipped)
    assert m["stage"] == "import" and not (out / ".inprogress.json").exists()
    return m


def assert_picklable(fmt: str, src: Path):
    """Label readers run in worker processes: every Item must pickle."""
    for it in get_format(fmt).items(src):
        pickle.dumps(it)


# ---------------------------------------------------------------- FASSEG

FPAL = np.array(FASSEG.colors)


def fasseg_label(ids: np.ndarray, seed: int) -> np.ndarray:
    """The palette colour of each id, plus +-20 noise per channel and a few 80/20 blends along boundaries.

    (A 70/30 background/eyes blend is genuinely nearer hair than background: no reader can undo that.)"""
    rng = np.random.default_rng(seed)
    rgb = FPAL[ids] + rng.integers(-20, 21, ids.shape + (3,))
    edges = np.argwhere(ids[:, 1:] != ids[:, :-1])[:6]
    for r, c in edges:  # the pixel left of a boundary, blended with its right neighbour's colour
        rgb[r, c] = 0.8 * FPAL[ids[r, c]] + 0.2 * FPAL[ids[r, c + 1]]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def make_fasseg_v2(root: Path, n_train=2, n_test=1, seed=0) -> dict:
    expected = {}
    for split, n in (("Train", n_train), ("Test", n_test)):
        for i in range(1, n + 1):
            s = seed + 10 * i + (split == "Test")
            ids = block_ids(s, 6)
            save(root / "V2" / f"{split}_RGB" / f"{i}.png", photo(s))
            save(root / "V2" / f"{split}_Labels" / f"{i}.png", fasseg_label(ids, s))
            expected[f"v2_{split.lower()}_{i}"] = ids
    return expected


def make_fasseg_v3(root: Path) -> dict:
    expected = {}
    for k, (pose, name) in enumerate([("+15", "personne01147+0+15"), ("-90", "personne02190+0-90"),
                                      ("0", "personne03146+0+0")]):
        ids = block_ids(100 + k, 6)
        save(root / "V3" / "Train_RGB" / pose / f"{name}.png", photo(100 + k))
        save(root / "V3" / "Train_labels" / pose / f"{name}.png", fasseg_label(ids, 100 + k))
        expected[f"v3_train_{pose}_{name}"] = ids
    return expected


def test_fasseg_v2(tmp_path):
    expected = make_fasseg_v2(tmp_path / "fasseg", n_train=2, n_test=2)
    import_dataset("fasseg", tmp_path / "fasseg", tmp_path / "out")
    check_common(tmp_path / "out", FASSEG, expected,
                 {"train": ["v2_train_1", "v2_train_2"], "test": ["v2_test_1", "v2_test_2"]})
    assert_picklable("fasseg", tmp_path / "fasseg")


@pytest.mark.parametrize("src", ["V3", "."], ids=["v3-folder", "root-with-only-v3"])
def test_fasseg_v3_poses(tmp_path, src):
    expected = make_fasseg_v3(tmp_path / "fasseg")
    import_dataset("fasseg", tmp_path / "fasseg" / src, tmp_path / "out")
    check_common(tmp_path / "out", FASSEG, expected, {"train": list(expected)})
    recs = read_items(tmp_path / "out")
    assert recs[0]["source"] == "V3/Train_RGB/+15/personne01147+0+15.png"


def test_fasseg_unknown_colour_is_skipped(tmp_path):
    expected = make_fasseg_v2(tmp_path / "fasseg", n_train=2, n_test=1)
    lab = tmp_path / "fasseg" / "V2" / "Train_Labels" / "2.png"
    rgb = np.asarray(Image.open(lab)).copy()
    rgb[: int(0.3 * H)] = (128, 0, 128)  # 30% purple
    save(lab, rgb)
    m = import_dataset("fasseg", tmp_path / "fasseg", tmp_path / "out", max_bad=0.5)
    del expected["v2_train_2"]
    check_common(tmp_path / "out", FASSEG, expected, {"train": ["v2_train_1"], "test": ["v2_test_1"]},
                 skipped=["v2_train_2"])
    assert "far from every class colour" in m["skipped"][0]["reason"]
    assert "2.png" in m["skipped"][0]["reason"]


def test_too_many_bad_images_fails(tmp_path):
    make_fasseg_v2(tmp_path / "fasseg", n_train=2, n_test=1)
    (tmp_path / "fasseg" / "V2" / "Train_RGB" / "1.png").write_bytes(b"not an image")
    with pytest.raises(FacepipeError, match="1 of 3 images could not be imported"):
        import_dataset("fasseg", tmp_path / "fasseg", tmp_path / "out")


def test_size_mismatch_is_skipped(tmp_path):
    expected = make_fasseg_v2(tmp_path / "fasseg", n_train=2, n_test=1)
    save(tmp_path / "fasseg" / "V2" / "Test_Labels" / "1.png", fasseg_label(block_ids(5, 6)[:, :28], 5))
    m = import_dataset("fasseg", tmp_path / "fasseg", tmp_path / "out", max_bad=0.5)
    del expected["v2_test_1"]
    check_common(tmp_path / "out", FASSEG, expected, {"train": ["v2_train_1", "v2_train_2"]},
                 skipped=["v2_test_1"])
    assert "label is 28x24 but image is 32x24" in m["skipped"][0]["reason"]


# ---------------------------------------------------------------- Helen

HELEN_NAMES = {"100032540_1": "train", "2908549_1": "val", "1691766_1": "test", "3051938_1": None}


def make_helen(root: Path, names=HELEN_NAMES) -> dict:
    expected = {}
    for k, name in enumerate(names):
        rng = np.random.default_rng(k)
        ids = block_ids(k, 11)
        maps = np.where(ids[None] == np.arange(11)[:, None, None], 220, rng.integers(0, 150, (11, H, W)))
        maps[:, 0, 0] = 0  # all zero: a tie, goes to background
        maps[:, 0, 1] = 0
        maps[[3, 5], 0, 1] = 230  # a tie between right brow and right eye goes to the lower id
        ids[0, 0], ids[0, 1] = 0, 3
        save(root / "images" / f"{name}.jpg", photo(k))
        for c in range(11):
            save(root / "labels" / name / f"{name}_lbl{c:02d}.png", maps[c], "L")
        expected[name] = ids
    listed = {split: [n for n, s in names.items() if s == split] for split in ("train", "val", "test")}
    # Real files say `1 , name`; be tolerant of other spacing, blank lines and CRLF.
    (root / "exemplars.txt").write_text("".join(f"{i + 1} , {n}\n" for i, n in enumerate(listed["train"])))
    (root / "tuning.txt").write_text("".join(f"  {i + 1},{n}  \r\n\n" for i, n in enumerate(listed["val"])))
    (root / "testing.txt").write_text("".join(f"{i + 1} ,\t{n}\n" for i, n in enumerate(listed["test"])))
    return expected


def test_helen(tmp_path):
    expected = make_helen(tmp_path / "helen")
    import_dataset("helen", tmp_path / "helen", tmp_path / "out")
    check_common(tmp_path / "out", HELEN, expected, {"train": ["100032540_1"], "val": ["2908549_1"],
                                                     "test": ["1691766_1"], "unlisted": ["3051938_1"]})
    # JPEG photos are copied byte for byte.
    assert (tmp_path / "out/images/2908549_1.jpg").read_bytes() == \
        (tmp_path / "helen/images/2908549_1.jpg").read_bytes()
    assert_picklable("helen", tmp_path / "helen")


def test_helen_missing_map_is_skipped(tmp_path):
    expected = make_helen(tmp_path / "helen")
    (tmp_path / "helen/labels/1691766_1/1691766_1_lbl10.png").unlink()
    m = import_dataset("helen", tmp_path / "helen", tmp_path / "out", max_bad=0.5)
    del expected["1691766_1"]
    check_common(tmp_path / "out", HELEN, expected, {"train": ["100032540_1"], "val": ["2908549_1"],
                                                     "unlisted": ["3051938_1"]}, skipped=["1691766_1"])
    assert "1691766_1_lbl10.png is missing" in m["skipped"][0]["reason"]


# ---------------------------------------------------------------- LFW-PL

LFW_COLOURS = np.array([(0, 0, 255), (0, 255, 0), (255, 0, 0)])  # background, skin, hair (schema order)


def make_lfw(root: Path) -> dict:
    expected = {}
    with_gt = ["Aaron_Peirsol_0001", "Aaron_Peirsol_0002", "Abel_Pacheco_0002", "Yao_Ming_0004", "Zoe_Ball_0001"]
    for k, name in enumerate(with_gt + ["Zico_0003"]):
        person = name[:-5]
        save(root / "lfw_funneled" / person / f"{name}.jpg", photo(k))
        if name in with_gt:
            ids = block_ids(k, 3)
            rng = np.random.default_rng(k)
            # Dominant channel 200..255, the others 0..60: argmax reads it.
            gt = np.where(LFW_COLOURS[ids] > 0, rng.integers(200, 256, (H, W, 3)), rng.integers(0, 61, (H, W, 3)))
            save(root / "parts_lfw_funneled_gt_images" / f"{name}.ppm", gt)
            expected[name] = ids
    (root / "parts_train.txt").write_text("Aaron_Peirsol 1\nAaron_Peirsol 0002\n")
    (root / "parts_validation.txt").write_text("Abel_Pacheco 2\n\n")
    (root / "parts_test.txt").write_text("Yao_Ming   4\nZico 3\n")  # Zico has no ground truth
    (root / "parts_lfw_funneled_superpixels_mat").mkdir()
    (root / "parts_lfw_funneled_superpixels_mat" / "Zoe_Ball_0001.mat").write_bytes(b"\0" * 16)
    (root / "parts_lfw_funneled_gt").mkdir()
    (root / "parts_lfw_funneled_gt" / "Aaron_Peirsol_0001.dat").write_text("1 2 3\n")
    del expected["Zoe_Ball_0001"]  # has ground truth but is in no split file
    return expected


def test_lfw_pl(tmp_path):
    expected = make_lfw(tmp_path / "lfw")
    import_dataset("lfw-pl", tmp_path / "lfw", tmp_path / "out")
    check_common(tmp_path / "out", LFW_PL, expected, {"train": ["Aaron_Peirsol_0001", "Aaron_Peirsol_0002"],
                                                      "val": ["Abel_Pacheco_0002"], "test": ["Yao_Ming_0004"]})
    assert read_items(tmp_path / "out")[0]["source"] == "lfw_funneled/Aaron_Peirsol/Aaron_Peirsol_0001.jpg"
    assert_picklable("lfw-pl", tmp_path / "lfw")


def test_lfw_pl_bad_split_line(tmp_path):
    make_lfw(tmp_path / "lfw")
    (tmp_path / "lfw" / "parts_test.txt").write_text("Yao_Ming four\n")
    with pytest.raises(FacepipeError, match=r"parts_test.txt:1: expected `<Person_Name> <number>`"):
        import_dataset("lfw-pl", tmp_path / "lfw", tmp_path / "out")


# ---------------------------------------------------------------- CelebAMask-HQ

# The official merge order from docs/datasets.md, written out again here on purpose.
CELEBA_PARTS = ["skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth",
                "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth"]


def write_celeba_masks(root: Path, idx: int, masks: dict):
    for part, mask in masks.items():
        save(root / "CelebAMask-HQ-mask-anno" / str(idx // 2000) / f"{idx:05d}_{part}.png", mask, "L")


def make_celeba(root: Path, idxs=(0, 1, 2001, 4000), size=24) -> dict:
    """Photos 2x the mask size, as in the release (1024 vs 512), scaled down."""
    expected = {}
    for idx in idxs:
        rng = np.random.default_rng(idx)
        save(root / "CelebA-HQ-img" / f"{idx}.jpg", photo(idx, 2 * size, 2 * size))
        masks, merged = {}, np.zeros((size, size), np.uint8)
        for part in rng.choice(CELEBA_PARTS, 8, replace=False).tolist() + ["skin", "hair"]:
            y, x = rng.integers(0, size - 6, 2)
            m = np.zeros((size, size), np.uint8)
            m[y: y + rng.integers(6, size), x: x + rng.integers(6, size)] = 255 if part != "nose" else 1
            masks[part] = m
        masks["skin"][4:20, 4:20] = 255
        masks["hair"][0:8, :] = 255  # hair overlaps skin: hair (later) wins
        for part in CELEBA_PARTS:  # the official merge: later parts overwrite
            if part in masks:
                merged[masks[part] > 0] = CELEBA_PARTS.index(part) + 1
        write_celeba_masks(root, idx, masks)
        expected[str(idx)] = np.repeat(np.repeat(merged, 2, 0), 2, 1)  # nearest upsample to the photo
    return expected


def write_celeba_splits(root: Path):
    (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text(
        "idx         orig_idx    orig_file\n0           119613      119614.jpg\n1           99094       099095.jpg\n"
        "2001        5           000006.jpg\n")
    (root / "list_eval_partition.txt").write_text("000006.jpg 2\n099095.jpg 1\n119614.jpg 0\n")


def test_celebamask_hq(tmp_path):
    root = tmp_path / "celeba"
    expected = make_celeba(root)
    write_celeba_splits(root)
    import_dataset("celebamask-hq", root, tmp_path / "out")
    check_common(tmp_path / "out", CELEBAMASK_HQ, expected,
                 {"train": ["0"], "val": ["1"], "test": ["2001"], "unlisted": ["4000"]})
    lab = np.asarray(Image.open(tmp_path / "out/labels/0.png"))
    assert lab.shape == (48, 48)
    assert_picklable("celebamask-hq", root)


def test_celebamask_hq_without_split_files(tmp_path):
    root = tmp_path / "celeba"
    expected = make_celeba(root, idxs=(3, 5))
    import_dataset("celebamask-hq", root, tmp_path / "out")
    check_common(tmp_path / "out", CELEBAMASK_HQ, expected, {"unlisted": ["3", "5"]})


def test_celebamask_hq_merge_order_goes_through_names(tmp_path):
    root = tmp_path / "celeba"
    save(root / "CelebA-HQ-img" / "7.jpg", photo(7, 16, 16))
    full = np.full((8, 8), 255, np.uint8)
    # eye_g under l_eye, hat over hair, cloth over neck: later parts of the official order win.
    write_celeba_masks(root, 7, {"cloth": full * 0, "eye_g": full, "l_eye": np.pad(full[:4], ((0, 4), (0, 0))),
                                 "hair": np.pad(full[:, :4], ((0, 0), (0, 4))),
                                 "hat": np.pad(full[:2, :2], ((0, 6), (0, 6)))})
    import_dataset("celebamask-hq", root, tmp_path / "out")
    lab = np.asarray(Image.open(tmp_path / "out/labels/7.png"))[::2, ::2]
    ids = {n: CELEBAMASK_HQ.index(n) for n in ("eye_g", "l_eye", "hair", "hat")}
    assert (lab[:2, :2] == ids["hat"]).all()
    assert (lab[2:4, :4] == ids["hair"]).all() and (lab[:4, 4:] == ids["l_eye"]).all()
    assert (lab[4:, 4:] == ids["eye_g"]).all()


def test_celebamask_hq_without_masks_is_skipped(tmp_path):
    root = tmp_path / "celeba"
    expected = make_celeba(root, idxs=(0, 1))
    save(root / "CelebA-HQ-img" / "2.jpg", photo(2, 48, 48))
    m = import_dataset("celebamask-hq", root, tmp_path / "out", max_bad=0.5)
    check_common(tmp_path / "out", CELEBAMASK_HQ, expected, {"unlisted": ["0", "1"]}, skipped=["2"])
    assert "no mask files 00002_<part>.png" in m["skipped"][0]["reason"]


@pytest.mark.shared
@pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"CelebAMask-HQ samples not found at {SAMPLES}")
def test_celebamask_hq_real_samples(tmp_path):
    """Split the 4 real merged id maps into release-style part masks; the importer must rebuild them."""
    root = tmp_path / "celeba"
    maps = {}
    for jpg in sorted(SAMPLES.glob("*.jpg")):
        idx = int(jpg.stem)
        dst = root / "CelebA-HQ-img" / f"{idx}.jpg"
        dst.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(jpg) as im:
            if im.size == (1024, 1024):
                shutil.copyfile(jpg, dst)
            else:
                im.convert("RGB").resize((1024, 1024), Image.BILINEAR).save(dst, quality=95)
        ids = np.asarray(Image.open(SAMPLES / f"{idx}.png"))
        assert ids.shape == (512, 512)
        write_celeba_masks(root, idx, {CELEBAMASK_HQ.classes[k]: (ids == k) * 255 for k in np.unique(ids) if k})
        maps[str(idx)] = ids
    assert len(maps) == 4
    import_dataset("celebamask-hq", root, tmp_path / "out")
    recs = read_items(tmp_path / "out")
    assert [r["id"] for r in recs] == sorted(maps, key=int)
    for r in recs:
        lab = np.asarray(Image.open(tmp_path / "out" / r["label"]))
        assert lab.shape == (1024, 1024) and (r["width"], r["height"]) == (1024, 1024)
        np.testing.assert_array_equal(lab[::2, ::2], maps[r["id"]])


# ---------------------------------------------------------------- LaPa

def make_lapa(root: Path, layout=(("train", ["10405424_2", "1129009_0"]), ("test", ["2265283_1"]))) -> dict:
    expected, landmarks = {}, {}
    for split, names in layout:
        for k, name in enumerate(names):
            s = 50 * ("train", "val", "test").index(split) + k
            ids = block_ids(s, 11)
            ids[0, :3] = 255  # ignore pixels are allowed
            save(root / split / "images" / f"{name}.jpg", photo(s))
            save(root / split / "labels" / f"{name}.png", ids, "L")
            lm = np.random.default_rng(s).uniform(0, W, (106, 2)).round(3)
            (root / split / "landmarks").mkdir(parents=True, exist_ok=True)
            (root / split / "landmarks" / f"{name}.txt").write_text(
                "106\n" + "".join(f"{x} {y}\n" for x, y in lm))
            expected[f"{split}_{name}"], landmarks[f"{split}_{name}"] = ids, lm
    return expected, landmarks


def test_lapa(tmp_path):
    expected, landmarks = make_lapa(tmp_path / "lapa")  # train and test only: any subset is fine
    import_dataset("lapa", tmp_path / "lapa", tmp_path / "out")
    check_common(tmp_path / "out", LAPA, expected,
                 {"train": ["train_10405424_2", "train_1129009_0"], "test": ["test_2265283_1"]})
    for r in read_items(tmp_path / "out"):
        toks = (tmp_path / "out" / r["landmarks"]).read_text().split()
        assert toks[0] == "106"
        np.testing.assert_allclose(np.array(toks[1:], float).reshape(106, 2), landmarks[r["id"]], atol=1e-3)
    assert_picklable("lapa", tmp_path / "lapa")


def test_lapa_bad_ids_and_landmarks_are_skipped(tmp_path):
    expected, _ = make_lapa(tmp_path / "lapa", (("val", ["a", "b", "c"]),))
    bad = expected["val_a"].copy()
    bad[5, 5] = 12
    save(tmp_path / "lapa/val/labels/a.png", bad, "L")
    (tmp_path / "lapa/val/landmarks/b.txt").write_text("106\n1 2\n")
    m = import_dataset("lapa", tmp_path / "lapa", tmp_path / "out", max_bad=0.9)
    check_common(tmp_path / "out", LAPA, {"val_c": expected["val_c"]}, {"val": ["val_c"]},
                 skipped=["val_a", "val_b"])
    reasons = {s["id"]: s["reason"] for s in m["skipped"]}
    assert "label id 12 is not a LaPa class" in reasons["val_a"]
    assert "val/landmarks/b.txt: unreadable landmark file" in reasons["val_b"]


def test_parallel_import_matches_serial(tmp_path):
    """More than 8 items go through worker processes: readers must pickle and give the same output."""
    make_lapa(tmp_path / "lapa", (("train", [f"n{i}" for i in range(10)]),))
    import_dataset("lapa", tmp_path / "lapa", tmp_path / "serial", workers=1)
    import_dataset("lapa", tmp_path / "lapa", tmp_path / "parallel", workers=2)
    for name in ("items.jsonl", "splits.json"):
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "parallel" / name).read_bytes()
    for p in (tmp_path / "serial" / "labels").iterdir():
        assert p.read_bytes() == (tmp_path / "parallel" / "labels" / p.name).read_bytes()


# ---------------------------------------------------------------- folder

def test_folder(tmp_path):
    src = tmp_path / "mine"
    schema = LabelSchema(name="mine", classes=("background", "face", "hair"),
                         colors=((0, 0, 0), (255, 200, 150), (90, 60, 30)))
    schema.save(src / "schema.json")
    expected = {}
    for k, (stem, suf) in enumerate((("a", ".jpg"), ("b", ".png"), ("c", ".jpg"))):
        save(src / "images" / f"{stem}{suf}", photo(k))
        if stem != "c":  # c has no label: imported unlabelled
            expected[stem] = block_ids(k, 3)
            save(src / "labels" / f"{stem}.png", expected[stem], "L")
    (src / "landmarks").mkdir()
    (src / "landmarks" / "a.txt").write_text("2\n1.5 2.5\n3 4\n")
    (src / "splits.json").write_text(json.dumps({"train": ["a", "c"], "test": ["b"]}))
    import_dataset("folder", src, tmp_path / "out")
    check_common(tmp_path / "out", schema, expected, {"train": ["a", "c"], "test": ["b"]}, unlabelled=["c"])
    assert (tmp_path / "out/landmarks/a.txt").read_text() == "2\n1.500 2.500\n3.000 4.000\n"


# ---------------------------------------------------------------- layout errors and reruns

@pytest.mark.parametrize("fmt", list(FORMATS))
def test_wrong_layout_is_a_clear_error(tmp_path, fmt):
    src = tmp_path / "src"
    save(src / "stray" / "x.png", photo(0))
    with pytest.raises(FacepipeError, match="expected") as e:
        import_dataset(fmt, src, tmp_path / "out")
    msg = str(e.value)
    assert "\n" not in msg and str(src) in msg and type(e.value) is FacepipeError
    assert not (tmp_path / "out").exists()  # nothing written before the layout is known to be right


def test_fasseg_rgb_without_labels_folder(tmp_path):
    save(tmp_path / "f" / "V2" / "Train_RGB" / "1.png", photo(0))
    with pytest.raises(FacepipeError, match="no matching Train_Labels folder"):
        import_dataset("fasseg", tmp_path / "f", tmp_path / "out")


def test_rerun_is_a_noop(tmp_path):
    make_fasseg_v2(tmp_path / "fasseg")
    m1 = import_dataset("fasseg", tmp_path / "fasseg", tmp_path / "out")
    stamp = (tmp_path / "out/manifest.json").stat().st_mtime_ns
    m2 = import_dataset("fasseg", tmp_path / "fasseg", tmp_path / "out", workers=3, max_bad=0.5)
    assert m2 == m1 and (tmp_path / "out/manifest.json").stat().st_mtime_ns == stamp


def test_other_source_needs_force(tmp_path):
    make_fasseg_v2(tmp_path / "a", n_train=1, n_test=1)
    expected = make_fasseg_v2(tmp_path / "b", n_train=2, n_test=1, seed=7)
    import_dataset("fasseg", tmp_path / "a", tmp_path / "out")
    with pytest.raises(FacepipeError, match="--force"):
        import_dataset("fasseg", tmp_path / "b", tmp_path / "out")
    m = import_dataset("fasseg", tmp_path / "b", tmp_path / "out", force=True)
    assert m["inputs"]["src"] == str((tmp_path / "b").resolve())
    check_common(tmp_path / "out", FASSEG, expected, {"train": ["v2_train_1", "v2_train_2"], "test": ["v2_test_1"]})


def test_resume_after_interrupt(tmp_path, monkeypatch):
    src = tmp_path / "fasseg"
    expected = make_fasseg_v2(src, n_train=3, n_test=2)
    import_dataset("fasseg", src, tmp_path / "ref")

    real, calls = common.convert_item, []

    def dies_on_fourth(item, out):
        calls.append(item.id)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(item, out)

    monkeypatch.setattr(common, "convert_item", dies_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        import_dataset("fasseg", src, tmp_path / "out")
    monkeypatch.undo()
    out = tmp_path / "out"
    assert not (out / "manifest.json").exists() and (out / ".inprogress.json").exists()
    done = sorted((out / "records").iterdir())
    assert len(done) == 3
    done[0].unlink()  # a few records lost too: those items are converted again
    done[2].unlink()
    m = import_dataset("fasseg", src, out)
    check_common(out, FASSEG, expected, {"train": ["v2_train_1", "v2_train_2", "v2_train_3"],
                                         "test": ["v2_test_1", "v2_test_2"]})
    assert (out / "items.jsonl").read_bytes() == (tmp_path / "ref/items.jsonl").read_bytes()
    for sub in ("images", "labels"):
        for p in (tmp_path / "ref" / sub).iterdir():
            assert p.read_bytes() == (out / sub / p.name).read_bytes()
    assert m["counts"] == json.loads((tmp_path / "ref/manifest.json").read_text())["counts"]


# ---------------------------------------------------------------- CLI

def test_cli_import(tmp_path):
    make_fasseg_v2(tmp_path / "fasseg")
    r = CliRunner().invoke(cli, ["import", "fasseg", str(tmp_path / "fasseg"), str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "out/manifest.json").read_text())["counts"]["images"] == 3
    r = CliRunner().invoke(cli, ["import", "fasseg", str(tmp_path / "fasseg"), str(tmp_path / "out"), "-q"])
    assert r.exit_code == 0 and r.output == ""


def test_cli_bad_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(cli, ["import", "helen", str(tmp_path / "empty"), str(tmp_path / "out"), "-q"])
    assert r.exit_code != 0
    # `cli` lets FacepipeError through; facepipe.cli.main turns it into one line (next test).
    assert isinstance(r.exception, FacepipeError) and "does not look like Helen" in str(r.exception)


def test_main_bad_layout_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    p = subprocess.run([sys.executable, "-m", "facepipe", "import", "lapa", str(tmp_path / "empty"),
                        str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "does not look like LaPa" in lines[0], p.stderr
