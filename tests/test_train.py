"""Stage `train` and `eval` on the synthetic cache: run layout, losses, checkpoints, resume after a kill."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import photo_area

from facepipe.cli import cli
from facepipe.data.face_cache import FaceCache, fill_outside_photo, to_input
from facepipe.infer.checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint
from facepipe.infer.evaluate import evaluate
from facepipe.infer.predict import probs_to_photo
from facepipe.learn.train import TrainConfig, train
from facepipe.models import create_model
from facepipe.util.errors import FacepipeError
from facepipe.util.metrics import confusion
from facepipe.util.schema import FASSEG

REPO = Path(__file__).resolve().parents[1]


def cfg_for(cache, out, **kw):
    base = dict(cache=str(cache), out=str(out), arch="teacher-small", epochs=2, loss="sc", loss_warmup=1,
                val_split="test", device="cpu", threads=1)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def run(synthetic_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "t"
    manifest = train(cfg_for(synthetic_cache, out))
    return out, manifest


def test_train_writes_the_run_layout(run):
    out, m = run
    for name in ("config.json", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt", "curves.png",
                 "eval.json", "manifest.json"):
        assert (out / name).is_file(), name
    assert not (out / ".inprogress.json").exists()
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2]
    assert "val" in recs[-1] and {"ce", "sc", "total"} <= set(recs[0])
    ev = json.loads((out / "eval.json").read_text())
    assert {"overall_f1", "pixel_acc", "coords"} <= set(ev) and ev["coords"] == "original"
    assert json.loads((out / "config.json").read_text())["val_split_used"] == "test"
    man = json.loads((out / "manifest.json").read_text())
    assert man["stage"] == "train" and man["counts"]["train_faces"] == 9 and man["counts"]["epochs"] == 2
    assert load_checkpoint(out / "checkpoints/last.pt")["epoch"] == 2


def test_rerun_is_a_no_op_and_another_config_is_refused(run, synthetic_cache):
    out, m = run
    before = (out / "checkpoints/last.pt").stat().st_mtime_ns
    again = train(cfg_for(synthetic_cache, out))
    assert again["finished"] == m["finished"]
    assert (out / "checkpoints/last.pt").stat().st_mtime_ns == before
    with pytest.raises(FacepipeError, match="--force"):
        train(cfg_for(synthetic_cache, out, lr=1e-3))


def test_force_replaces_a_run_with_another_config(synthetic_cache, tiny_run_copy):
    out = tiny_run_copy
    m = train(cfg_for(synthetic_cache, out, epochs=1, loss="ce", val_split="none", final_eval="", lr=1e-3,
                      force=True))
    assert m["config"]["lr"] == 1e-3
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("loss,term", [("ce", None), ("center", "center"), ("sc", "sc"), ("sc-all", "sc")])
def test_each_loss_kind_trains_one_epoch(loss, term, synthetic_cache, tmp_path):
    m = train(cfg_for(synthetic_cache, tmp_path / loss, epochs=1, loss=loss, loss_warmup=0, val_split="none",
                      final_eval=""))
    rec = json.loads((tmp_path / loss / "metrics.jsonl").read_text())
    assert np.isfinite(rec["total"]) and m["counts"]["steps"] == 1
    if term:
        assert rec[term] > 0 and rec["total"] > rec["ce"]
        assert load_checkpoint(tmp_path / loss / "checkpoints/last.pt")["criterion"]["extra.iteration"] == 1
    else:
        assert rec["total"] == rec["ce"]


def test_outside_photo_ignore_leaves_the_fill_out_of_the_loss(synthetic_cache, tmp_path):
    """--outside-photo ignore: the crops' black fill beyond their photos is label 255 whether the faces are
    held in memory or read one by one, the rest as cached, and the loss changes; label (the default) keeps
    the cache's labels and writes the config runs made before the option wrote."""
    plain = FaceCache(synthetic_cache, split="train")
    ign = FaceCache(synthetic_cache, split="train", outside="ignore")
    rows = np.sort(plain.indices)
    y, y_ign = plain.batch(rows)[2], ign.batch(rows)[2]
    with h5py.File(synthetic_cache, "r") as src:
        inside, outside = (m[rows] for m in photo_area(src))
    assert outside.any() and (y[outside] != 255).all()
    assert (y_ign[outside] == 255).all() and np.array_equal(y_ign[inside], y[inside])
    first = int(np.searchsorted(rows, ign.indices[0]))
    assert np.array_equal(ign[0][1].numpy(), y_ign[first])
    base = dict(epochs=1, loss="ce", val_split="none", final_eval="")
    train(cfg_for(synthetic_cache, tmp_path / "k", **base))
    train(cfg_for(synthetic_cache, tmp_path / "i", outside_photo="ignore", **base))
    ce = [json.loads((tmp_path / r / "metrics.jsonl").read_text())["ce"] for r in "ki"]
    configs = [json.loads((tmp_path / r / "manifest.json").read_text())["config"] for r in "ki"]
    assert ce[0] != ce[1] and "outside_photo" not in configs[0] and configs[1]["outside_photo"] == "ignore"
    with pytest.raises(FacepipeError, match="label, ignore, edge"):
        train(cfg_for(synthetic_cache, tmp_path / "x", outside_photo="maybe"))


