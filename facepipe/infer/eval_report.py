"""`facepipe eval` as a function: score a run on a cache split, and the rows and JSON it reports.

run_eval loads the run's checkpoint and scores it (infer.evaluate); score_rows and score_json turn the
result into the summary table and the --json document; default_sheet names the best/worst sheet."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facepipe.infer.evaluate import best_worst_sheet, evaluate_model
from facepipe.infer.model import LoadedModel
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
    device: str = "auto"


@dataclass
class EvalReport:
    config: EvalConfig
    checkpoint: Path
    schema: object
    result: dict  # evaluate()'s scores, with the faces kept for the best/worst sheet

    @property
    def title(self) -> str:
        return f"{self.checkpoint} on {self.config.split} ({self.config.coords} coordinates)"


def run_eval(cfg: EvalConfig, reporter: Reporter = SILENT) -> EvalReport:
    m = LoadedModel.load(cfg.run, cfg.which, cfg.device)
    r = evaluate_model(m, cfg.cache, split=cfg.split, coords=cfg.coords, tta_flip=cfg.tta_flip, reporter=reporter,
                       keep_images=True)
    return EvalReport(cfg, m.path, m.schema, r)


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
