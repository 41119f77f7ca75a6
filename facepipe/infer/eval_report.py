"""`facepipe eval` as a function: score a run on a cache split, and the rows and JSON it reports.

run_eval loads the run's checkpoint and scores it (infer.evaluate); score_rows and score_json turn the
result into the summary table and the --json document; default_sheet names the best/worst sheet."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from facepipe.data.face_cache import CacheFile
from facepipe.infer.evaluate import best_worst_sheet, evaluate_model
from facepipe.infer.model import LoadedModel
from facepipe.infer.photo_fill import resolve as resolve_fill
from facepipe.infer.quantize import calibration_faces, calibration_source, int8_net
from facepipe.util.align_spec import AlignSpec
from facepipe.util.atomic import save_image
from facepipe.util.progress import SILENT, Reporter

SCORE_COLUMNS = ("", "score")


@dataclass(frozen=True)
class EvalConfig:
    run: str  # run folder or checkpoint file
    cache: str
    split: str = "test"
    coords: str = "original"  # original: predictions warped back onto the photo; aligned: in the crop
    which: str = "best"  # the run's checkpoint: best or last
    tta_flip: bool = False  # average with the mirrored prediction
    beyond_crop: bool = False  # add the hair beyond each crop, from a zoomed-out second pass (infer.beyond_crop)
    landmark_prior: bool = False  # lay the landmark prior over each face (infer.landmark_prior), as parse does
    face_colours: bool = False  # re-split background, hair, skin by the face's colours (infer.face_colours), as parse
    device: str = "auto"
    int8: bool = False  # the networks as int8 ONNX graphs under onnxruntime (infer.quantize), as `export --int8` writes
    calibrate: str | None = None  # the int8 calibration faces: a cache or a folder of photos (default: the run's cache)
    fill: str = "model"  # beyond the photo: as the model's file asks, or edge or black (infer.photo_fill)


@dataclass
class EvalReport:
    config: EvalConfig
    checkpoint: Path
    schema: object  # the classes scored: the cache's, or those it shares with the model (result["renamed"])
    result: dict  # evaluate()'s scores, with the faces kept for the best/worst sheet
    crop_note: str | None = None  # the cache's crops are not cut the way `parse` cuts them for this model
    int8: str | None = None  # what the int8 graphs were calibrated on
    fill: str = "black"  # what the network saw beyond the photo, resolved (infer.photo_fill)

    @property
    def title(self) -> str:
        beyond = ", with hair beyond the crop" if self.config.beyond_crop else ""
        prior = ", with the landmark prior" if self.config.landmark_prior else ""
        colours = ", with the face's colours" if self.config.face_colours else ""
        int8 = ", int8 under onnxruntime" if self.int8 else ""
        fill = f", {self.fill} beyond the photo" if self.fill != "black" else ""
        return (f"{self.checkpoint}{int8} on {self.config.split} "
                f"({self.config.coords} coordinates{beyond}{colours}{prior}{fill})")


def run_eval(cfg: EvalConfig, reporter: Reporter = SILENT) -> EvalReport:
    cal = calibration_source(cfg.run, cfg.calibrate, cfg.int8)  # first: a wrong option costs no model load
    m = LoadedModel.load(cfg.run, cfg.which, "cpu" if cfg.int8 else cfg.device)
    with tempfile.TemporaryDirectory() as tmp:
        calibrated = None
        if cfg.int8:  # onnxruntime's CPU provider: the graphs `export --int8` writes, on the path parse takes
            x, calibrated = calibration_faces(cal, m.heatmap, m.align, reporter=reporter)
            m = replace(m, net=int8_net(m.net, m.in_channels, m.size, x, tmp), device=torch.device("cpu"))
        r = evaluate_model(m, cfg.cache, split=cfg.split, coords=cfg.coords, tta_flip=cfg.tta_flip, reporter=reporter,
                           keep_images=True, beyond_crop=cfg.beyond_crop, landmark_prior=cfg.landmark_prior,
                           face_colours=cfg.face_colours, fill=cfg.fill)
    return EvalReport(cfg, m.path, r["_schema"], r, crop_note(m.align, CacheFile(cfg.cache).align), calibrated,
                      resolve_fill(cfg.fill, m.checkpoint))


def crop_note(model_spec: AlignSpec, cache_spec: AlignSpec) -> str | None:
    """One line when the model was trained on crops cut otherwise than this cache's. Another side is
    resampled to the model's (infer.predict.AtSide; said so). Another eye distance, letterbox or turn
    shift cannot be undone that way: the scores are then for these crops, not for `parse`'s path.
    Deliberate, e.g. to see what a model makes of crops it never saw, so a note and not an error. The box
    width is left out: it touches only faces cut from their box, which most caches (HOG landmarks) do not hold."""
    a, b = model_spec.to_dict(), cache_spec.to_dict()
    said = []
    if a["size"] != b["size"]:
        said.append(f"this cache's {b['size']}px crops are resampled to the model's {a['size']}px")
    keys = [k for k in ("iod", "letterbox", "turn_shift") if a.get(k, 0.0) != b.get(k, 0.0)]
    if keys:
        diff = ", ".join(f"{k} {b.get(k, 0.0)} (model: {a.get(k, 0.0)})" for k in keys)
        said.append(f"this cache's crops differ from the model's ({diff}); these scores are not parse's path")
    return "note: " + "; ".join(said) + "." if said else None


def score_rows(report: EvalReport) -> list[tuple]:
    """Per-class and merged F1, the dataset's overall F1, mean F1, pixel accuracy, faces."""
    r, schema = report.result, report.schema
    rows = [(f"F1 {k}", v) for k, v in r["per_class_f1"].items()]
    rows += [(f"F1 {k} (merged)", v) for k, v in r["group_f1"].items()]
    overall = "overall F1 " + "+".join(schema.overall) if len(schema.overall) <= 4 else "overall F1"
    return rows + [(overall, r["overall_f1"]), ("mean F1", r["mean_f1"]), ("pixel accuracy", r["pixel_acc"]),
                   ("faces", r["faces"])]


