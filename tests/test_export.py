"""`export`: a trained run or a bundled model to a self-describing ONNX file, checked against torch."""
import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from facepipe.cli import cli
from facepipe.infer.checkpoint import BUNDLED, build_from_checkpoint, load_checkpoint, run_checkpoint
from facepipe.infer.export import export_run
from facepipe.util.errors import FacepipeError

META_KEYS = {"facepipe_version", "arch", "model_kwargs", "source_checkpoint", "source_sha256", "schema", "classes",
             "input_name", "output_name", "input_size", "input_layout", "input_channels", "input_dtype",
             "normalization", "heatmap", "alignment", "output"}


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run


def _session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def test_export_run_matches_torch_and_takes_any_batch(run, tmp_path):
    path = tmp_path / "t.onnx"
    r = export_run(run, path)
    assert path.stat().st_size == r["bytes"] > 0
    assert r["max_abs_diff"] < 1e-3 and r["label_agreement"] > 0.999 and r["checked_on"].startswith("8 faces of")
    assert r["size"] == 64 and r["in_channels"] == 4
    model, _ = build_from_checkpoint(load_checkpoint(run / "checkpoints" / "best.pt"))
    x = np.random.default_rng(0).normal(size=(3, 4, 64, 64)).astype(np.float32)
    got = _session(path).run(None, {"image": x})[0]
    assert got.shape == (3, 6, 64, 64)
    with torch.no_grad():
        assert np.abs(got - model(torch.from_numpy(x)).numpy()).max() < 1e-3


def test_fixed_size_export_resizes_by_constant_scales_and_keeps_a_free_batch(run, tmp_path):
    import onnx

    free, fixed = tmp_path / "free.onnx", tmp_path / "fixed.onnx"
    export_run(run, free)
    r = export_run(run, fixed, fixed_size=True)
    assert r["input"].startswith("image (batch, 4, 64, 64)") and r["max_abs_diff"] < 1e-3
    g = onnx.load(str(fixed)).graph
    dims = [d.dim_param or d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 4, 64, 64]
    # Every Resize reads a constant scales input and no sizes; the shape arithmetic before them is gone.
    consts = {i.name for i in g.initializer}
    resizes = [n for n in g.node if n.op_type == "Resize"]
    assert resizes and all(len(n.input) == 3 and n.input[2] in consts for n in resizes)
    assert not {"Shape", "Gather", "Slice"} & {n.op_type for n in g.node}
    assert any(n.op_type == "Shape" for n in onnx.load(str(free)).graph.node)  # what it replaced
    x = np.random.default_rng(1).normal(size=(3, 4, 64, 64)).astype(np.float32)
    a, b = _session(fixed).run(None, {"image": x})[0], _session(free).run(None, {"image": x})[0]
    assert a.shape == (3, 6, 64, 64) and np.abs(a - b).max() < 1e-4
    with pytest.raises(Exception, match="(?i)dimension"):
        _session(fixed).run(None, {"image": x[:, :, :48, :48]})
    # The CLI flag reaches it.
    res = CliRunner().invoke(cli, ["export", str(run), "--onnx", str(tmp_path / "c.onnx"), "--fixed-size"])
    assert res.exit_code == 0, res.output
    shape = onnx.load(str(tmp_path / "c.onnx")).graph.input[0].type.tensor_type.shape
    assert [d.dim_value for d in shape.dim][2:] == [64, 64]


def test_export_without_cache_or_face_says_random(run, tmp_path, monkeypatch):
    import facepipe.infer.export as ex

    ck = tmp_path / "t.pt"  # a bare checkpoint file: no run folder, so no cache to check on
    shutil.copy(run / "checkpoints" / "best.pt", ck)
    monkeypatch.setattr(ex, "astronaut_faces", lambda *a, **k: None)
    r = export_run(ck, tmp_path / "r.onnx")
    assert r["checked_on"].startswith("random input") and r["max_abs_diff"] < 1e-3


def test_export_refuses_missing_cache_before_writing(run, tmp_path):
    with pytest.raises(FacepipeError, match="does not exist"):
        export_run(run, tmp_path / "m.onnx", cache=str(tmp_path / "nope.h5"))
    assert not (tmp_path / "m.onnx").exists()


