"""Writing a parser as ONNX and opening an onnxruntime session on it: what `export` and `bench --backend
onnxruntime` share.

Input `image` is [batch, channels, height, width], output `logits` is [batch, classes, height, width];
batch, height and width are dynamic (the networks are fully convolutional), channels and classes fixed.
With fixed_size, height and width are fixed at the export size and every Resize takes constant scales
instead of sizes computed from the input's shape: onnxruntime's CPU provider then runs it in its blocked
(NCHWc) layout next to the convolutions, with no shape arithmetic and no layout copies around it.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
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
                 metadata: dict | None = None, fixed_size: bool = False) -> Path:
    """Write `model` as ONNX with named axes (and `metadata` as metadata_props), atomically. fixed_size:
    height and width fixed at `size`, resizes by constant scales (the batch stays dynamic)."""
    import onnx  # heavy, and only export and bench's onnxruntime backend need it

    model = model.eval()
    x = torch.zeros(1, in_channels, size, size)
    with torch.no_grad():
        classes = int(model(x).shape[1])
    path = Path(path)
    dyn = {0: "batch"} if fixed_size else {0: "batch", 2: "height", 3: "width"}
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
        if fixed_size:
            m = constant_resize_scales(m)
        if metadata:
            onnx.helper.set_model_props(m, {k: str(v) for k, v in metadata.items()})
            m.doc_string = metadata.get("description", "")
        onnx.save(m, str(tmp))
    return path


def constant_resize_scales(m):
    """The ONNX model m with each Resize whose output size the exporter computes from its input's shape
    (Shape -> Slice -> Concat) given constant scales instead, where shape inference fixes both sides'
    height and width and the ratio is exact; the shape arithmetic left unused is dropped. onnxruntime moves
    a Resize into its blocked layout only when its scales are a constant (graph_transformers: NchwcTransformer)."""
    import onnx  # heavy, and only exports with fixed_size come here
    from onnx import numpy_helper  # part of onnx, imported with it

    known = onnx.shape_inference.infer_shapes(m, data_prop=True).graph
    dims = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in [*known.value_info, *known.input, *known.output]}
    for k, node in enumerate(m.graph.node):
        if node.op_type != "Resize" or len(node.input) < 4 or not node.input[3]:
            continue
        a, b = dims.get(node.input[0]), dims.get(node.output[0])
        if not a or not b or len(a) != 4 or None in a[2:] + b[2:]:
            continue
        scales = np.array([1, 1, b[2] / a[2], b[3] / a[3]], np.float32)
        # onnxruntime sizes the output as floor(input x scale): keep only ratios that give the same size back.
        if any(int(np.floor(np.float32(n) * s)) != o for n, s, o in zip(a[2:], scales[2:], b[2:])):
            continue
        name = f"{node.name or 'resize'}_scales_{k}"
        m.graph.initializer.append(numpy_helper.from_array(scales, name))
        node.input[:] = [node.input[0], node.input[1], name]
    _drop_unused(m.graph)
    return m


def _drop_unused(graph) -> None:
    """Remove nodes none of whose outputs is read by another node or is a graph output, until none is left."""
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            return
        for n in dead:
            graph.node.remove(n)


def ort_session(path, threads: int = 0, inter_op_threads: int = 0, stop_spinning: bool = False):
    """A CPU onnxruntime session on the ONNX file `path`; 0 threads: onnxruntime's own choice.

    stop_spinning: the session's threads stop spinning as soon as a run returns (they spin on by default,
    waiting for more work, and hold the cores another session in the same process needs next)."""
    import onnxruntime as ort  # heavy, and only export's check, eval --int8 and bench's onnxruntime backend need it

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    if inter_op_threads:
        so.inter_op_num_threads = inter_op_threads
    if stop_spinning:
        so.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def onnxruntime_version() -> str:
    import onnxruntime  # heavy: imported only when a bench row records its environment

    return onnxruntime.__version__