def test_edge_keeps_background_only_beyond_the_photos_background():
    """The photo is the left three columns; beyond it, the rows whose nearest photo pixel is hair become 255
    and those beside the wall stay background; ignore drops all of the fill, label keeps it as cached."""
    y = np.zeros((1, 5, 5), np.uint8)
    y[0, :2, 2] = 1
    inside = np.zeros((1, 5, 5), bool)
    inside[0, :, :3] = True
    edge = fill_outside_photo(y, inside, "edge", background=0)[0]
    assert (edge[:2, 3:] == 255).all() and (edge[2:, 3:] == 0).all() and np.array_equal(edge[:, :3], y[0, :, :3])
    assert (fill_outside_photo(y, inside, "ignore", 0)[0][:, 3:] == 255).all()
    assert fill_outside_photo(y, inside, "label", 0) is y and y[0, 0, 3] == 0


def test_outside_photo_needs_a_cache_that_knows_its_photos(synthetic_cache, tmp_path):
    """A cache without its crops' matrices and photo sizes cannot say where the fill is: one line, no run."""
    old = tmp_path / "old.h5"
    shutil.copy(synthetic_cache, old)
    with h5py.File(old, "a") as f:
        del f["matrices"]
    r = CliRunner().invoke(cli, ["train", str(old), "--out", str(tmp_path / "r"), "--outside-photo", "edge",
                                 "--epochs", "1", "--threads", "1", "-q"])
    assert r.exit_code != 0 and "does not record where its crops' photos end" in str(r.exception)
    assert not (tmp_path / "r").exists()


def test_no_heatmap_cli_gives_a_3_channel_model(synthetic_cache, tmp_path):
    out = tmp_path / "nh"
    r = CliRunner().invoke(cli, ["train", str(synthetic_cache), "--out", str(out), "--arch", "teacher-small",
                                 "--epochs", "1", "--loss", "ce", "--no-heatmap", "--val-split", "none",
                                 "--threads", "1", "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    ck = load_checkpoint(out / "checkpoints/best.pt")
    assert ck["in_channels"] == 3 and ck["heatmap"] is False
    model, _ = build_from_checkpoint(ck)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 6, 64, 64)


@pytest.mark.parametrize("kwargs, says", [('{"refyne": 4}', "refyne"), ('{"refine": -1}', "refine -1 < 0"),
                                           ("{bad", "not JSON"), ("[1]", "JSON object")])
def test_bad_model_kwargs_give_one_line_and_leave_no_run(kwargs, says, synthetic_cache, tmp_path):
    out = tmp_path / "bad"
    r = CliRunner().invoke(cli, ["train", str(synthetic_cache), "--out", str(out), "--model-kwargs", kwargs,
                                 "--epochs", "1", "--threads", "1", "-q"])
    # Usage errors come back from click as text; a refused model as FacepipeError, which the CLI prints
    # as one line (tests/test_bad_input.py holds that path).
    said = r.output + (str(r.exception) if isinstance(r.exception, FacepipeError) else "")
    assert r.exit_code != 0 and says in said and "Traceback" not in r.output, (r.output, r.exception)
    assert not out.exists()  # so the corrected command is not refused as "another config"


# --- warm start (--init) -----------------------------------------------------------------------------

def test_init_starts_from_the_given_weights_and_records_them(run, synthetic_cache, tmp_path):
    from facepipe.infer.checkpoint import warm_start
    from facepipe.util.manifest import file_sha256

    src, _ = run
    model = create_model("teacher-small", num_classes=6, in_channels=4)
    sha = warm_start(model, str(src), "teacher-small", FASSEG, heatmap=True)
    theirs = load_checkpoint(src / "checkpoints/best.pt")["state_dict"]
    assert sha == file_sha256(src / "checkpoints/best.pt")
    assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())
    # One epoch at a tiny learning rate, same seed, so the same batches and draws: only the starting
    # weights differ, and the two training epochs the source had show (1.43 against 1.66 here).
    first = {}
    for name, init in (("warm", str(src)), ("cold", None)):
        train(cfg_for(synthetic_cache, tmp_path / name, init=init, epochs=1, lr=1e-6, loss="ce",
                      val_split="none", final_eval=""))
        first[name] = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])["ce"]
    assert first["warm"] < first["cold"] - 0.1, first
    assert json.loads((tmp_path / "warm" / "config.json").read_text())["init"] == str(src)
    assert json.loads((tmp_path / "warm" / "manifest.json").read_text())["config"]["init_sha256"] == sha


