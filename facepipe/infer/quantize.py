"""int8 ONNX graphs: static quantization by onnxruntime's own tools, calibrated on real faces, and a module
that runs such a graph where a torch network was, so `eval` scores it on the path `parse` takes.

The scheme (chosen on FASSEG's training faces, results.md "onnxruntime in int8"): QDQ format, weights int8
per output channel, activations uint8 per tensor, ranges from the 99.999th percentile of each tensor's
values over the calibration faces (min-max lets a few outliers widen the ranges: in the aligned crop
0.06 and 0.13 points of accuracy lost on plain and pasted faces, against 0.00 and 0.02). The Resize that makes the graph's output stays in float: quantizing
the logits only adds a quantize and dequantize pair at full resolution and rounds the scores `parse` ranks.

Before export the network is equalised (`equalized`): a depthwise conv's output channels span ranges 4-22
times apart, and one uint8 scale per tensor leaves the narrow ones a few levels. Each depthwise conv read
by a 1x1 conv alone (nothing nonlinear between them) has its output channel c scaled by s_c and the 1x1
conv's input channel c by 1 / s_c, the same function, with s_c chosen so that channel c's activation
range and its largest 1x1 weight meet at their geometric mean (cross-layer equalisation, Nagel et al.
2019, "Data-free quantization through weight equalization and bias correction", here on measured
activation ranges): about an eighth less probability change under int8.

Weights use 7 of their 8 bits (`reduce_range`): on x86 CPUs without VNNI (AVX2 only, or AVX-512 without
VNNI), onnxruntime multiplies uint8 activations by int8 weights with an instruction that adds pairs of
products into a saturating 16-bit sum, and full-range weights overflow it. On an AMD EPYC with AVX2 only
the bundled default lost 2.1 points of overall F1 that way (0.9022 float -> 0.8809 as `parse` answers, plain
photos); with 7-bit weights 0.9012 (results.md, "int8 on CPUs without VNNI"). The file is the same on every
CPU, so it is made safe for all of them.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facepipe.data.face_cache import CacheFile, to_input
from facepipe.infer.checkpoint import run_cache
from facepipe.infer.face_crops import photo_faces
from facepipe.infer.onnx_io import export_model, ort_session
from facepipe.models.fold import fold_batchnorm
from facepipe.models.gray_route import GrayRoute, luma_input
from facepipe.util.align_spec import AlignSpec
from facepipe.util.atomic import atomic_path
from facepipe.util.errors import BadImage, FacepipeError
from facepipe.util.images import load_rgb
from facepipe.util.photos import list_photos
from facepipe.util.progress import SILENT, Reporter

CALIBRATION_FACES = 100  # evenly spaced over the split: onnxruntime keeps a histogram of every tensor
PERCENTILE = 99.999
SCHEME = ("int8 QDQ (onnxruntime.quantization.quantize_static): weights int8 in 7 bits per output channel, "
          f"activations uint8 per tensor, ranges at the {PERCENTILE}th percentile of the calibration faces; the "
          "output Resize in float; depthwise -> 1x1 conv pairs equalised before (facepipe.infer.quantize.equalized)")


def calibration_source(run, given: str | None, int8: bool = True) -> str | None:
    """What int8 calibration reads (a cache or a folder of photos): the one given, else the run's own training
    cache; None when not int8."""
    if not int8:
        if given:
            raise FacepipeError("--calibrate sets the ranges of int8 graphs: add --int8, or leave it out.")
        return None
    own = given or run_cache(run)
    if own:
        return own
    raise FacepipeError(f"int8 needs real faces to calibrate on, and {run} has no cache here: give --calibrate "
                        "PHOTOS/ (a folder of photos like the ones you will parse) or --calibrate CACHE.h5.")


def calibration_faces(source, heatmap: bool, spec: AlignSpec, n: int = CALIBRATION_FACES,
                      reporter: Reporter = SILENT) -> tuple[np.ndarray, str]:
    """Up to n network inputs (n, C, s, s) and a line saying which: from a cache, its training faces (all
    of them when it has no `train` split), evenly spaced; from a folder of photos, their faces cut as
    `parse` cuts them for a model aligned by `spec` (infer.face_crops)."""
    if Path(source).is_dir():
        return _photo_faces(source, heatmap, spec, n, reporter)
    if not Path(source).is_file():
        raise FacepipeError(f"calibration faces {source} do not exist (a cache file or a folder of photos).")
    with CacheFile(source) as cf:
        if cf.size != spec.size:
            raise FacepipeError(f"calibration cache {source} holds {cf.size} px faces; the model takes {spec.size} "
                                "px: give a cache made at the model's size, or a folder of photos.")
        split = "train" if "train" in cf.split_names() else None
        rows = cf.rows(split)
        rows = rows[np.linspace(0, len(rows) - 1, min(n, len(rows))).round().astype(int)]
        x = to_input(cf.read("images", rows), cf.read("heatmaps", rows) if heatmap else None).numpy()
    return x, f"{len(rows)} faces of {source}" + (" (train split)" if split else "")


def _photo_faces(folder, heatmap: bool, spec: AlignSpec, n: int, reporter: Reporter) -> tuple[np.ndarray, str]:
    """Faces of the photos in folder until n are found, the photos taken evenly spread first (every k-th,
    then the ones between), so that a large folder is sampled throughout; unreadable photos skipped."""
    photos, _ = list_photos(folder)
    k = max(1, len(photos) // n)
    order = list(range(0, len(photos), k)) + [i for i in range(len(photos)) if i % k]
    found, used, bad = [], 0, 0
    with reporter.task("calibration faces", n) as advance:
        for i in order:
            if sum(len(f) for f in found) >= n:
                break
            try:
                rgb = load_rgb(photos[i].path)
            except BadImage:
                bad += 1
                continue
            x = photo_faces(rgb, spec, heatmap)
            used += 1
            if x is not None:
                found.append(x)
                advance(len(x))
    skipped = f"; {bad} unreadable skipped" if bad else ""
    if not found:
        raise FacepipeError(f"no face found in the {used} photo{'s' * (used != 1)} read of {folder}{skipped} "
                            "(dlib's HOG detector, as parse uses it).")
    x = np.concatenate(found)[:n]
    return x, f"{len(x)} face{'s' * (len(x) != 1)} in {used} photo{'s' * (used != 1)} of {folder}{skipped}"


class _Faces:
    """onnxruntime's CalibrationDataReader protocol: one face at a time, then None."""

    def __init__(self, name: str, x: np.ndarray):
        self.name, self.rows = name, iter(x)

    def get_next(self):
        row = next(self.rows, None)
        return None if row is None else {self.name: row[None].astype(np.float32)}