def test_export_cli(run, tmp_path):
    r = CliRunner().invoke(cli, ["export", str(run), "--onnx", str(tmp_path / "c.onnx")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "c.onnx").stat().st_size > 0 and "max_abs_diff" in r.output
    # -q, as every stage takes it: the file, checked as before, and no table
    r = CliRunner().invoke(cli, ["export", str(run), "--onnx", str(tmp_path / "q.onnx"), "-q"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "q.onnx").stat().st_size > 0 and "max_abs_diff" not in r.output


def test_bundled_names_resolve_and_paths_win(tmp_path, monkeypatch):
    assert set(BUNDLED) >= {"default", "fast"}
    assert run_checkpoint("fast") == run_checkpoint("default") and run_checkpoint("fast").name == "default.pt"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast").write_bytes(b"")  # a file called `fast` here is that file, not the bundled model
    assert run_checkpoint("fast").resolve() == (tmp_path / "fast").resolve()
    (tmp_path / "default").mkdir()  # and a folder called `default` is a run folder (without checkpoints)
    with pytest.raises(FacepipeError, match="default is a folder here with no checkpoint"):
        run_checkpoint("default")
    with pytest.raises(FacepipeError, match="bundled model"):
        run_checkpoint("no-such-model")


@pytest.mark.slow
def test_export_bundled_by_name_is_self_describing(tmp_path):
    """The shipped student by name, checked on the astronaut photo; the file says how to feed it."""
    from facepipe.infer.export import astronaut_faces

    path = tmp_path / "fast.onnx"
    r = CliRunner().invoke(cli, ["export", "fast", "--onnx", str(path)])
    assert r.exit_code == 0, r.output
    assert "astronaut" in r.output

    import onnx

    m = onnx.load(str(path))
    meta = {p.key: p.value for p in m.metadata_props}
    assert META_KEYS <= set(meta)
    assert meta["source_checkpoint"] == "bundled:fast" and len(meta["source_sha256"]) == 64
    assert meta["arch"] == "student" and meta["input_layout"] == "NCHW" and meta["input_size"] == "256"
    assert json.loads(meta["input_channels"]) == ["R", "G", "B", "heatmap"]
    classes = json.loads(meta["classes"])
    assert [c["name"] for c in classes] == ["background", "hair", "skin", "eyes", "nose", "mouth"]
    assert all(len(c["color"]) == 3 for c in classes)
    norm = json.loads(meta["normalization"])
    assert len(norm["mean"]) == 3 and len(norm["std"]) == 3
    align = json.loads(meta["alignment"])
    assert align["size"] == 256 and align["iod"] == 0.22 and align["letterbox"] is False
    assert np.asarray(align["template"]).shape == (5, 2)

    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert [i.name for i in m.graph.input] == ["image"] and [o.name for o in m.graph.output] == ["logits"]
    assert dims(m.graph.input[0]) == ["batch", 4, "height", "width"]
    assert dims(m.graph.output[0]) == ["batch", 6, "height", "width"]

    # onnxruntime and torch agree on the real face, pixel for pixel in class.
    x = astronaut_faces(256)
    assert x is not None, "dlib found no face in the astronaut photo"
    got = _session(path).run(None, {"image": x})[0]
    model, _ = build_from_checkpoint(load_checkpoint(run_checkpoint("fast")))
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() < 1e-3 and (got.argmax(1) == ref.argmax(1)).mean() > 0.999
    # The face is parsed as a face: skin, eyes, nose and mouth all present.
    assert {2, 3, 4, 5} <= set(np.unique(ref[0].argmax(0)).tolist())


def test_relu_after_add_lets_onnxruntime_fold_the_context_skips_into_their_convs(tmp_path):
    # The reason the fast default has relu_after_add: onnxruntime's blocked-layout convs add a skip input
    # before their activation, so relu(x + conv(h)) becomes one node and x + relu(conv(h)) stays two.
    import onnx
    import onnxruntime as ort

    from facepipe.infer.onnx_io import export_model
    from facepipe.models import create_model
    from facepipe.models.fold import fold_batchnorm

    adds = {}
    for after in (False, True):
        m = create_model("student", 6, in_channels=4, widths=(16, 32, 64), relu_after_add=after).eval()
        path, opt = tmp_path / f"{after}.onnx", tmp_path / f"{after}-opt.onnx"
        export_model(fold_batchnorm(m), 4, 64, path, fixed_size=True)
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(opt)
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        nodes = onnx.load(str(opt)).graph.node
        if not any(n.domain == "com.microsoft.nchwc" for n in nodes):
            pytest.skip("onnxruntime uses no blocked layout on this CPU (it needs AVX2 or better)")
        adds[after] = sum(n.op_type == "Add" for n in nodes)
    assert adds[True] == adds[False] - 3, adds  # the three context blocks' skips; the decoder's add stays