def test_init_from_a_wider_teacher_takes_its_leading_channels(run):
    from facepipe.infer.checkpoint import warm_start

    src, _ = run
    narrow = create_model("teacher-small", num_classes=6, in_channels=4, width=8)
    warm_start(narrow, str(src), "teacher-small", FASSEG, heatmap=True)
    theirs = load_checkpoint(src / "checkpoints/best.pt")["state_dict"]
    for k, v in narrow.state_dict().items():
        assert torch.equal(v, theirs[k][tuple(slice(0, n) for n in v.shape)]), k


@pytest.mark.parametrize("args, says", [(["--arch", "teacher"], "this run builds teacher"),
                                        (["--model-kwargs", '{"refine": 4}'], "other layer shapes"),
                                        (["--no-heatmap"], "takes 4 input channels"),
                                        (["--init", "no/such/run"], "--init: no/such/run does not exist")])
def test_init_that_does_not_fit_is_one_line_and_leaves_no_run(args, says, run, synthetic_cache, tmp_path):
    src, _ = run
    out = tmp_path / "bad"
    argv = ["train", str(synthetic_cache), "--out", str(out), "--arch", "teacher-small", "--init", str(src),
            "--epochs", "1", "--threads", "1", "-q"] + args
    r = CliRunner().invoke(cli, argv)
    said = r.output + (str(r.exception) if isinstance(r.exception, FacepipeError) else "")
    assert r.exit_code != 0 and says in said and "Traceback" not in r.output, (r.output, r.exception)
    assert not out.exists()


# --- checkpoints -------------------------------------------------------------------------------------

def test_checkpoint_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = create_model("teacher-small", num_classes=6, in_channels=4, dilations=(1, 2, 3, 1)).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so they must travel too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
    save_checkpoint(tmp_path / "m.pt", model, arch="teacher-small", schema=FASSEG, size=64, heatmap=True,
                    extra={"epoch": 3})
    rebuilt, schema = build_from_checkpoint(load_checkpoint(tmp_path / "m.pt"))
    assert schema == FASSEG and rebuilt.config["dilations"] == (1, 2, 3, 1)
    x = torch.randn(2, 4, 48, 48)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


class _RunsCode:
    def __reduce__(self):
        return (print, ("code ran on load",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "facepipe-checkpoint", "state_dict": {}, "payload": _RunsCode()}, path)
    with pytest.raises(FacepipeError, match="cannot be loaded safely"):
        load_checkpoint(path)
    assert "code ran on load" not in capsys.readouterr().out


