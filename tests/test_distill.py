"""Stages `pseudolabel` and `distill` on the synthetic cache, plus the KD loss itself."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import photo_area, synthetic_chain

from facepipe.cli import cli
from facepipe.data.face_cache import CacheFile, FaceCache, to_input
from facepipe.data.pseudo_file import PseudoFile, default_output
from facepipe.infer.checkpoint import load_checkpoint, run_checkpoint
from facepipe.infer.model import LoadedModel
from facepipe.learn.distill import DistillConfig, distill, kd_loss, teacher_targets
from facepipe.learn.pseudolabel import PseudoConfig, run_pseudolabel
from facepipe.util.errors import FacepipeError
from facepipe.util.manifest import file_sha256
from facepipe.util.progress import SILENT

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def teacher(tiny_run, tmp_path_factory):
    # A copy: pseudolabel's default output is TEACHER/pseudo/unlabeled.h5, inside the run.
    return Path(shutil.copytree(tiny_run, tmp_path_factory.mktemp("distill") / "t1"))


@pytest.fixture(scope="module")
def pseudo(teacher, synthetic_cache):
    # The labelled cache doubles as the unlabelled one: pseudolabel ignores labels.
    out = default_output(teacher)
    m = run_pseudolabel(PseudoConfig(teacher=str(teacher), src=str(synthetic_cache), out=str(out), batch_size=4,
                                     device="cpu", threads=1))
    return out, m


def pcfg(teacher, cache, out, **kw):
    return PseudoConfig(teacher=str(teacher), src=str(cache), out=str(out), batch_size=4, device="cpu", threads=1,
                        **kw)


def test_pseudolabel_file_holds_probs_confidence_ids_and_teacher(pseudo, teacher, synthetic_cache):
    out, m = pseudo
    assert out == Path(teacher) / "pseudo" / "unlabeled.h5" and out.exists()
    assert not Path(str(out) + ".partial").exists()
    with h5py.File(out, "r") as f, h5py.File(synthetic_cache, "r") as src:
        probs, conf = f["probs"][:], f["confidence"][:]
        assert probs.shape == (12, 6, 64, 64) and probs.dtype == np.uint8
        assert conf.shape == (12, 64, 64) and conf.dtype == np.uint8
        inside, outside = photo_area(src)
        assert inside.any() and outside.any()  # the synthetic crops leave their photos: both cases are tested
        # uint8 rounding: inside the photo each pixel's probabilities sum to ~255, and outside it (the black
        # fill) the teacher says nothing; the confidence is their maximum everywhere
        sums = probs.astype(int).sum(1)
        assert np.abs(sums[inside] - 255).max() <= 4 and sums[outside].max() == 0
        assert np.abs(conf.astype(int) - probs.max(1)).max() <= 1
        assert m["counts"]["outside_photo_share"] > 0
        assert [i.decode() for i in f["ids"][:]] == [i.decode() for i in src["ids"][:]]
        assert np.array_equal(f["images"][:], src["images"][:])
        assert f.attrs["format"] == "facepipe-pseudo" and f.attrs["done"] == 12
        assert json.loads(f.attrs["manifest"]) == m
    ck = Path(teacher) / "checkpoints" / "best.pt"
    assert m["teacher"]["checkpoint_sha256"] == file_sha256(ck)
    assert m["teacher"]["manifest_sha256"] == file_sha256(Path(teacher) / "manifest.json")
    assert m["counts"]["faces"] == 12 and 0 < m["counts"]["mean_confidence"] <= 1


def test_pseudolabel_can_keep_what_the_teacher_says_of_the_fill(teacher, synthetic_cache, tmp_path):
    m = run_pseudolabel(pcfg(teacher, synthetic_cache, tmp_path / "t.h5", outside_photo="teacher"))
    with h5py.File(tmp_path / "t.h5", "r") as f:
        assert np.abs(f["probs"][:].astype(int).sum(1) - 255).max() <= 4
    assert m["counts"]["outside_photo_share"] == 0 and m["config"]["outside_photo"] == "teacher"


def test_pseudolabel_rerun_is_a_no_op_and_another_teacher_is_refused(pseudo, teacher, synthetic_cache,
                                                                      tmp_path, train_tiny):
    out, m = pseudo
    before = out.stat().st_mtime_ns
    assert run_pseudolabel(pcfg(teacher, synthetic_cache, out)) == m
    assert out.stat().st_mtime_ns == before
    other = train_tiny(tmp_path / "t2", seed=1)
    with pytest.raises(FacepipeError, match="another teacher"):
        run_pseudolabel(pcfg(other, synthetic_cache, out))
    copy = tmp_path / "copy.h5"
    shutil.copy(out, copy)
    m2 = run_pseudolabel(pcfg(other, synthetic_cache, copy, force=True))
    assert m2["teacher"]["checkpoint_sha256"] == file_sha256(other / "checkpoints" / "best.pt")
    assert m2["teacher"]["checkpoint_sha256"] != m["teacher"]["checkpoint_sha256"]


def test_pseudolabel_resumes_from_a_partial_file(pseudo, teacher, synthetic_cache, tmp_path):
    out, m = pseudo
    with h5py.File(out, "r") as f:
        want = f["probs"][:]
    # An interrupted run: 4 of 12 faces written, the rest garbage, no manifest yet.
    target = tmp_path / "u.h5"
    part = Path(str(target) + ".partial")
    shutil.copy(out, part)
    with h5py.File(part, "a") as f:
        assert json.loads(f.attrs["config"])["teacher_id"] == m["teacher"]
        f.attrs["done"] = 4
        f["probs"][4:] = 7
        del f.attrs["manifest"], f.attrs["format"]
    m2 = run_pseudolabel(pcfg(teacher, synthetic_cache, target))
    assert not part.exists() and m2["counts"]["faces"] == 12
    with h5py.File(target, "r") as f:
        assert np.array_equal(f["probs"][:], want)
    # The faces before `done` were kept, not recomputed: a marker written there survives.
    part = tmp_path / "w.h5.partial"
    shutil.copy(out, part)
    with h5py.File(part, "a") as f:
        f.attrs["done"] = 8
        f["probs"][:8] = 9
        del f.attrs["manifest"], f.attrs["format"]
    run_pseudolabel(pcfg(teacher, synthetic_cache, tmp_path / "w.h5"))
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert (f["probs"][:8] == 9).all() and np.array_equal(f["probs"][8:], want[8:])


def test_distill_labelled_only(teacher, synthetic_cache, tmp_path):
    out = tmp_path / "s"
    m = distill(DistillConfig(teacher=str(teacher), out=str(out), unlabeled="none", arch="student-tiny", epochs=2,
                              device="cpu", threads=1, final_eval=""))
    assert m["counts"] == {"labeled_faces": 9, "unlabeled_faces": 0, "epochs": 2, "steps": 2}
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and "kd_labeled" in recs[0] and "kd_unlabeled" not in recs[0]
    ck = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ck["arch"] == "student-tiny" and ck["in_channels"] == 4


def test_labelled_faces_outside_the_photo_are_left_out_only_when_asked(teacher, synthetic_cache, tmp_path):
    """--outside-photo ignore: the labelled crops' black fill (found as the pseudo-label test finds it) gets
    label 255 and no teacher target, so neither loss sees it; label (the default) keeps the cache's labels
    and the teacher's answer there, and leaves the run's config as it was before the option."""
    teacher_model = LoadedModel.from_checkpoint(load_checkpoint(run_checkpoint(str(teacher))), teacher)
    rows, _, _, y_keep, p_keep = teacher_targets(teacher_model, FaceCache(synthetic_cache, split="train"), SILENT)
    _, _, _, y_ign, p_ign = teacher_targets(teacher_model, FaceCache(synthetic_cache, split="train",
                                                                     outside="ignore"), SILENT)
    _, _, _, y_edge, p_edge = teacher_targets(teacher_model, FaceCache(synthetic_cache, split="train",
                                                                       outside="edge"), SILENT)
    with h5py.File(synthetic_cache, "r") as src:
        inside, outside = (m[rows] for m in photo_area(src))
        assert np.array_equal(y_keep, src["labels"][:][rows]) and outside.any()
    assert (y_ign[outside] == 255).all() and np.array_equal(y_ign[inside], y_keep[inside])
    assert p_ign.transpose(0, 2, 3, 1)[outside].max() == 0
    assert np.array_equal(p_ign.transpose(0, 2, 3, 1)[inside], p_keep.transpose(0, 2, 3, 1)[inside])
    assert p_keep.astype(int).sum(1).min() > 240
    # edge: these drawn faces sit well inside their photos, so all their fill lies beyond a background and
    # keeps its label and the teacher's answer (tests/test_train.py holds fill beyond hair).
    assert np.array_equal(y_edge, y_keep) and np.array_equal(p_edge, p_keep)
    base = dict(teacher=str(teacher), unlabeled="none", arch="student-tiny", epochs=1, device="cpu", threads=1,
                final_eval="")
    distill(DistillConfig(out=str(tmp_path / "k"), **base))
    distill(DistillConfig(out=str(tmp_path / "i"), outside_photo="ignore", **base))
    assert "outside_photo" not in json.loads((tmp_path / "k" / "manifest.json").read_text())["config"]
    assert json.loads((tmp_path / "i" / "manifest.json").read_text())["config"]["outside_photo"] == "ignore"


def test_distill_with_the_pseudo_file(teacher, pseudo, synthetic_cache, tmp_path):
    out = tmp_path / "s"
    m = distill(DistillConfig(teacher=str(teacher), out=str(out), labeled=str(synthetic_cache),
                              unlabeled=str(pseudo[0]), arch="student-tiny", epochs=1, unlabeled_batch=4,
                              device="cpu", threads=1, final_eval=""))
    assert m["counts"]["unlabeled_faces"] == 12
    rec = json.loads((out / "metrics.jsonl").read_text())
    assert rec["kd_unlabeled"] > 0 and np.isfinite(rec["total"])


def test_distill_defaults_find_the_cache_and_pseudo_labels(teacher, pseudo, tmp_path, monkeypatch):
    monkeypatch.setattr("facepipe.learn.engine.set_threads", lambda n=0: 1)  # the CLI has no --threads
    out = tmp_path / "s"
    r = CliRunner().invoke(cli, ["distill", "--teacher", str(teacher), "--arch", "student-tiny", "--epochs", "1",
                                 "--out", str(out), "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    man = json.loads((out / "manifest.json").read_text())
    cache = json.loads((Path(teacher) / "config.json").read_text())["cache"]
    assert man["inputs"]["labeled"] == cache
    assert Path(man["inputs"]["unlabeled"]) == pseudo[0]
    assert man["counts"]["unlabeled_faces"] == 12
    assert json.loads((out / "eval.json").read_text())["coords"] == "original"


def test_distill_without_pseudo_labels_names_the_command(tiny_run, tmp_path):
    t = tiny_run  # read only: both refusals come before anything is written
    with pytest.raises(FacepipeError, match="facepipe pseudolabel"):
        distill(DistillConfig(teacher=str(t), out=str(tmp_path / "s"), arch="student-tiny", epochs=1,
                              device="cpu", threads=1))
    assert not (tmp_path / "s").exists()
    r = subprocess.run([sys.executable, "-m", "facepipe", "distill", "--teacher", str(t), "--out",
                        str(tmp_path / "s"), "--device", "cpu"], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=60)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error:") and "facepipe pseudolabel" in r.stderr



def test_distill_init_starts_from_a_student_and_records_it(teacher, synthetic_cache, tmp_path):
    # Two epochs from scratch, then one more epoch at a tiny learning rate from those weights and from
    # scratch: same seed, so the same batches and draws, and only the starting weights differ.
    base = {"teacher": str(teacher), "unlabeled": "none", "arch": "student-tiny", "device": "cpu", "threads": 1,
            "final_eval": "", "val_split": "none"}
    src = tmp_path / "src"
    distill(DistillConfig(out=str(src), epochs=2, **base))
    first = {}
    for name, init in (("warm", str(src)), ("cold", None)):
        distill(DistillConfig(out=str(tmp_path / name), epochs=1, lr=1e-6, init=init, **base))
        first[name] = json.loads((tmp_path / name / "metrics.jsonl").read_text())["ce"]
    assert first["warm"] < first["cold"] - 0.05, first
    man = json.loads((tmp_path / "warm" / "manifest.json").read_text())
    assert man["config"]["init"] == str(src)
    assert man["config"]["init_sha256"] == file_sha256(src / "checkpoints" / "best.pt")
    # Unused, --init stays out of the identity config, so runs made before it existed still resume.
    assert "init" not in json.loads((tmp_path / "cold" / "manifest.json").read_text())["config"]


def test_distill_init_widens_a_narrower_student(teacher, tmp_path):
    base = {"teacher": str(teacher), "unlabeled": "none", "arch": "student-tiny", "device": "cpu", "threads": 1,
            "final_eval": "", "val_split": "none"}
    src = tmp_path / "src"
    distill(DistillConfig(out=str(src), epochs=2, **base))
    first = {}
    for name, init, widths in (("warm", str(src), [12, 24, 48]), ("cold", None, [12, 24, 48]),
                               ("same", str(src), [8, 16, 32])):
        distill(DistillConfig(out=str(tmp_path / name), epochs=1, lr=1e-6, init=init,
                              model_kwargs={"widths": widths}, **base))
        first[name] = json.loads((tmp_path / name / "metrics.jsonl").read_text())["ce"]
    # Same batches and draws (same seed): the widened student starts where the narrow one stopped, so
    # its first epoch's loss is the narrow one's, far below a fresh wide student's.
    assert abs(first["warm"] - first["same"]) < 0.01 and first["warm"] < first["cold"] - 0.05, first
    ck = load_checkpoint(tmp_path / "warm" / "checkpoints" / "last.pt")
    assert list(ck["model_kwargs"]["widths"]) == [12, 24, 48]


def test_distill_init_narrows_a_wider_student(teacher, tmp_path):
    # The fast default's recipe: --init from a wider student, here a narrower stem and the ReLU after the
    # skip's add. The run starts from the wide run's leading channels and records what it built.
    base = {"teacher": str(teacher), "unlabeled": "none", "arch": "student-tiny", "device": "cpu", "threads": 1,
            "final_eval": "", "val_split": "none"}
    src = tmp_path / "src"
    distill(DistillConfig(out=str(src), epochs=1, **base))
    distill(DistillConfig(out=str(tmp_path / "cut"), epochs=1, lr=1e-9, init=str(src),
                          model_kwargs={"stem_width": 4, "relu_after_add": True}, **base))
    ck = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert ck["model_kwargs"]["stem_width"] == 4 and ck["model_kwargs"]["relu_after_add"] is True
    wide = load_checkpoint(src / "checkpoints" / "last.pt")["state_dict"]
    assert torch.allclose(ck["state_dict"]["stem.0.weight"], wide["stem.0.weight"][:4], atol=1e-5)
    assert torch.allclose(ck["state_dict"]["classifier.weight"], wide["classifier.weight"], atol=1e-5)


@pytest.mark.parametrize("args, says", [(["--arch", "student"], "this run builds student"),
                                        (["--init", "accurate"], "this run builds student-tiny"),
                                        (["--init", "no/such/run"], "--init: no/such/run does not exist"),
                                        (["--init", ""], "give a run folder, a checkpoint file or a bundled"),
                                        (["--model-kwargs", '{"widths": [4, 16, 64]}'], "cannot be widened or narrowed")])
def test_distill_init_that_does_not_fit_is_one_line_and_leaves_no_run(args, says, teacher, synthetic_cache,
                                                                       tmp_path):
    src = tmp_path / "src"
    distill(DistillConfig(teacher=str(teacher), out=str(src), unlabeled="none", arch="student-tiny", epochs=1,
                          device="cpu", threads=1, final_eval=""))
    out = tmp_path / "bad"
    argv = ["distill", "--teacher", str(teacher), "--unlabeled", "none", "--out", str(out), "--arch",
            "student-tiny", "--init", str(src), "--epochs", "1", "--threads", "1", "--device", "cpu", "-q"] + args
    r = CliRunner().invoke(cli, argv)
    said = r.output + (str(r.exception) if isinstance(r.exception, FacepipeError) else "")
    assert r.exit_code != 0 and says in said and "Traceback" not in r.output, (r.output, r.exception)
    assert not out.exists()

# --- the KD loss ---------------------------------------------------------------------------------------

def _teacher_probs(seed=0, shape=(2, 6, 5, 7)):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(*shape, generator=g) * 2, 1)


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_kd_loss_is_zero_when_the_student_matches(T):
    p = _teacher_probs()
    valid = torch.ones(2, 5, 7)
    assert kd_loss(torch.log(p), p, T, valid).abs() < 1e-5
    assert kd_loss(torch.log(p) + 3.0, p, T, valid).abs() < 1e-5  # a constant shift is the same softmax
    assert kd_loss(torch.zeros_like(p), p, T, valid) > 1e-3
    assert kd_loss(torch.log(_teacher_probs(1)), p, T, valid) > 1e-3


def test_kd_loss_leaves_invalid_pixels_out():
    p = _teacher_probs()
    valid = torch.zeros(2, 5, 7)
    valid[:, :, :3] = 1
    student = torch.log(p).clone()
    student[..., 3:] = torch.randn(2, 6, 5, 4) * 5  # wrong only where invalid
    assert kd_loss(student, p, 1.0, valid).abs() < 1e-5
    wrong = torch.randn(2, 6, 5, 7)
    full = kd_loss(wrong, p, 1.0, torch.ones(2, 5, 7))
    part = kd_loss(wrong, p, 1.0, valid)
    assert part > 0 and not torch.isclose(part, full)
    # the mean is over valid pixels: same per-pixel KL values, any number of invalid ones
    assert torch.isclose(kd_loss(wrong[..., :3], p[..., :3], 1.0, torch.ones(2, 5, 3)), part)
    assert kd_loss(wrong, p, 1.0, torch.zeros(2, 5, 7)) == 0


def test_distill_from_a_checkpoint_file_names_the_inputs_it_needs(teacher, synthetic_cache, tmp_path):
    ck = str(Path(teacher) / "checkpoints" / "best.pt")
    out = tmp_path / "s"
    with pytest.raises(FacepipeError, match=r"is a checkpoint, not a run folder: pass --labeled CACHE and "
                                            r"--unlabeled PSEUDO\.h5"):
        distill(DistillConfig(teacher=ck, out=str(out), arch="student-tiny", epochs=1, device="cpu", threads=1))
    assert not out.exists()
    m = distill(DistillConfig(teacher=ck, out=str(out), labeled=str(synthetic_cache), unlabeled="none",
                              arch="student-tiny", epochs=1, device="cpu", threads=1, final_eval=""))
    assert m["inputs"]["teacher"] == str(Path(ck).resolve()) and m["counts"]["labeled_faces"] == 9


def test_the_student_trains_in_fp32_on_a_cpu_even_where_bf16_is_native(monkeypatch):
    from facepipe.learn.distill import student_amp

    monkeypatch.setattr("facepipe.learn.engine.amp_dtype", lambda device: torch.bfloat16)  # a bf16 CPU
    assert student_amp(torch.device("cpu"), True).dtype is None
    from facepipe.learn.engine import Amp
    assert Amp(torch.device("cpu"), True).dtype == torch.bfloat16  # train's teacher keeps bf16


@pytest.fixture(scope="module")
def cache48(synthetic_set, tmp_path_factory):
    """The synthetic faces aligned at 48 px: the teacher fixture was trained on 64 px crops."""
    return synthetic_chain(tmp_path_factory.mktemp("c48"), synthetic_set, 48)


def test_a_teacher_of_another_side_labels_crops_at_its_own(teacher, synthetic_cache, cache48, tmp_path, monkeypatch):
    # The teacher was trained on 64 px crops. On the same faces cut at 48 px it answers for the crops
    # resampled to 64 px, its answers resampled to 48: about its 64 px answers shrunk, where the 48 px
    # crops fed as they are show it faces at a scale it never saw.
    from facepipe.infer.predict import AtSide, resample_batch

    t = LoadedModel.load(teacher)
    with CacheFile(synthetic_cache) as big, CacheFile(cache48) as small:
        rows = np.arange(len(big))
        x64 = to_input(big.read("images", rows), big.read("heatmaps", rows))
        x48 = to_input(small.read("images", rows), small.read("heatmaps", rows))
    ref = resample_batch(t.predict(x64), 48)
    own = t.predict_at_own_side(x48)
    assert own.shape == ref.shape and torch.allclose(own.sum(1), torch.ones(1), atol=1e-4)
    assert (own - ref).abs().mean() < 0.5 * (t.predict(x48) - ref).abs().mean()
    assert torch.equal(t.predict_at_own_side(x64), t.predict(x64))
    # eval runs the network the same way on them (its note says so), as it was on its own crops
    import facepipe.infer.evaluate as ev

    seen, real = [], ev.predict_probs
    monkeypatch.setattr(ev, "predict_probs", lambda net, *a, **k: seen.append(net) or real(net, *a, **k))
    ev.evaluate_model(t, cache48, coords="aligned")
    assert seen and all(isinstance(n, AtSide) and n.net is t.net and n.side == 64 for n in seen)
    assert ev.evaluate_model(t, synthetic_cache)["confusion"] == ev.evaluate(t.net, synthetic_cache, t.schema)["confusion"]
    # pseudolabel and distill take such crops, the student at 48 px
    m = run_pseudolabel(pcfg(teacher, cache48, tmp_path / "p48.h5"))
    with PseudoFile(tmp_path / "p48.h5") as pf:
        assert pf.size == 48 and m["teacher_size"] == 64
    out = tmp_path / "s"
    argv = ["distill", "--teacher", str(teacher), "--labeled", str(cache48), "--unlabeled", str(tmp_path / "p48.h5"),
            "--out", str(out), "--arch", "student-tiny", "--epochs", "1", "--threads", "1", "--device", "cpu"]
    r = CliRunner().invoke(cli, argv)
    assert r.exit_code == 0, (r.output, r.exception)
    assert "the teacher was trained on 64px crops" in r.output
    student = LoadedModel.load(out)
    assert student.size == 48 and student.align.size == 48  # parse cuts it 48 px crops, not the teacher's 64


def test_distill_refuses_pseudo_labels_of_another_size(teacher, pseudo, tmp_path):
    # 64 px labelled faces with pseudo-labels made at 48 px would teach the student two scales.
    out = tmp_path / "s"
    odd = tmp_path / "odd.h5"
    shutil.copy(pseudo[0], odd)
    with h5py.File(odd, "r+") as f:
        f.attrs["size"] = 48
    with pytest.raises(FacepipeError, match=r"holds 48px faces but .* 64px ones"):
        distill(DistillConfig(teacher=str(teacher), out=str(out), unlabeled=str(odd), arch="student-tiny", epochs=1,
                              device="cpu", threads=1, final_eval=""))
    assert not out.exists()