def quantize_file(src, dst, x: np.ndarray) -> Path:
    """The float ONNX file src as an int8 graph at dst (atomically), calibrated on the inputs x (N, C, s, s)."""
    import onnx  # heavy, and only int8 export, eval and bench need it
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process  # part of onnxruntime

    if not len(x):
        raise FacepipeError("int8 calibration needs at least one face.")
    dst = Path(dst)
    with tempfile.TemporaryDirectory() as tmp, atomic_path(dst, suffix=".onnx") as out:
        pre = Path(tmp) / "pre.onnx"
        # onnxruntime's advice before quantizing: its graph optimisations and shape inference first.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        m = onnx.load(str(pre))
        outputs = {o.name for o in m.graph.output}
        keep = [n.name for n in m.graph.node if n.op_type == "Resize" and set(n.output) & outputs]
        # The calibrator prints its histogram settings; the stage's own table says what was done.
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(str(pre), str(out), _Faces(m.graph.input[0].name, x), quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=keep,
                            extra_options={"CalibPercentile": PERCENTILE})
        q = onnx.load(str(out))
        for p in m.metadata_props:  # quantize_static drops the file's self-description
            q.metadata_props.add(key=p.key, value=p.value)
        q.doc_string = m.doc_string
        onnx.save(q, str(out))
    return dst