def test_truncated_checkpoint_is_refused(run, tmp_path):
    data = (run[0] / "checkpoints/best.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(FacepipeError, match="truncated"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "other.pt").write_bytes(b"")
    with pytest.raises(FacepipeError):
        load_checkpoint(tmp_path / "other.pt")


# --- resume after a real kill ------------------------------------------------------------------------

def _lines(path):
    try:
        return len([l for l in path.read_text().splitlines() if l.strip()])
    except FileNotFoundError:
        return 0


def _inode(path):
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def test_resume_after_sigkill_matches_an_uninterrupted_run(synthetic_cache, tmp_path):
    common = dict(epochs=3, batch_size=1, loss="sc", loss_warmup=1, val_split="test")
    a = tmp_path / "A"
    train(cfg_for(synthetic_cache, a, **common))

    b = tmp_path / "B"
    cmd = [sys.executable, "-m", "facepipe", "train", str(synthetic_cache), "--out", str(b), "--arch",
           "teacher-small", "--epochs", "3", "--batch-size", "1", "--loss", "sc", "--loss-warmup", "1",
           "--val-split", "test", "--threads", "1", "--device", "cpu", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while _lines(b / "metrics.jsonl") < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline
            time.sleep(0.005)
        # Metrics are written just before last.pt: wait for epoch 2's checkpoint, so the kill lands in
        # epoch 3 (a kill in between is also handled; it resumes from epoch 1).
        ino, t_end = _inode(b / "checkpoints/last.pt"), time.time() + 1
        while _inode(b / "checkpoints/last.pt") == ino and time.time() < t_end:
            time.sleep(0.002)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert _lines(b / "metrics.jsonl") == 2 and not (b / "manifest.json").exists()
    assert (b / ".inprogress.json").exists()

    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    recs = [json.loads(l) for l in (b / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2, 3]
    ka, kb = load_checkpoint(a / "checkpoints/last.pt"), load_checkpoint(b / "checkpoints/last.pt")
    assert ka["epoch"] == kb["epoch"] == 3 and ka["step"] == kb["step"] == 27
    assert ka["state_dict"].keys() == kb["state_dict"].keys()
    for k, va in ka["state_dict"].items():
        assert torch.allclose(va.double(), kb["state_dict"][k].double(), atol=1e-4), k
    for k, va in ka["criterion"].items():
        assert torch.allclose(va.double(), kb["criterion"][k].double(), atol=1e-4), k


# --- eval ----------------------------------------------------------------------------------------------

def test_eval_cli_writes_json_and_sheet(run, synthetic_cache, tmp_path):
    out = run[0]
    r = CliRunner().invoke(cli, ["eval", str(out), str(synthetic_cache), "--json", str(tmp_path / "o.json"),
                                 "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    d = json.loads((tmp_path / "o.json").read_text())
    assert {"per_class_f1", "overall_f1", "mean_f1", "pixel_acc", "coords"} <= set(d)
    assert d["coords"] == "original" and d["faces"] == 3
    assert set(d["per_class_f1"]) == set(FASSEG.classes)
    # The confusion matrix and per-face scores the figures are made of: they add up to the scores.
    cm = np.array(d["confusion"])
    assert d["classes"] == list(FASSEG.classes) and cm.shape == (6, 6)
    assert np.trace(cm) / cm.sum() == pytest.approx(d["pixel_acc"])
    assert [p["id"] for p in d["per_image"]] and len(d["per_image"]) == d["faces"]
    assert (out / "eval-test.png").stat().st_size > 0
    r = CliRunner().invoke(cli, ["eval", str(out), str(synthetic_cache), "--coords", "aligned", "--json",
                                 str(tmp_path / "a.json"), "--sheet", str(tmp_path / "a.png"), "--device", "cpu",
                                 "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "a.json").read_text())["coords"] == "aligned"
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_in_photo_coordinates_matches_an_independent_warp(run, synthetic_cache):
    ck = load_checkpoint(run[0] / "checkpoints/best.pt")
    model, schema = build_from_checkpoint(ck)
    r = evaluate(model, synthetic_cache, schema, split="test", coords="original")
    ds = FaceCache(synthetic_cache, split="test")
    cm, first = np.zeros((6, 6), np.int64), None
    with h5py.File(synthetic_cache, "r") as f, torch.no_grad():
        for j in ds.indices:
            x = to_input(f["images"][j][None], f["heatmaps"][j][None])
            probs = torch.softmax(model(x), 1)[0].numpy()
            pid = f["photo_ids"][j].decode()
            truth = f["photo_labels"][pid][()]
            pred = probs_to_photo(probs, f["matrices"][j], truth.shape).argmax(-1)
            assert pred.shape == truth.shape != (64, 64)  # the whole photo, not the crop
            c = confusion(pred, truth, 6)
            first = c if first is None else first
            cm += c
    assert np.array_equal(np.array(r["confusion"]), cm)
    assert r["per_image"][0][1] == pytest.approx(np.trace(first) / first.sum())


class _Oracle(torch.nn.Module):
    """Returns the cached aligned labels of whichever cached faces it is shown, as confident logits."""

    def __init__(self, cache):
        super().__init__()
        with h5py.File(cache, "r") as f:
            self.x = to_input(f["images"][:], f["heatmaps"][:])
            self.y = torch.from_numpy(f["labels"][:].astype(np.int64))

    def forward(self, x):
        idx = [int(((self.x - xi).abs().flatten(1).amax(1) < 1e-6).nonzero()[0]) for xi in x]
        y = self.y[idx].clamp(max=5)
        return torch.nn.functional.one_hot(y, 6).permute(0, 3, 1, 2).float() * 20


def test_eval_of_a_perfect_crop_model(synthetic_cache):
    oracle = _Oracle(synthetic_cache)
    aligned = evaluate(oracle, synthetic_cache, FASSEG, coords="aligned")
    assert aligned["pixel_acc"] == 1.0 and aligned["overall_f1"] == 1.0
    photo = evaluate(oracle, synthetic_cache, FASSEG, coords="original")
    # Warping back only blurs the edges a little.
    assert 0.9 < photo["pixel_acc"] < 1.0 and photo["overall_f1"] > 0.8


def test_eval_names_faces_by_their_own_ids(synthetic_cache):
    with h5py.File(synthetic_cache, "r") as f:
        ids = [i.decode() for i in f["ids"][:]]
        split = [s.decode() for s in f["split"][:]]
    r = evaluate(_Oracle(synthetic_cache), synthetic_cache, FASSEG, split="train", coords="aligned",
                 keep_images=True)
    assert [i for i, _, _ in r["per_image"]] == [i for i, s in zip(ids, split) if s == "train"]
    assert all(i == ids[j] for i, j, *_ in r["_images"])
