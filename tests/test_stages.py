"""landmarks -> align -> cache on images the tests make, plus the stage protocol (resume, refuse, lock)."""
import json

import h5py
import numpy as np
import pytest

from facepipe.data.align import AlignConfig, run_align
from facepipe.data.aligned_set import read_faces
from facepipe.data.cache import CacheConfig, run_cache
from facepipe.data.face_cache import FaceCache, read_cache_manifest
from facepipe.data.importers import import_dataset
from facepipe.data.landmarks import LandmarksConfig, run_landmarks
from facepipe.util.atomic import save_image
from facepipe.util.errors import FacepipeError
from facepipe.util.manifest import StageOutput


@pytest.fixture(scope="module")
def astronaut_dir(tmp_path_factory):
    from skimage import data

    d = tmp_path_factory.mktemp("photos")
    save_image(d / "astronaut.png", data.astronaut())
    save_image(d / "blank.png", np.full((120, 160, 3), 128, np.uint8))  # no face
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return d


def test_landmarks_finds_astronaut_and_lists_the_rest(astronaut_dir, tmp_path):
    m = run_landmarks(LandmarksConfig(src=str(astronaut_dir), out=str(tmp_path / "lm"), workers=1))
    rec = json.loads((tmp_path / "lm/faces/astronaut.json").read_text())
    best = rec["faces"][0]
    assert best["score"] > 0.5 and len(best["lm68"]) == 68 and len(best["lm5"]) == 5
    l, t, r, b = best["box"]
    pts = np.array(best["lm68"])
    assert (pts[:, 0] > l - 20).all() and (pts[:, 0] < r + 20).all() and (pts[:, 1] > t - 20).all()
    reasons = {s["id"]: s["reason"] for s in m["skipped"]}
    assert "broken" in reasons and reasons["blank"] == "no face found"
    assert m["counts"]["unreadable"] == 1 and m["counts"]["no_face"] == 1

    # Unlabelled photos: one crop per face, photos without a face listed, unreadable ones counted.
    am = run_align(AlignConfig(src=str(astronaut_dir), out=str(tmp_path / "al"), size=96,
                               landmarks=str(tmp_path / "lm"), workers=1))
    assert am["counts"]["faces"] >= 1 and am["counts"]["photos_without_face_skipped"] == 1
    face = read_faces(tmp_path / "al")[0]
    assert not face["fitted"] and np.array(face["matrix"]).shape == (3, 3)


def test_chain_on_synthetic_set(synthetic_cache):
    man = read_cache_manifest(synthetic_cache)
    assert man["counts"]["faces"] == 12 and man["counts"]["split_test"] == 3
    with h5py.File(synthetic_cache) as f:
        assert f["images"].shape == (12, 64, 64, 3) and f["labels"].shape == (12, 64, 64)
        assert f["heatmaps"][0].max() == 255 and f["landmarks"].shape[1:] == (5, 2)
        assert f["images"].compression == "gzip" and f["images"].chunks == (1, 64, 64, 3)
        assert len(f["photo_labels"]) == 12
        # The aligned eyes land on the template's eye points (landmarks came from the drawing).
        from facepipe.util.geometry import template

        np.testing.assert_allclose(f["landmarks"][:, :2].mean(0), template(64)[:2], atol=1.5)
    ds = FaceCache(synthetic_cache, split="train")
    x, y = ds[0]
    assert x.shape == (4, 64, 64) and y.shape == (64, 64) and len(ds) == 9
    assert set(np.unique(y.numpy())) <= {0, 1, 2, 3, 4, 5, 255}


def test_dataset_in_dataloader_workers(synthetic_cache):
    import torch

    dl = torch.utils.data.DataLoader(FaceCache(synthetic_cache, heatmap=False), batch_size=4, num_workers=2)
    xs = [x for x, _ in dl]
    assert sum(len(x) for x in xs) == 12 and xs[0].shape[1] == 3


