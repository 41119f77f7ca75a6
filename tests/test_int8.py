"""int8 ONNX graphs (infer.quantize): `export --int8`, `eval --int8`, `bench --dtype int8`, and the thread pool
bench's onnxruntime rows run with."""
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from facepipe.cli import cli
from facepipe.infer.bench import BASELINE, BenchConfig, arch_entry, bench_speed
from facepipe.infer.bench_report import run_bench
from facepipe.infer.eval_report import EvalConfig, run_eval, score_json
from facepipe.infer.export import export_run
from facepipe.infer.onnx_io import ort_session
from facepipe.util.errors import FacepipeError

TINY = dict(sizes=(64,), batches=(1,), threads=1, seconds=0.05, min_iters=2, warmup=1)


def _graph(path):
    import onnx  # only these tests read graphs

    return onnx.load(str(path))


def test_int8_export_quantizes_the_convolutions_and_keeps_the_output_in_float(tiny_run, tmp_path):
    float_path, path = tmp_path / "f.onnx", tmp_path / "q.onnx"
    export_run(tiny_run, float_path, fixed_size=True)
    r = export_run(tiny_run, path, fixed_size=True, int8=True)
    assert r["int8_label_agreement"] >= 0.95 and r["max_abs_diff"] < 1e-3
    assert "(train split)" in r["int8_calibrated_on"] and str(json.loads((tiny_run / "config.json").read_text())[
        "cache"]) in r["int8_calibrated_on"]
    m = _graph(path)
    ops = [n.op_type for n in m.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # Every conv's weight is stored in int8 (with its per-channel scales), not float.
    weights = {i.name: i for i in m.graph.initializer}
    conv_w = [n.input[1] for n in m.graph.node if n.op_type == "Conv"]
    feeding = {n.output[0]: n for n in m.graph.node}
    assert conv_w and all(feeding[w].op_type == "DequantizeLinear" and weights[feeding[w].input[0]].data_type == 3
                          for w in conv_w)  # 3: INT8
    # ... in 7 bits: full-range int8 weights overflow onnxruntime's 16-bit sums on CPUs without VNNI
    from onnx import numpy_helper
    q = [numpy_helper.to_array(weights[feeding[w].input[0]]) for w in conv_w]
    assert all(np.abs(a.astype(int)).max() <= 64 for a in q) and max(np.abs(a.astype(int)).max() for a in q) > 32
    # The logits come from a Resize that reads float and is not quantized after it.
    last = feeding[m.graph.output[0].name]
    assert last.op_type == "Resize" and feeding[last.input[0]].op_type == "DequantizeLinear"
    meta = {p.key: p.value for p in m.metadata_props}
    assert "int8" in json.loads(meta["quantization"])["scheme"] and meta["arch"]  # still self-describing
    assert path.stat().st_size < float_path.stat().st_size
    x = np.random.default_rng(0).normal(size=(2, 4, 64, 64)).astype(np.float32)
    assert ort_session(path, 1).run(None, {"image": x})[0].shape == (2, 6, 64, 64)


def test_int8_needs_a_cache_to_calibrate_on_and_writes_nothing_without_one(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "moved")
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(dict(cfg, cache=str(tmp_path / "gone.h5"))))
    out = tmp_path / "q.onnx"
    with pytest.raises(FacepipeError, match="--calibrate"):
        export_run(run, out, int8=True)
    assert not list(tmp_path.glob("*.onnx"))
    res = CliRunner().invoke(cli, ["export", str(run), "--onnx", str(out), "--int8", "--calibrate", "/nope.h5"])
    assert isinstance(res.exception, FacepipeError) and "/nope.h5 do not exist" in str(res.exception)
    assert not out.exists()  # (the real CLI prints a FacepipeError as one line: tests/test_bad_input.py)
    with pytest.raises(FacepipeError, match="add --int8"):
        export_run(run, out, calibrate=cfg["cache"])  # ranges for a float graph: a mistake, said so
    with pytest.raises(FacepipeError, match="holds 64 px faces; the model takes 256 px"):  # photos would do
        export_run("default", out, int8=True, calibrate=cfg["cache"])
    with pytest.raises(FacepipeError, match="add --int8"):
        run_eval(EvalConfig(run=str(run), cache=cfg["cache"], calibrate=cfg["cache"]))
    assert not list(tmp_path.glob("*.onnx"))
    # Given a cache, it calibrates there.
    res = CliRunner().invoke(cli, ["export", str(run), "--onnx", str(out), "--int8", "--calibrate", cfg["cache"]])
    assert res.exit_code == 0, res.output
    assert out.is_file() and not list(tmp_path.glob(".*fp32.onnx"))  # the float graph is not left behind


def test_eval_int8_scores_the_int8_graphs_on_parse_path(tiny_run, monkeypatch):
    from facepipe.infer import quantize

    cache = json.loads((tiny_run / "config.json").read_text())["cache"]
    base = run_eval(EvalConfig(run=str(tiny_run), cache=cache, device="cpu"))
    calls, forward = [], quantize.OrtNet.forward
    monkeypatch.setattr(quantize.OrtNet, "forward", lambda self, x: calls.append(len(x)) or forward(self, x))
    q = run_eval(EvalConfig(run=str(tiny_run), cache=cache, device="cpu", int8=True))
    assert sum(calls) == q.result["faces"] > 0  # every face went through the int8 graph
    assert "int8 under onnxruntime" in q.title and q.int8.endswith("(train split)")
    assert base.int8 is None and score_json(base)["int8"] is None and score_json(q)["int8"] == q.int8
    a, b = base.result["pixel_acc"], q.result["pixel_acc"]
    assert abs(a - b) < 0.02


