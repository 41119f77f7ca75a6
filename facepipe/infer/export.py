"""Stage `export`: a trained run, checkpoint or bundled model (`default`, `fast`) to ONNX, checked
against torch on a real face.

The file describes itself (ONNX metadata_props, strings; JSON where structured), so that a program with
only the .onnx file can prepare its input and read its output: classes with names and colours, input
layout, channel order and normalisation, how the heatmap channel is drawn, the alignment template, the
architecture, the source checkpoint's sha256 and the facepipe version. Input `image` is
[batch, channels, height, width], output `logits` is [batch, classes, height, width]; batch, height and
width are dynamic (the networks are fully convolutional), channels and classes are fixed. With
fixed_size, height and width are the model's size and its resizes constant scales (onnx_io), which
onnxruntime's CPU provider runs faster.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from skimage import data as skimage_data

from facepipe import __version__
from facepipe.data.face_cache import MEAN, STD, CacheFile, to_input
from facepipe.infer.checkpoint import BUNDLED, model_inputs, run_cache
from facepipe.infer.face_crops import photo_faces
from facepipe.infer.model import LoadedModel
from facepipe.infer.onnx_io import INPUT, OPSET, OUTPUT, export_model, ort_session
from facepipe.infer.photo_fill import RING as FILL_RING
from facepipe.infer.quantize import SCHEME, calibration_faces, calibration_source, equalized, quantize_file
from facepipe.models.gray_route import luma_input
from facepipe.util.align_spec import DEFAULT_IOD, AlignSpec
from facepipe.util.errors import FacepipeError
from facepipe.util.geometry import (
    BOX_CENTER_DY_IN_IOD,
    TURN_DEAD_ZONE_IN_IOD,
    TURN_SHIFT_MAX_IN_IOD,
    template,
)
from facepipe.util.heatmap import sigma, square_side
from facepipe.util.manifest import refuse_overwriting_input, require_suffix
from facepipe.util.progress import SILENT, Reporter

# An int8 graph's classes against torch's on the check faces: the default agrees on 99.3-99.4% of FASSEG's
# aligned test pixels (results.md "onnxruntime in int8"); a broken quantization falls far below.
INT8_AGREEMENT = 0.95


def _alignment(model: LoadedModel) -> dict:
    """How a face becomes the input crop, for the metadata."""
    size, iod, letterbox = model.size, model.align.iod, model.align.letterbox
    alignment = {
        "size": size, "iod": iod, "eye_distance_px": round(iod * size, 3), "letterbox": letterbox,
        "points": ["image-left eye centre", "image-right eye centre", "nose tip", "image-left mouth corner",
                   "image-right mouth corner"],
        "from_68": "eye centres = mean of points 36-41 and 42-47, nose tip 30, mouth corners 48 and 54 (0-based)",
        "template": template(size, iod).round(3).tolist(),
        "warp": "least-squares similarity from the 5 points onto the template; bilinear; outside the photo = 0",
        "box_width_in_eye_distances": model.align.box_width,
        "box_note": "faces whose landmarks are not trusted (profiles): cut from the detector box, scaled to this "
                    f"many template eye distances, box centre {-BOX_CENTER_DY_IN_IOD:.2f} eye distances above the "
                    "template centre",
    }
    if model.align.turn_shift:
        alignment["turn_shift"] = model.align.turn_shift
        alignment["turn_note"] = ("landmark-aligned faces: the crop moves sideways by turn_shift x (nose tip x in the crop "
                                  f"- template nose x, in eye distances, less {TURN_DEAD_ZONE_IN_IOD} towards zero) "
                                  f"eye distances, at most {TURN_SHIFT_MAX_IN_IOD}, the nose's way "
                                  "(facepipe.util.geometry.turn_shift)")
    if letterbox:
        alignment["note"] = "letterbox: the whole photo was fitted into the crop (kept aspect, centred), not aligned"
    return alignment


# What the crop holds where it reaches past the photo, as parse prepares it for this model (infer.photo_fill)
_BEYOND = {"black": "black (the warp's fill)",
           "edge": f"for a colour face, the mean colour (rounded) of the photo's crop pixels within {FILL_RING} px "
                   "(city-block) of the crop's pixels beyond the photo; a colourless face (gray_branch's rule) "
                   "keeps black"}


def onnx_metadata(model: LoadedModel, source: str) -> dict[str, str]:
    """metadata_props for a loaded model: everything needed to prepare an input and read an output."""
    ck, schema, size, heat = model.checkpoint, model.schema, model.size, model.heatmap
    channels = ["R", "G", "B"] + (["heatmap"] if heat else [])
    norm = {"R,G,B": "(pixel - mean) / std on 0..255 values", "mean": [round(float(v), 4) for v in MEAN],
            "std": [round(float(v), 4) for v in STD]}
    if heat:
        norm["heatmap"] = "uint8 heatmap / 255, in [0, 1]"
    # `align.landmarks` is "dataset" when training used the dataset's own points, else dlib's 68 (a folder).
    dataset_points = (ck.get("align") or {}).get("landmarks") == "dataset"
    points = "the dataset's own landmarks" if dataset_points else "the 68 dlib (iBUG) landmarks"
    heatmap = {"points": f"{points} warped into the crop by the alignment matrix",
               "draw": f"zeros; a filled square of side {square_side(size)} px and value 255 at each point; "
                       f"Gaussian blur sigma {sigma(size):g} px; rescaled to peak 255; rounded to uint8"}
    return {
        "description": f"facepipe face parser ({model.arch}, {schema.name} classes): input {INPUT} "
                       f"[batch, {len(channels)} ({','.join(channels)}), {size}, {size}] of an aligned face, "
                       f"output {OUTPUT} [batch, {schema.num_classes}, {size}, {size}] class scores before softmax.",
        "facepipe_version": __version__,
        "arch": model.arch,
        "model_kwargs": json.dumps(ck.get("model_kwargs", {})),
        "source_checkpoint": source,
        "source_sha256": model.sha256(),
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
        "alignment": json.dumps(_alignment(model)),
        "beyond_photo": _BEYOND[model.fill],
        "output": json.dumps({"layout": "NCHW", "classes": schema.num_classes,
                              "read": "softmax over axis 1 for probabilities; argmax over axis 1 = class id",
                              "to_photo": "warp probabilities back with the inverse alignment matrix"}),
    }


def check_onnx(path, model: torch.nn.Module, x: np.ndarray, threads: int = 0) -> dict:
    """onnxruntime vs torch on batch x: max |difference| of the logits and the fraction of pixels whose
    class (argmax) agrees."""
    sess = ort_session(path, threads)
    got = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy()
    return {"max_abs_diff": float(np.abs(got - ref).max()),
            "label_agreement": float((got.argmax(1) == ref.argmax(1)).mean())}


def astronaut_faces(size: int, iod: float = DEFAULT_IOD, letterbox: bool = False, heatmap: bool = True):
    """scikit-image's astronaut photo (a real face that ships with a dependency: no download), detected and
    cut as `parse` does it (infer.face_crops), with its mirror image as a second face (a batch of 2
    exercises the dynamic batch). Returns the network input (2, C, size, size), or None when dlib finds no
    face."""
    x = photo_faces(skimage_data.astronaut(), AlignSpec(size, iod, letterbox), heatmap, mirror=True)
    return None if x is None else x[:2]  # the largest face and its mirror


def _check_input(run, cache, model: LoadedModel, n_check: int) -> tuple[np.ndarray, str]:
    """Faces to compare torch and onnxruntime on: the cache given (else the run's own), else the
    astronaut photo, else (no face found) random input, saying which."""
    if cache is not None and not Path(cache).is_file():
        raise FacepipeError(f"--cache {cache} does not exist; omit it to check on the run's cache or a real photo.")
    if cache is None:
        cache = run_cache(run)  # None when gone (the run was copied to another machine): then the photo
    if cache:
        cf = CacheFile(cache)
        rows = np.arange(min(n_check, len(cf)))
        x = to_input(cf.read("images", rows), cf.read("heatmaps", rows) if model.heatmap else None).numpy()
        cf.close()
        return x, f"{len(rows)} faces of {cache}"
    x = astronaut_faces(model.size, model.align.iod, model.align.letterbox, model.heatmap)
    if x is not None:
        return x, "astronaut photo (skimage.data), aligned + mirrored: 2 faces"
    x = np.random.default_rng(0).normal(size=(2, model.in_channels, model.size, model.size)).astype(np.float32)
    return x, "random input (no cache, and dlib found no face in the astronaut photo)"


def gray_file(out) -> Path:
    """Where the grayscale branch of a two-branch model goes: beside OUT.onnx, OUT-gray.onnx (export_run
    refuses an OUT not ending in .onnx)."""
    out = Path(out)
    return out.with_name(f"{out.stem}-gray.onnx")


def _gray_metadata(model: LoadedModel, meta: dict, out) -> tuple[dict, dict]:
    """The two files' metadata for a model with a gray branch: each names the other and the rule."""
    rule = {"color_file": Path(out).name, "gray_file": gray_file(out).name,
            "threshold": model.gray_branch.get("threshold"), "toned": model.gray_branch.get("toned"),
            "rule": "per aligned crop, on every 4th pixel each way, over the pixels whose max of R,G,B (0..1) is above "
                    "0.1: the gray file when their mean HSV saturation ((max - min) / max) is below threshold, or "
                    "(toned not null) when the RMS of their chroma (B - Y, R - Y, 0..255) less the mean chroma of "
                    "their luma band (16 bands of Y = 0.299 R + 0.587 G + 0.114 B) is below toned; the gray file is "
                    "fed luma in all three channels, normalised as R,G,B; else the colour file "
                    "(facepipe.models.gray_route)"}
    color = dict(meta, gray_branch=json.dumps(rule))
    gray = dict(meta, gray_branch=json.dumps(dict(rule, this_file="gray")),
                description=meta["description"] + " Grayscale branch: run on faces with next to no colour.")
    return color, gray


def export_run(run, out, cache=None, n_check: int = 8, fixed_size: bool = False, int8: bool = False,
               calibrate: str | None = None, reporter: Reporter = SILENT) -> dict:
    """int8: each file quantized (infer.quantize), calibrated on `calibrate` (a cache's training faces or a
    folder of photos; default: the run's own cache), and checked by the share of pixels whose class agrees
    with torch's."""
    # Before the work: neither file may replace what the export reads, and the gray file's name follows OUT's.
    inputs = [cache, calibrate, *model_inputs(run)]
    refuse_overwriting_input(out, inputs)
    require_suffix(out, (".onnx",), "--onnx")
    model = LoadedModel.load(run)
    if len(model.branches()) > 1:
        refuse_overwriting_input(gray_file(out), inputs)
    size, cin, ck_path = model.size, model.in_channels, model.path
    # Name the source without the exporting machine's paths: the bundled name or the run folder's name.
    bundled = str(run) in BUNDLED and not Path(run).exists()
    source = f"bundled:{run}" if bundled else (Path(run).name if Path(run).is_dir() else Path(ck_path).name)
    x, checked_on = _check_input(run, cache, model, n_check)  # first: a bad --cache must not leave a file
    cal = calibration_source(run, calibrate, int8)
    xq, calibrated = calibration_faces(cal, model.heatmap, model.align, reporter=reporter) if int8 else (None, None)
    meta = onnx_metadata(model, source)
    if int8:
        meta["quantization"] = json.dumps({"scheme": SCHEME, "calibration": calibrated})
    branches = model.branches()
    files = [(Path(out), branches[0][1], meta, x, xq)]
    if len(branches) > 1:  # a gray branch (models.gray_route): its own file, checked on luma input
        color_meta, gray_meta = _gray_metadata(model, meta, out)
        xg, xqg = (None if a is None else luma_input(torch.from_numpy(a)).numpy() for a in (x, xq))
        files = [(Path(out), branches[0][1], color_meta, x, xq), (gray_file(out), branches[1][1], gray_meta, xg, xqg)]
    checks = []
    try:
        for path, net, md, xin, xcal in files:
            checks.append(_export_one(net, cin, size, path, md, xin, xcal, fixed_size, checked_on))
    except BaseException:
        for p, *_ in files:
            p.unlink(missing_ok=True)  # an export that disagrees with torch (or was stopped) is not left behind
        raise
    r = {k: max(c[k] for c in checks) if k == "max_abs_diff" else min(c[k] for c in checks) for k in checks[0]}
    hw = f"{size}, {size}" if fixed_size else "height, width"
    extra = {"gray_onnx": str(files[1][0]), "gray_rule": "mean saturation below "
             f"{model.gray_branch.get('threshold')}" + ("" if model.gray_branch.get("toned") is None else
             f" or chroma residual below {model.gray_branch['toned']}") + " (see the files' gray_branch metadata)"} if len(files) > 1 else {}
    if int8:
        extra["int8_calibrated_on"] = calibrated  # the scheme is in the files' quantization metadata
    return {"onnx": str(out), **extra, "checkpoint": str(ck_path), "source": source, "arch": model.arch, **r,
            "checked_on": checked_on,
            "opset": OPSET, "input": f"{INPUT} (batch, {cin}, {hw}), trained at {size}",
            "output": f"{OUTPUT} (batch, {model.schema.num_classes}, {hw})",
            "size": size, "in_channels": cin, "bytes": sum(p.stat().st_size for p, *_ in files)}


def _export_one(net, cin: int, size: int, path: Path, meta: dict, x, xq, fixed_size: bool, checked_on: str) -> dict:
    """One network to `path`, checked against torch on x; quantized to int8 on xq when xq is given: the float
    graph's max |difference| is then reported beside the int8 graph's class agreement."""
    fp32 = path if xq is None else path.with_name(f".{path.stem}-fp32.onnx")
    try:
        # int8: equalised first (the same function, checked against the network as it is just below)
        export_model(net if xq is None else equalized(net, xq), cin, size, fp32, metadata=meta, fixed_size=fixed_size)
        r = check_onnx(fp32, net, x)
        if not r["max_abs_diff"] < 1e-2:
            raise FacepipeError(f"ONNX output of {path.name} differs from torch by {r['max_abs_diff']:.3g} on "
                                f"{checked_on}; the export is not trustworthy and was removed.")
        if xq is None:
            return r
        quantize_file(fp32, path, xq)
    finally:
        if xq is not None:
            fp32.unlink(missing_ok=True)
    q = check_onnx(path, net, x)
    if not q["label_agreement"] >= INT8_AGREEMENT:
        raise FacepipeError(f"the int8 graph of {path.name} labels only {q['label_agreement']:.1%} of the pixels of "
                            f"{checked_on} as torch does (at least {INT8_AGREEMENT:.0%} expected); it was removed.")
    return {"max_abs_diff": r["max_abs_diff"], "label_agreement": r["label_agreement"],
            "int8_label_agreement": q["label_agreement"]}
