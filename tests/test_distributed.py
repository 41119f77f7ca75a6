"""Scaling out: train/distill/pseudolabel under torchrun (2 CPU ranks, gloo) against one process, and
--shard for the per-photo stages. Each torchrun call costs ~10 s of process start-up on 2 cores."""
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from facepipe.cli import cli
from facepipe.infer.checkpoint import load_checkpoint
from facepipe.learn.pseudolabel import PseudoConfig, part_path, run_pseudolabel

REPO = Path(__file__).resolve().parents[1]
ENTRY = str(REPO / "tests" / "torchrun_entry.py")
# Two ranks sum gradients and loss terms in another order than one process: float32 rounding. Measured
# after 4 steps: parameters 4e-7 apart, sc centers 6e-8 (the asserts print the figure when they fail).
TOL = 1e-5


_TMP: dict[str, str] = {}


@pytest.fixture(autouse=True, scope="module")
def _subprocess_tmp(tmp_path_factory):
    # torchrun's elastic agent leaves a torchelastic_* folder in the temp dir on every call: keep them in
    # pytest's own temp folders (rotated by pytest), not in the machine's /tmp.
    _TMP["dir"] = str(tmp_path_factory.mktemp("subprocess-tmp"))
    yield
    _TMP.clear()


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                                "MASTER_PORT", "LOCAL_WORLD_SIZE")}
    if "dir" in _TMP:
        env["TMPDIR"] = _TMP["dir"]
    # The comparisons below are about float32 rounding; bf16 autocast (on by default on CPUs with native
    # bf16) would round each rank's share differently at ~1e-3, so these runs stay in float32.
    return {**env, "OMP_NUM_THREADS": "1", "FACEPIPE_CPU_BF16": "0"}


def facepipe(*args, ranks: int = 1, entry: str | None = None):
    """Run the facepipe CLI (or tests/torchrun_entry.py) in one process or under torchrun."""
    prog = [entry] if entry else ["-m", "facepipe"]
    cmd = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
                              if ranks > 1 else []) + prog + [str(a) for a in args]
    r = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.fixture(scope="module")
def teacher(tiny_run):
    """A BatchNorm teacher, one process (its inference is per face, so it labels identically on any rank).
    Read only: every stage below writes elsewhere."""
    return tiny_run


TRAIN = ["--arch", "teacher-small-gn", "--epochs", "2", "--batch-size", "4", "--loss", "sc", "--loss-warmup", "1",
         "--val-split", "test", "--seed", "3", "--device", "cpu", "--threads", "1", "-q"]


@pytest.mark.slow  # torchrun
def test_train_on_two_ranks_takes_the_steps_of_one_process(synthetic_cache, tmp_path):
    """2 ranks x batch 2 == 1 process x batch 4: same seeded order, augmentation on (draws made for the
    global batch), sc loss active from step 2 (centers moved on statistics summed over ranks, the inter
    hinge's gradient from every rank's pixels), losses normalised over the global batch.

    The model is teacher-small with GroupNorm in place of BatchNorm: on CPU torch has no SyncBatchNorm, so
    with BatchNorm each rank would normalise over its own 2 faces and the runs would differ by design.
    Tolerance TOL on parameters and centers; training moves the parameters by more than 100 x TOL, so a
    wrong split, a missing reduction or desynchronised centers would show."""
    one, two = tmp_path / "one", tmp_path / "two"
    facepipe("train", synthetic_cache, "--out", one, *TRAIN, entry=ENTRY)
    facepipe("train", synthetic_cache, "--out", two, *TRAIN, entry=ENTRY, ranks=2)
    a, b = load_checkpoint(one / "checkpoints/last.pt"), load_checkpoint(two / "checkpoints/last.pt")
    assert a["step"] == b["step"] == 4  # 9 training faces, global batch 4: 2 steps an epoch
    d_params = max_diff(a["state_dict"], b["state_dict"])
    assert d_params < TOL, f"parameters differ by {d_params:.2e}"
    assert int(b["criterion"]["extra.iteration"]) == 4
    d_centers = max_diff(a["criterion"], b["criterion"])
    assert d_centers < TOL, f"sc-loss centers differ by {d_centers:.2e}"

    from torchrun_entry import build_teacher_small_gn

    torch.manual_seed(3)
    init = build_teacher_small_gn(num_classes=6, in_channels=4).state_dict()
    assert max_diff(init, a["state_dict"]) > 100 * TOL  # the comparison can tell runs apart

    ra = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rb] == [1, 2]  # rank 0 alone appended
    for x, y in zip(ra, rb):
        for k in ("ce", "sc", "intra", "inter", "total"):
            assert y[k] == pytest.approx(x[k], rel=1e-4, abs=1e-7), k
    assert rb[-1]["val"] == pytest.approx(ra[-1]["val"], abs=1e-6)  # confusion summed over ranks
    man = json.loads((two / "manifest.json").read_text())
    assert man["counts"]["ranks"] == 2 and man["counts"]["steps"] == 4
    assert json.loads((two / "eval.json").read_text())["overall_f1"] == pytest.approx(
        json.loads((one / "eval.json").read_text())["overall_f1"], abs=1e-6)