def test_bench_int8_times_the_baseline_in_both_precisions():
    entries = [arch_entry("student-tiny"), arch_entry(BASELINE)]
    rows = bench_speed(entries, BenchConfig(backend="onnxruntime", dtype="int8", **TINY))
    assert [(r["model"], r["dtype"]) for r in rows] == [("student-tiny", "int8"), (BASELINE, "int8"),
                                                        (f"{BASELINE} (fp32)", "fp32")]
    assert rows[1]["ratio_to_baseline"] == 1.0 and rows[2]["ratio_to_fp32_baseline"] == 1.0
    assert rows[0]["ratio_to_baseline"] == pytest.approx(rows[0]["fps"] / rows[1]["fps"])
    assert rows[0]["ratio_to_fp32_baseline"] == pytest.approx(rows[0]["fps"] / rows[2]["fps"])
    with pytest.raises(FacepipeError, match="--backend onnxruntime"):
        bench_speed(entries, BenchConfig(dtype="int8", **TINY))
    res = CliRunner().invoke(cli, ["bench", "--fps", "--arch", "student-tiny", "--size", "64", "--seconds", "0.05",
                                   "--dtype", "int8", "--no-baseline"])
    assert isinstance(res.exception, FacepipeError) and "--backend onnxruntime" in str(res.exception)
    for half in ("bf16", "fp16"):  # the graphs are float32: a row labelled bf16 would time fp32
        with pytest.raises(FacepipeError, match="float32 graphs"):
            bench_speed(entries, BenchConfig(backend="onnxruntime", dtype=half, **TINY))
    with pytest.raises(FacepipeError, match="eval RUN CACHE --int8"):  # its accuracy would be the float network's
        run_bench(["default"], (), BenchConfig(backend="onnxruntime", dtype="int8", **TINY), cache="c.h5")


def test_bench_sessions_stop_spinning_when_a_call_returns(monkeypatch):
    from facepipe.infer import bench

    made = []
    monkeypatch.setattr(bench, "ort_session", lambda *a, **k: made.append(ort_session(*a, **k)) or made[-1])
    bench_speed([arch_entry("student-tiny")], BenchConfig(backend="onnxruntime", **TINY))
    key = "session.force_spinning_stop"
    assert made and all(s.get_session_options().get_session_config_entry(key) == "1" for s in made)


def test_equalized_keeps_the_function_and_evens_the_depthwise_ranges():
    import torch

    from facepipe.infer.quantize import _depthwise_pairs, equalized
    from facepipe.models import create_model
    from facepipe.models.fold import fold_batchnorm

    torch.manual_seed(0)
    net = create_model("student", num_classes=6, in_channels=4).eval()
    with torch.no_grad():  # channels of very different ranges, as training leaves them
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand_like(m.weight) * 20 + 0.1)
    x = torch.randn(6, 4, 64, 64)
    eq = equalized(net, x.numpy())
    with torch.no_grad():
        ref, got = net(x), eq(x)
    assert (got - ref).abs().max() < 1e-3 * ref.abs().max()
    folded = fold_batchnorm(net)
    assert len(_depthwise_pairs(folded)) == len(_depthwise_pairs(eq)) >= 4  # down4, down8, context, fuse4

    def spread(model):  # per pair: the widest depthwise output channel's range over the narrowest
        out = []
        for dw, _ in _depthwise_pairs(model):
            seen = []
            h = dw.register_forward_hook(lambda _m, _i, o: seen.append(o.abs().amax((0, 2, 3))))
            with torch.no_grad():
                model(x)
            h.remove()
            out.append(float(seen[0].max() / seen[0].min().clamp_min(1e-6)))
        return out

    assert all(a < b for a, b in zip(spread(eq), spread(folded)))


def test_int8_calibrates_on_a_folder_of_photos_cut_as_parse_cuts_them(tmp_path):
    from PIL import Image
    from skimage import data as skimage_data

    from facepipe.infer.quantize import calibration_faces
    from facepipe.util.align_spec import AlignSpec

    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    Image.fromarray(skimage_data.astronaut()).save(photos / "sub" / "astronaut.png")
    Image.fromarray(np.full((80, 120, 3), 128, np.uint8)).save(photos / "wall.png")  # no face
    (photos / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    x, line = calibration_faces(photos, True, AlignSpec(64))
    assert x.shape == (1, 4, 64, 64) and line.startswith("1 face in 2 photos of") and "1 unreadable skipped" in line
    x3, _ = calibration_faces(photos, False, AlignSpec(64))
    assert x3.shape == (1, 3, 64, 64) and np.allclose(x3, x[:, :3])
    (photos / "sub" / "astronaut.png").unlink()
    with pytest.raises(FacepipeError, match="no face found in the 1 photo read of .*; 1 unreadable skipped"):
        calibration_faces(photos, True, AlignSpec(64))
