"""Stage `export`: a trained run to ONNX (dynamic batch), checked against torch on real faces."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facepipe.atomic import atomic_path
from facepipe.checkpoint import build_from_checkpoint, load_checkpoint, run_checkpoint
from facepipe.errors import FacepipeError

OPSET = 17  # supported by every onnxruntime >= 1.14


class _Logits(torch.nn.Module):
    """Export wrapper: logits only (no feature head), so the graph holds just the parser."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


def export_model(model: torch.nn.Module, in_channels: int, size: int, path, opset: int = OPSET) -> Path:
    model = model.eval()
    x = torch.zeros(1, in_channels, size, size)
    path = Path(path)
    import warnings

    with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings():
        # The TorchScript exporter is deprecated but needs no onnxscript; the graph is checked below.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(_Logits(model), (x,), str(tmp), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                          dynamo=False)
    return path


def check_onnx(path, model: torch.nn.Module, x: np.ndarray, threads: int = 0) -> float:
    """Max |onnxruntime - torch| over the logits of batch x."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.astype(np.float32)})[0]
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy()
    return float(np.abs(got - ref).max())


def export_run(run, out, cache=None, n_check: int = 8) -> dict:
    ck_path = run_checkpoint(run)
    ck = load_checkpoint(ck_path)
    model, schema = build_from_checkpoint(ck)
    size, cin = int(ck["size"]), int(ck["in_channels"])
    export_model(model, cin, size, out)
    # Check on real faces: the cache given, else the one the run trained on.
    if cache is None:
        import json

        cfg = Path(run) / "config.json"
        cache = json.loads(cfg.read_text()).get("cache") if cfg.exists() else None
    if cache and Path(cache).exists():
        from facepipe.dataset import FaceCache, to_input

        ds = FaceCache(cache, need_labels=False)
        f = ds._file()
        sel = np.arange(min(n_check, len(ds)))
        x = to_input(f["images"][sel], f["heatmaps"][sel] if ck["heatmap"] else None).numpy()
        source = f"{len(sel)} faces of {cache}"
    else:
        x = np.random.default_rng(0).normal(size=(2, cin, size, size)).astype(np.float32)
        source = "random input (no cache found)"
    diff = check_onnx(out, model, x)
    if not diff < 1e-2:
        raise FacepipeError(f"ONNX output differs from torch by {diff:.3g}; export is not trustworthy.")
    return {"onnx": str(out), "checkpoint": str(ck_path), "max_abs_diff": diff, "checked_on": source,
            "opset": OPSET, "size": size, "in_channels": cin, "bytes": Path(out).stat().st_size}
