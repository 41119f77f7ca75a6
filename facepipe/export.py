"""Stage `export`: a trained run, checkpoint or bundled model (`default`, `fast`) to ONNX, checked
against torch on a real face.

The file describes itself (ONNX metadata_props, strings; JSON where structured), so that a program with
only the .onnx file can prepare its input and read its output: classes with names and colours, input
layout, channel order and normalisation, how the heatmap channel is drawn, the alignment template, the
architecture, the source checkpoint's sha256 and the facepipe version. Input `image` is
[batch, channels, height, width], output `logits` is [batch, classes, height, width]; batch, height and
width are dynamic (the networks are fully convolutional), channels and classes are fixed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from facepipe import __version__
from facepipe.atomic import atomic_path
from facepipe.checkpoint import BUNDLED, build_from_checkpoint, load_checkpoint, run_checkpoint
from facepipe.errors import FacepipeError
from facepipe.manifest import file_sha256

OPSET = 17  # supported by every onnxruntime >= 1.14
INPUT, OUTPUT = "image", "logits"
# dlib HOG scores below ~0.2 were mostly false positives on our photos (a badge on the astronaut);
# the same cut as `parse --min-score`.
MIN_FACE_SCORE = 0.2


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
    import warnings

    import onnx

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


def onnx_metadata(ck: dict, ck_path, source: str) -> dict[str, str]:
    """metadata_props for a checkpoint: everything needed to prepare an input and read an output."""
    from facepipe.dataset import MEAN, STD
    from facepipe.geometry import template
    from facepipe.heatmap import sigma, square_side
    from facepipe.schema import LabelSchema

    schema = LabelSchema.from_dict(ck["schema"])
    size, heat = int(ck["size"]), bool(ck["heatmap"])
    align = ck.get("align") or {}
    iod, letterbox = float(align.get("iod", 0.22)), bool(align.get("letterbox", False))
    channels = ["R", "G", "B"] + (["heatmap"] if heat else [])
    norm = {"R,G,B": "(pixel - mean) / std on 0..255 values", "mean": [round(float(v), 4) for v in MEAN],
            "std": [round(float(v), 4) for v in STD]}
    if heat:
        norm["heatmap"] = "uint8 heatmap / 255, in [0, 1]"
    # `align.landmarks` is "dataset" when training used the dataset's own points, else dlib's 68 (a folder).
    points = ("the dataset's own landmarks" if align.get("landmarks") == "dataset" else "the 68 dlib (iBUG) landmarks")
    heatmap = {"points": f"{points} warped into the crop by the alignment matrix",
               "draw": f"zeros; a filled square of side {square_side(size)} px and value 255 at each point; "
                       f"Gaussian blur sigma {sigma(size):g} px; rescaled to peak 255; rounded to uint8"}
    alignment = {
        "size": size, "iod": iod, "eye_distance_px": round(iod * size, 3), "letterbox": letterbox,
        "points": ["image-left eye centre", "image-right eye centre", "nose tip", "image-left mouth corner",
                   "image-right mouth corner"],
        "from_68": "eye centres = mean of points 36-41 and 42-47, nose tip 30, mouth corners 48 and 54 (0-based)",
        "template": template(size, iod).round(3).tolist(),
        "warp": "least-squares similarity from the 5 points onto the template; bilinear; outside the photo = 0",
    }
    if letterbox:
        alignment["note"] = "letterbox: the whole photo was fitted into the crop (kept aspect, centred), not aligned"
    return {
        "description": f"facepipe face parser ({ck['arch']}, {schema.name} classes): input {INPUT} "
                       f"[batch, {len(channels)} ({','.join(channels)}), {size}, {size}] of an aligned face, "
                       f"output {OUTPUT} [batch, {schema.num_classes}, {size}, {size}] class scores before softmax.",
        "facepipe_version": __version__,
        "arch": ck["arch"],
        "model_kwargs": json.dumps(ck.get("model_kwargs", {})),
        "source_checkpoint": source,
        "source_sha256": file_sha256(ck_path),
        "schema": schema.name,
        "classes": json.dumps([{"id": i, "name": c, "color": list(col)}
                               for i, (c, col) in enumerate(zip(schema.classes, schema.colors))]),
        "input_name": INPUT,
        "output_name": OUTPUT,
        "input_size": str(size),
        "input_layout": "NCHW",
        "input_channels": json.dumps(channels),
        "input_dtype": "float32",
        "normalization": json.dumps(norm),
        "heatmap": json.dumps(heatmap) if heat else "none",
        "alignment": json.dumps(alignment),
        "output": json.dumps({"layout": "NCHW", "classes": schema.num_classes,
                              "read": "softmax over axis 1 for probabilities; argmax over axis 1 = class id",
                              "to_photo": "warp probabilities back with the inverse alignment matrix"}),
    }


def check_onnx(path, model: torch.nn.Module, x: np.ndarray, threads: int = 0) -> dict:
    """onnxruntime vs torch on batch x: max |difference| of the logits and the fraction of pixels whose
    class (argmax) agrees."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy()
    return {"max_abs_diff": float(np.abs(got - ref).max()),
            "label_agreement": float((got.argmax(1) == ref.argmax(1)).mean())}