def score_json(report: EvalReport) -> dict:
    """The scores and what they were measured on, as `facepipe eval --json` writes them."""
    r, cfg = report.result, report.config
    return {"per_class_f1": r["per_class_f1"], "group_f1": r["group_f1"], "overall_f1": r["overall_f1"],
            "mean_f1": r["mean_f1"], "pixel_acc": r["pixel_acc"], "coords": cfg.coords, "split": cfg.split,
            "faces": r["faces"], "checkpoint": str(report.checkpoint), "tta_flip": cfg.tta_flip,
            "beyond_crop": cfg.beyond_crop, "landmark_prior": cfg.landmark_prior,
            "face_colours": cfg.face_colours, "beyond_photo_fill": report.fill,
            "crop_note": report.crop_note,
            "renamed": r["renamed"],  # None, or how the model's and the cache's classes were renamed to be scored
            "int8": report.int8,  # None, or the int8 graphs' calibration faces
            # what the scores are made of: which classes are confused (rows: truth, columns: prediction,
            # pixel counts) and which faces carry the errors
            "classes": list(report.schema.classes), "confusion": r["confusion"],
            "per_image": [{"id": i, "pixel_acc": a, "overall_f1": f} for i, a, f in r["per_image"]]}


def default_sheet(cfg: EvalConfig) -> str | None:
    """RUN/eval-<split>.png for a run folder; None for a checkpoint file."""
    return str(Path(cfg.run) / f"eval-{cfg.split}.png") if Path(cfg.run).is_dir() else None


def write_sheet(report: EvalReport, path) -> None:
    """PNG of the worst and best faces of the split."""
    save_image(path, best_worst_sheet(report.result, report.config.cache, report.schema))