def equalized(net: nn.Module, x: np.ndarray, batch: int = 10) -> nn.Module:
    """A copy of net with BatchNorm folded and every depthwise -> 1x1 conv pair equalised on the inputs x
    (module docstring); the same function up to float rounding. A network torch.fx cannot trace is
    returned folded as far as it goes, not equalised."""
    g = fold_batchnorm(net)
    pairs = _depthwise_pairs(g)
    if not pairs:
        return g
    peak: list[torch.Tensor | None] = [None] * len(pairs)

    def hook(k):
        def keep(_m, _i, out):
            a = out.detach().abs().amax((0, 2, 3))
            peak[k] = a if peak[k] is None else torch.maximum(peak[k], a)
        return keep

    hooks = [dw.register_forward_hook(hook(k)) for k, (dw, _) in enumerate(pairs)]
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch):
                g(torch.from_numpy(x[i:i + batch]))
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for (dw, pw), act in zip(pairs, peak):
            act = act.clamp_min(1e-6)
            w = pw.weight.abs().amax((0, 2, 3)).clamp_min(1e-6)
            s = (act * w).sqrt() / act
            dw.weight.mul_(s.view(-1, 1, 1, 1))
            if dw.bias is not None:
                dw.bias.mul_(s)
            pw.weight.div_(s.view(1, -1, 1, 1))
    return g


def _depthwise_pairs(g: nn.Module) -> list[tuple[nn.Conv2d, nn.Conv2d]]:
    """(depthwise conv, the 1x1 conv that alone reads its output) in an fx GraphModule; [] for another module."""
    graph = getattr(g, "graph", None)
    if graph is None:
        return []
    mods = dict(g.named_modules())
    pairs = []
    for node in graph.nodes:
        dw = mods.get(node.target) if node.op == "call_module" else None
        if not (isinstance(dw, nn.Conv2d) and dw.groups > 1 and dw.groups == dw.in_channels == dw.out_channels
                and len(node.users) == 1):
            continue
        user = next(iter(node.users))
        pw = mods.get(user.target) if user.op == "call_module" else None
        if isinstance(pw, nn.Conv2d) and pw.groups == 1 and pw.kernel_size == (1, 1) and user.args[0] is node:
            pairs.append((dw, pw))
    return pairs


class OrtNet(nn.Module):
    """An ONNX file run by onnxruntime behind a torch module's call: (N, C, s, s) float in, logits out."""

    def __init__(self, path, threads: int = 0):
        super().__init__()
        self.sess = ort_session(path, threads)
        self.input = self.sess.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float().cpu().contiguous().numpy()
        return torch.from_numpy(self.sess.run(None, {self.input: x})[0])


def int8_net(net: nn.Module, in_channels: int, size: int, x: np.ndarray, folder, threads: int = 0) -> nn.Module:
    """net with each of its networks (both branches of a GrayRoute) replaced by its int8 graph under
    onnxruntime, written to folder and calibrated on x: the gray branch on x's luma, as it is fed."""
    def one(name: str, branch: nn.Module, xb: np.ndarray) -> OrtNet:
        fp32, int8 = Path(folder) / f"{name}.onnx", Path(folder) / f"{name}-int8.onnx"
        export_model(equalized(branch, xb), in_channels, size, fp32, fixed_size=True)
        return OrtNet(quantize_file(fp32, int8, xb), threads)

    if isinstance(net, GrayRoute):
        gray = one("gray", net.gray, luma_input(torch.from_numpy(x)).numpy())
        return GrayRoute(one("color", net.color, x), gray, net.threshold, net.toned)
    return one("net", net, x)
