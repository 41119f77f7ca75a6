import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from facepipe.analysis.rnorm_sweep import analyse
from facepipe.cli import cli
from facepipe.data.resample import resample_cache, scale_matrix
from facepipe.util import geometry as g


def test_scale_matrix_keeps_pixel_centres():
    # 2x downscale: the centre of pixels 0 and 1 at 64 px is the centre of pixel 0 at 32 px
    m = scale_matrix(0.5)
    assert np.allclose(g.apply(m, np.array([[0.5, 0.5], [63.5, 63.5]])), [[0.0, 0.0], [31.5, 31.5]], atol=1e-9)


def test_resampled_cache_maps_the_same_photo_points(synthetic_cache, tmp_path):
    out = tmp_path / "c32.h5"
    man = resample_cache(synthetic_cache, out, 32)
    with h5py.File(synthetic_cache) as a, h5py.File(out) as b:
        assert b.attrs["size"] == 32 and b["images"].shape[1:] == (32, 32, 3) and b["labels"].shape[1:] == (32, 32)
        assert set(np.unique(b["labels"][:])) <= set(np.unique(a["labels"][:]))
        # a photo point goes to k x its crop point (pixel-centre convention) under the new matrix
        p = np.array([[10.0, 20.0], [30.0, 5.0]])
        for j in range(len(a["ids"])):
            pa, pb = g.apply(a["matrices"][j], p), g.apply(b["matrices"][j], p)
            assert np.allclose((pa + 0.5) * 0.5 - 0.5, pb, atol=1e-6)
        # the resampled crop is what warping the photo at 32 px gives (up to interpolation)
        warped = g.warp_labels(b["photo_labels"][b["photo_ids"][0].decode()][()], b["matrices"][0], 32, fill=0)
        assert (warped == b["labels"][0]).mean() > 0.9
        assert len(b["photo_labels"]) == len(a["photo_labels"])
    assert man["size"] == 32
    assert resample_cache(synthetic_cache, out, 32) == man  # made already: left alone


def test_analyse_finds_the_vertex_of_a_peaked_rnorm_curve():
    cells = []
    for s in (64, 128, 256):
        for k in (0.5, 1.0, 2.0, 4.0):
            r = k * s
            cells.append({"cell": f"{s}-{k}", "s": s, "r": r, "r_norm": k,
                          "overall_f1": 0.9 - 0.05 * (np.log(k) - np.log(1.3)) ** 2})
    a = analyse(cells)
    assert a["optimum_rnorm"] == pytest.approx(1.3, rel=1e-3)
    assert a["fits"]["log_rnorm"]["r2"] == pytest.approx(1.0)
    assert a["fits"]["log_s"]["r2"] < 0.05  # s alone explains nothing here
    assert a["spread_along"] < 1e-9 < a["spread_across"]


def test_sweep_cli_trains_every_cell_and_resumes(synthetic_cache, tmp_path):
    out = tmp_path / "sw"
    args = ["rnorm", "sweep", str(synthetic_cache), "--out", str(out), "--sizes", "32,48", "--dilations", "1,2",
            "--arch", "student-tiny", "--epochs", "1", "--quiet"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    sw = json.loads((out / "sweep.json").read_text())
    assert sorted(c["cell"] for c in sw["cells"]) == ["s32-d1", "s32-d2", "s48-d1", "s48-d2"]
    from facepipe.analysis.receptive_field import rnorm

    for c in sw["cells"]:
        assert c["r"] == rnorm("student-tiny", c["s"], dilations=tuple(c["dilations"]))["r"]
        assert 0 <= c["overall_f1"] <= 1 and c["coords"] == "original"
        assert json.loads((out / "cells" / c["cell"] / "config.json").read_text())["model_kwargs"]["dilations"] \
            == [c["d"]] * 3
    assert (out / "sweep.png").stat().st_size > 1000 and (out / "manifest.json").exists()
    mtime = (out / "sweep.json").stat().st_mtime
    res = CliRunner().invoke(cli, args)  # finished: nothing to redo
    assert res.exit_code == 0 and (out / "sweep.json").stat().st_mtime == mtime


def test_sweep_refuses_a_model_without_dilations(synthetic_cache, tmp_path):
    res = CliRunner().invoke(cli, ["rnorm", "sweep", str(synthetic_cache), "--out", str(tmp_path / "x"),
                                   "--arch", "bisenet-r18", "--epochs", "1"])
    assert res.exit_code != 0 and "no `dilations`" in str(res.exception)


def test_train_rnorm_sets_the_dilations_closest_to_the_target(synthetic_cache, tmp_path, monkeypatch):
    from facepipe.analysis import receptive_field as rf

    opt = tmp_path / "opt.json"
    opt.write_text(json.dumps({"rnorm": 2.0, "source": "test"}))
    monkeypatch.setattr(rf, "OPTIMUM_FILE", opt)
    for target, want in (("1.0", 1.0), ("optimum", 2.0)):
        out = tmp_path / f"t{want}"
        res = CliRunner().invoke(cli, ["train", str(synthetic_cache), "--out", str(out), "--arch", "student-tiny",
                                       "--rnorm", target, "--epochs", "1", "--quiet"])
        assert res.exit_code == 0, res.output
        dil = tuple(json.loads((out / "config.json").read_text())["model_kwargs"]["dilations"])
        best = rf.best_dilations("student-tiny", 64, want)
        assert dil == best["dilations"] and abs(best["r_norm"] - want) <= min(
            abs(t["r_norm"] - want) for t in best["table"]) + 1e-12
    res = CliRunner().invoke(cli, ["train", str(synthetic_cache), "--out", str(tmp_path / "x"), "--rnorm", "1",
                                   "--dilations", "1,1,1,1"])
    assert res.exit_code != 0 and "not both" in res.output


def test_optimum_is_looked_up_per_architecture(tmp_path, monkeypatch):
    from facepipe.analysis import receptive_field as rf

    opt = tmp_path / "opt.json"
    opt.write_text(json.dumps({"rnorm": 1.0, "source": "fallback",
                               "by_arch": {"student-tiny": {"rnorm": 2.0, "source": "tiny sweep"},
                                           "student": 0.5}}))
    monkeypatch.setattr(rf, "OPTIMUM_FILE", opt)
    assert rf.optimum_for("student-tiny") == {"rnorm": 2.0, "source": "tiny sweep"}
    assert rf.optimum_for("student")["rnorm"] == 0.5
    other = rf.optimum_for("teacher-small")
    assert other["rnorm"] == 1.0 and "no sweep of teacher-small" in other["source"]
    _, b = rf.dilations_for("student-tiny", 64, "optimum")
    assert b["target"] == 2.0 and b["source"] == "tiny sweep"


def test_shipped_optimum_covers_every_dilated_architecture():
    from facepipe.analysis import receptive_field as rf
    from facepipe.models import registry

    shipped = rf.measured_optimum()["by_arch"]
    for name in ("teacher", "teacher-small", "student", "student-tiny"):
        assert name in shipped and 0.05 < rf.optimum_for(name)["rnorm"] < 5, name
        assert "dilations" in registry.create_model(name, 7).config
