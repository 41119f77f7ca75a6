"""Writing a parser as ONNX and opening an onnxruntime session on it: what `export` and `bench --backend
onnxruntime` share.

Input `image` is [batch, channels, height, width], output `logits` is [batch, classes, height, width];
batch, height and width are dynamic (the networks are fully convolutional), channels and classes fixed.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from facepipe.util.atomic import atomic_path

OPSET = 17  # supported by every onnxruntime >= 1.14
INPUT, OUTPUT = "image", "logits"


class _Logits(torch.nn.Module):
    """Export wrapper: logits only (no feature head), so the graph holds just the parser."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


def export_model(model: torch.nn.Module, in_channels: int, size: int, path, opset: int = OPSET,
                 metadata: dict | None = None) -> Path:
    """Write `model` as ONNX with named axes (and `metadata` as metadata_props), atomically."""
    import onnx  # heavy, and only export and bench's onnxruntime backend need it

    model = model.eval()
    x = torch.zeros(1, in_channels, size, size)
    with torch.no_grad():
        classes = int(model(x).shape[1])
    path = Path(path)
    dyn = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings():
        # The TorchScript exporter is deprecated but needs no onnxscript; the graph is checked by the caller.
        warnings.simplefilter("ignore", DeprecationWarning)
        # The wrapper in eval mode too: the exporter restores the wrapper's mode afterwards, recursively, and a
        # wrapper left in training mode would switch the model's BatchNorm back to batch statistics.
        torch.onnx.export(_Logits(model).eval(), (x,), str(tmp), input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: dyn, OUTPUT: dyn}, opset_version=opset, dynamo=False)
        m = onnx.load(str(tmp))
        # Shape inference through Resize leaves the class axis unnamed ("Resizelogits_dim_1"): it is fixed.
        for value, n in ((m.graph.input[0], in_channels), (m.graph.output[0], classes)):
            d = value.type.tensor_type.shape.dim[1]
            d.ClearField("dim_param")
            d.dim_value = n
        if metadata:
            onnx.helper.set_model_props(m, {k: str(v) for k, v in metadata.items()})
            m.doc_string = metadata.get("description", "")
        onnx.save(m, str(tmp))
    return path


def ort_session(path, threads: int = 0, inter_op_threads: int = 0):
    """A CPU onnxruntime session on the ONNX file `path`; 0 threads: onnxruntime's own choice."""
    import onnxruntime as ort  # heavy, and only export's check and bench's onnxruntime backend need it

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    if inter_op_threads:
        so.inter_op_num_threads = inter_op_threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def onnxruntime_version() -> str:
    import onnxruntime  # heavy: imported only when a bench row records its environment

    return onnxruntime.__version__
