"""`export`: a trained run to ONNX with a dynamic batch, checked against torch."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from facepipe.checkpoint import build_from_checkpoint, load_checkpoint
from facepipe.cli import cli
from facepipe.export import export_run
from facepipe.train import TrainConfig, train


@pytest.fixture(scope="module")
def run(synthetic_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "t"
    train(TrainConfig(cache=str(synthetic_cache), out=str(out), arch="teacher-small", epochs=1, loss="ce",
                      val_split="none", device="cpu", threads=1, final_eval=""))
    return out


def test_export_run_matches_torch_and_takes_any_batch(run, tmp_path):
    import onnxruntime as ort

    path = tmp_path / "t.onnx"
    r = export_run(run, path)
    assert path.stat().st_size == r["bytes"] > 0
    assert r["max_abs_diff"] < 1e-3 and r["checked_on"].startswith("8 faces of")
    assert r["size"] == 64 and r["in_channels"] == 4
    model, _ = build_from_checkpoint(load_checkpoint(run / "checkpoints" / "best.pt"))
    x = np.random.default_rng(0).normal(size=(3, 4, 64, 64)).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    assert got.shape == (3, 6, 64, 64)
    with torch.no_grad():
        assert np.abs(got - model(torch.from_numpy(x)).numpy()).max() < 1e-3


def test_export_cli(run, tmp_path):
    r = CliRunner().invoke(cli, ["export", str(run), "--onnx", str(tmp_path / "c.onnx")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "c.onnx").stat().st_size > 0 and "max_abs_diff" in r.output