@pytest.mark.slow  # torchrun
def test_train_with_batchnorm_under_python_m_facepipe(synthetic_cache, tmp_path):
    """The real entry point and a BatchNorm model (per-rank statistics on CPU): one run folder written by
    rank 0, a global batch that does not split over the ranks refused, a finished run left alone."""
    out = tmp_path / "bn"
    args = ["train", synthetic_cache, "--out", out, "--arch", "teacher-small", "--epochs", "1", "--batch-size", "4",
            "--loss", "ce", "--val-split", "none", "--device", "cpu", "-q"]
    facepipe(*args, ranks=2)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["ranks"] == 2 and m["counts"]["steps"] == 2
    before = (out / "checkpoints/last.pt").stat().st_mtime_ns
    facepipe(*args, ranks=2)  # both ranks learn from rank 0 that it is done
    assert (out / "checkpoints/last.pt").stat().st_mtime_ns == before
    bad = [str(a) for a in args[:-1]] + ["--batch-size", "3", "--force"]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        "-m", "facepipe", *bad], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "multiple of the 2 ranks" in r.stderr


def _pseudo_arrays(path) -> dict:
    with h5py.File(path, "r") as f:
        return {k: f[k][:] for k in f} | {"config": f.attrs["config"]}


def assert_same_pseudo(a, b):
    x, y = _pseudo_arrays(a), _pseudo_arrays(b)
    assert x.keys() == y.keys()
    for k in x:
        assert np.array_equal(x[k], y[k]), k


@pytest.mark.slow  # torchrun
def test_pseudolabel_on_two_ranks_equals_one_process(teacher, synthetic_cache, tmp_path):
    """Batch 4 over 12 faces: rank 0 labels faces 0-3, rank 1 faces 4-11, in the batches one process forms."""
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    common = ["--teacher", teacher, synthetic_cache, "--batch-size", "4", "--device", "cpu", "-q"]
    facepipe("pseudolabel", *common[:3], one, *common[3:], "--threads", "1")
    facepipe("pseudolabel", *common[:3], two, *common[3:], ranks=2)
    assert_same_pseudo(one, two)
    with h5py.File(two, "r") as f:
        assert json.loads(f.attrs["manifest"])["ranks"] == 2 and f["probs"].shape[0] == 12
    assert not list(tmp_path.glob("two.h5.part*")) and not (tmp_path / "two.h5.partial").exists()


def test_pseudolabel_shards_resume_and_merge_idempotently(teacher, synthetic_cache, tmp_path):
    """Shards without torchrun: a part left half done (a rank killed) is resumed, the shard that completes
    the set merges, and a rerun leaves the merged file alone."""
    ref, out = tmp_path / "ref.h5", tmp_path / "out.h5"
    cfg = dict(teacher=str(teacher), src=str(synthetic_cache), batch_size=4, device="cpu", threads=1)
    run_pseudolabel(PseudoConfig(out=str(ref), **cfg))
    r1 = run_pseudolabel(PseudoConfig(out=str(out), shard=(1, 2), **cfg))
    assert r1["merged"] is False and not out.exists()
    part = part_path(out, 1, 2)
    with h5py.File(part, "a") as f:  # faces 4-11; as if killed after its first batch of 4
        assert f.attrs["done"] == 8 and list(f["source_index"][:]) == list(range(4, 12))
        f.attrs["done"] = 4
        f["probs"][4:] = 0
    with h5py.File(part_path(out, 0, 2), "w"):
        pass  # a part file broken by a kill at the wrong moment
    m = run_pseudolabel(PseudoConfig(out=str(out), shard=(0, 2), **cfg))
    assert m.get("merged") is False  # rank 1's part is not complete yet
    m = run_pseudolabel(PseudoConfig(out=str(out), shard=(1, 2), **cfg))
    assert m["ranks"] == 2 and m["counts"]["faces"] == 12
    assert_same_pseudo(ref, out)
    assert not part.exists() and not part_path(out, 0, 2).exists()
    stamp = out.stat().st_mtime_ns
    assert run_pseudolabel(PseudoConfig(out=str(out), shard=(0, 2), **cfg))["finished"] == m["finished"]
    assert out.stat().st_mtime_ns == stamp