def astronaut_faces(size: int, iod: float = 0.22, letterbox: bool = False, heatmap: bool = True):
    """scikit-image's astronaut photo (a real face that ships with a dependency: no download), detected and
    aligned as `parse` does it, with its mirror image as a second face (a batch of 2 exercises the dynamic
    batch). Returns the network input (2, C, size, size), or None when dlib finds no face."""
    from skimage import data

    from facepipe.dataset import to_input
    from facepipe.geometry import apply, five_from, fit_similarity, letterbox_matrix, template, warp_image
    from facepipe.heatmap import draw_heatmap
    from facepipe.landmarks import FaceDetector

    rgb = data.astronaut()
    faces = [f for f in FaceDetector()(rgb) if f["score"] >= MIN_FACE_SCORE]
    if not faces:
        return None
    pts = np.asarray(faces[0]["lm68"], float)  # the largest face
    h, w = rgb.shape[:2]
    m = letterbox_matrix(h, w, size) if letterbox else fit_similarity(five_from(pts), template(size, iod))
    crop, hm = warp_image(rgb, m, size), draw_heatmap(apply(m, pts), size)
    crops, hms = np.stack([crop, crop[:, ::-1]]), np.stack([hm, hm[:, ::-1]])
    return to_input(np.ascontiguousarray(crops), np.ascontiguousarray(hms) if heatmap else None).numpy()


def _check_input(run, cache, ck: dict, n_check: int) -> tuple[np.ndarray, str]:
    """Faces to compare torch and onnxruntime on: the cache given (else the run's own), else the
    astronaut photo, else (no face found) random input, saying which."""
    size, cin = int(ck["size"]), int(ck["in_channels"])
    if cache is not None and not Path(cache).is_file():
        raise FacepipeError(f"--cache {cache} does not exist; omit it to check on the run's cache or a real photo.")
    if cache is None:
        # The run's own cache may be gone (the run was copied to another machine): then the photo.
        cfg = Path(run) / "config.json"
        cache = json.loads(cfg.read_text()).get("cache") if cfg.is_file() else None
    if cache and Path(cache).is_file():
        from facepipe.dataset import FaceCache, to_input

        ds = FaceCache(cache, need_labels=False)
        f = ds._file()
        sel = np.arange(min(n_check, len(ds)))
        x = to_input(f["images"][sel], f["heatmaps"][sel] if ck["heatmap"] else None).numpy()
        return x, f"{len(sel)} faces of {cache}"
    align = ck.get("align") or {}
    x = astronaut_faces(size, float(align.get("iod", 0.22)), bool(align.get("letterbox", False)), bool(ck["heatmap"]))
    if x is not None:
        return x, "astronaut photo (skimage.data), aligned + mirrored: 2 faces"
    x = np.random.default_rng(0).normal(size=(2, cin, size, size)).astype(np.float32)
    return x, "random input (no cache, and dlib found no face in the astronaut photo)"


def export_run(run, out, cache=None, n_check: int = 8) -> dict:
    ck_path = run_checkpoint(run)
    ck = load_checkpoint(ck_path)
    model, schema = build_from_checkpoint(ck)
    size, cin = int(ck["size"]), int(ck["in_channels"])
    # Name the source without the exporting machine's paths: the bundled name or the run folder's name.
    bundled = str(run) in BUNDLED and not Path(run).exists()
    source = f"bundled:{run}" if bundled else (Path(run).name if Path(run).is_dir() else Path(ck_path).name)
    x, checked_on = _check_input(run, cache, ck, n_check)  # first: a bad --cache must not leave a file
    export_model(model, cin, size, out, metadata=onnx_metadata(ck, ck_path, source))
    r = check_onnx(out, model, x)
    if not r["max_abs_diff"] < 1e-2:
        Path(out).unlink(missing_ok=True)  # an export that disagrees with torch is not left behind
        raise FacepipeError(f"ONNX output differs from torch by {r['max_abs_diff']:.3g} on {checked_on}; "
                            "the export is not trustworthy and was removed.")
    return {"onnx": str(out), "checkpoint": str(ck_path), "source": source, "arch": ck["arch"], **r,
            "checked_on": checked_on,
            "opset": OPSET, "input": f"{INPUT} (batch, {cin}, height, width), trained at {size}",
            "output": f"{OUTPUT} (batch, {schema.num_classes}, height, width)",
            "size": size, "in_channels": cin, "bytes": Path(out).stat().st_size}