def test_align_fits_labelled_photo_without_face(tmp_path, synthetic_set):
    # Without dataset landmarks dlib finds only some cartoons: the others are fitted, none dropped.
    import_dataset("folder", synthetic_set, tmp_path / "imp", workers=1)
    m = run_align(AlignConfig(src=str(tmp_path / "imp"), out=str(tmp_path / "al"), size=48, workers=1))
    c = m["counts"]
    assert c["faces"] == 12 and c["labelled"] == 12 and c["fitted_no_face"] >= 1
    assert c["fitted_no_face"] + c["detected"] == 12
    fitted = [f for f in read_faces(tmp_path / "al") if f["fitted"]]
    assert all(f["landmarks"] is None for f in fitted) and len(fitted) == c["fitted_no_face"]


def test_stage_output_protocol(tmp_path):
    out = tmp_path / "o"
    with StageOutput(out, "x", {"a": 1}) as so:
        assert so.state == "fresh"
    with StageOutput(out, "x", {"a": 1}) as so:  # interrupted before finish -> resume
        assert so.state == "resume"
        so.finish(counts={"n": 1})
    with StageOutput(out, "x", {"a": 1}) as so:
        assert so.state == "done"
    with pytest.raises(FacepipeError, match="another config"):
        with StageOutput(out, "x", {"a": 2}):
            pass
    with StageOutput(out, "x", {"a": 2}, force=True) as so:
        assert so.state == "fresh" and not (out / "manifest.json").exists()
    with StageOutput(out, "x", {"a": 2}) as so:
        with pytest.raises(FacepipeError, match="another facepipe process"):
            with StageOutput(out, "x", {"a": 2}):
                pass


def test_align_resumes_after_interrupt(tmp_path, synthetic_set):
    import_dataset("folder", synthetic_set, tmp_path / "imp", workers=1)
    cfg = AlignConfig(src=str(tmp_path / "imp"), out=str(tmp_path / "al"), size=48, landmarks="dataset", workers=1)
    run_align(cfg)
    full = (tmp_path / "al/faces.jsonl").read_text()
    # Simulate a kill: no manifest, some photos not done yet.
    (tmp_path / "al/manifest.json").rename(tmp_path / "al/.inprogress.json")
    for p in sorted((tmp_path / "al/records").iterdir())[:5]:
        p.unlink()
    run_align(cfg)
    assert (tmp_path / "al/faces.jsonl").read_text() == full
    assert json.loads((tmp_path / "al/manifest.json").read_text())["counts"]["faces"] == 12


def test_cache_resumes_from_partial_and_refuses_other_config(tmp_path, synthetic_set):
    import_dataset("folder", synthetic_set, tmp_path / "imp", workers=1)
    run_align(AlignConfig(src=str(tmp_path / "imp"), out=str(tmp_path / "al"), size=48, landmarks="dataset", workers=1))
    out = tmp_path / "c.h5"
    run_cache(CacheConfig(src=str(tmp_path / "al"), out=str(out)))
    with h5py.File(out) as f:
        ref = f["images"][:], f["heatmaps"][:], f["labels"][:]
    # A partial file with 5 faces done resumes to the same content.
    out.rename(str(out) + ".partial")
    with h5py.File(str(out) + ".partial", "a") as f:
        f.attrs["done"] = 5
        del f.attrs["manifest"]
        f["images"][5:] = 0
    run_cache(CacheConfig(src=str(tmp_path / "al"), out=str(out)))
    with h5py.File(out) as f:
        for a, b in zip(ref, (f["images"][:], f["heatmaps"][:], f["labels"][:])):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(FacepipeError, match="another config"):
        run_cache(CacheConfig(src=str(tmp_path / "al"), out=str(out), compression=1))
    # A file that is not HDF5 is refused with a clear message, never loaded.
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"garbage")
    with pytest.raises(FacepipeError, match="not a readable HDF5"):
        read_cache_manifest(bad)


def test_missing_input_names_the_command(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FacepipeError, match="facepipe align"):
        run_cache(CacheConfig(src=str(tmp_path / "empty"), out=str(tmp_path / "c.h5")))
    with pytest.raises(FacepipeError, match="no images found"):
        run_landmarks(LandmarksConfig(src=str(tmp_path / "empty"), out=str(tmp_path / "lm")))


def test_main_prints_one_line_error(tmp_path):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "facepipe", "cache", str(tmp_path / "nope"), str(tmp_path / "c.h5")],
                       capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr
    assert "does not exist" in p.stderr