@pytest.mark.slow  # torchrun
def test_distill_on_two_ranks_takes_the_steps_of_one_process(teacher, synthetic_cache, tmp_path):
    """Labelled and pseudo-labelled global batches split over 2 ranks; GroupNorm student as above."""
    pseudo = tmp_path / "u.h5"
    run_pseudolabel(PseudoConfig(teacher=str(teacher), src=str(synthetic_cache), out=str(pseudo), batch_size=4,
                                 device="cpu", threads=1))
    args = ["distill", "--teacher", teacher, "--unlabeled", pseudo, "--arch", "student-tiny-gn", "--epochs", "2",
            "--batch-size", "4", "--unlabeled-batch", "4", "--device", "cpu", "--threads", "1", "-q"]
    facepipe(*args, "--out", tmp_path / "one", entry=ENTRY)
    facepipe(*args, "--out", tmp_path / "two", entry=ENTRY, ranks=2)
    a, b = (load_checkpoint(tmp_path / n / "checkpoints/last.pt") for n in ("one", "two"))
    assert a["step"] == b["step"] == 4
    d = max_diff(a["state_dict"], b["state_dict"])
    assert d < TOL, f"parameters differ by {d:.2e}"
    ra, rb = (json.loads((tmp_path / n / "metrics.jsonl").read_text().splitlines()[-1]) for n in ("one", "two"))
    for k in ("ce", "kd_labeled", "kd_unlabeled", "total"):
        assert rb[k] == pytest.approx(ra[k], rel=1e-4), k


@pytest.mark.parametrize("stage", ["landmarks", "align"])
def test_shards_then_a_final_run_equal_one_run(stage, synthetic_set, tmp_path):
    """Two --shard halves into one folder, then a plain run that only collects: same items as one run."""
    from facepipe.data.importers import import_dataset

    imp = tmp_path / "imp"
    import_dataset("folder", synthetic_set, imp, workers=1)
    extra = ["--landmarks", "dataset", "--size", "64"] if stage == "align" else []
    if stage == "landmarks":
        pytest.importorskip("dlib")
    runner = CliRunner()

    def run(out, *more):
        r = runner.invoke(cli, [stage, str(imp), str(out), *extra, "--workers", "1", "-q", *more])
        assert r.exit_code == 0, r.output
        return r

    run(tmp_path / "whole")
    run(tmp_path / "sh", "--shard", "0/2")
    assert not (tmp_path / "sh" / "manifest.json").exists()
    run(tmp_path / "sh", "--shard", "1/2")
    folder = "faces" if stage == "landmarks" else "records"
    assert len(list((tmp_path / "sh" / folder).glob("*.json"))) == 12
    run(tmp_path / "sh")
    listing = "items.jsonl" if stage == "landmarks" else "faces.jsonl"
    assert (tmp_path / "sh" / listing).read_text() == (tmp_path / "whole" / listing).read_text()
    a, b = (json.loads((tmp_path / n / "manifest.json").read_text()) for n in ("whole", "sh"))
    assert a["counts"] == b["counts"] and a["config"] == b["config"]
    r = runner.invoke(cli, [stage, str(imp), str(tmp_path / "sh"), *extra, "--shard", "2/2", "-q"])
    assert r.exit_code != 0 and "I must be in 0..N-1" in str(r.exception)


@pytest.mark.slow  # torchrun
def test_parse_on_two_ranks_writes_what_one_process_writes(teacher, tmp_path):
    """Photos shared out by rank; names given over the whole list, so the two astronauts stay apart."""
    pytest.importorskip("dlib")
    from PIL import Image
    from skimage import data

    from facepipe.util.atomic import save_image

    photos = tmp_path / "photos"
    save_image(photos / "a" / "astronaut.jpg", data.astronaut())
    save_image(photos / "b" / "astronaut.jpg", data.astronaut()[:, ::-1])
    save_image(photos / "blank.png", np.full((90, 70, 3), 200, np.uint8))
    ins = [photos / "a" / "astronaut.jpg", photos / "blank.png", photos / "b" / "astronaut.jpg"]
    common = ["--model", teacher, "--batch-size", "2", "--device", "cpu", "-q"]
    facepipe("parse", *ins, "--out", tmp_path / "one", *common)
    facepipe("parse", *ins, "--out", tmp_path / "two", *common, ranks=2)
    one, two = (sorted(p.name for p in (tmp_path / n).iterdir()) for n in ("one", "two"))
    labels = [n for n in one if n.endswith(".labels.png")]
    assert one == two and len(labels) == 2
    for name in labels:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "one" / name)),
                              np.asarray(Image.open(tmp_path / "two" / name)))
    a, b = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("one", "two"))
    assert b["ranks"] == 2 and {k: b[k] for k in ("photos", "faces", "no_face")} == {
        k: a[k] for k in ("photos", "faces", "no_face")}
