"""`facepipe bench` as functions: which models are timed, their speed rows (+ accuracy), the table.

run_bench picks the entries (trained runs, untrained architectures, the baseline), times them with
infer.bench and, given a cache, joins the last run's accuracy to its rows; bench_title and bench_table
lay the rows out as the command prints them."""
from __future__ import annotations

from facepipe.infer.bench import BASELINE, DEFAULT_MODELS, BenchConfig, Entry, arch_entry, bench_speed, run_entry
from facepipe.infer.evaluate import evaluate_model
from facepipe.infer.model import LoadedModel
from facepipe.util.errors import FacepipeError
from facepipe.util.progress import SILENT, Reporter

SPEED_COLUMNS = ("model", "size", "batch", "fps", "latency_ms_p50", "latency_ms_p95", "params", "macs",
                 "ratio_to_baseline", "spread", "cpu_wait")
ACCURACY_COLUMNS = ("overall_f1", "pixel_acc")
PERCENT = ("spread", "cpu_wait")


def bench_entries(models=(), archs=(), baseline: bool = True) -> list[Entry]:
    """Trained `models` (runs, checkpoints, bundled names), then untrained `archs`.

    No models and no archs: the bundled default and accurate models, and the baseline. `baseline` adds
    bisenet-r18 where it is missing; untrained models get the first run's classes (6, FASSEG's, without one)."""
    if not (models or archs):
        models = DEFAULT_MODELS
    entries = [run_entry(m) for m in models]
    names = list(archs)
    if baseline and BASELINE not in names:
        names.append(BASELINE)
    nc = entries[0].schema.num_classes if entries else 6
    return entries + [arch_entry(a, nc) for a in names]


def add_accuracy(rows: list[dict], entry: Entry, cache, split: str = "test", reporter: Reporter = SILENT) -> dict:
    """Score `entry` on `split` of `cache` (photo coordinates), as `eval` does (at the model's own crop
    side), and join the scores to its speed rows."""
    r = evaluate_model(LoadedModel.load(entry.run), cache, split=split, reporter=reporter)
    acc = {"overall_f1": r["overall_f1"], "mean_f1": r["mean_f1"], "pixel_acc": r["pixel_acc"],
           "coords": r["coords"], "split": split, "renamed": r["renamed"]}
    if r["renamed"]:  # a cache of other classes: the scores are in those both share (util.schema_bridge)
        reporter.log("note: " + r["renamed"])
    for row in rows:
        if row["model"] == entry.name:
            row.update(acc)
    return acc


def run_bench(models, archs, cfg: BenchConfig, *, baseline: bool = True, cache=None, split: str = "test",
              reporter: Reporter = SILENT) -> list[dict]:
    """Speed rows of every entry (bench_entries) under `cfg`; with `cache`, the last of `models` is also
    scored on it and its rows carry overall_f1, mean_f1, pixel_acc, coords and split."""
    if cache and models and cfg.dtype == "int8":  # add_accuracy scores the float network
        raise FacepipeError("bench RUN CACHE scores the float network, not int8 graphs: score those with "
                            "`facepipe eval RUN CACHE --int8`, time them with `bench --fps --dtype int8`.")
    entries = bench_entries(models, archs, baseline)
    rows = bench_speed(entries, cfg, reporter)
    if cache and models:
        add_accuracy(rows, entries[len(models) - 1], cache, split, reporter)
    return rows


def bench_title(rows: list[dict]) -> str:
    """The conditions every row was measured under, from the first row."""
    env = rows[0]
    load = "unknown" if env["load"] is None else f"{env['load']:.1f}"
    return (f"facepipe bench: device {env['device']}, {env['threads']} threads, {env['dtype']}, "
            f"backend {env['backend']}, BatchNorm folded: {env['bn_folded']}, "
            f"channels_last: {env['channels_last']}, load {load} on {env['cores']} cores"
            + ("; size* = the crop side parse cuts for that model" if any(r.get("parse_side") for r in rows) else ""))


def bench_table(rows: list[dict]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """(columns, formatted rows); the accuracy columns when a row has scores."""
    cols = SPEED_COLUMNS + (ACCURACY_COLUMNS if any("overall_f1" in r for r in rows) else ())
    if any("ratio_to_fp32_baseline" in r for r in rows):  # int8 runs: against the baseline in float too
        k = cols.index("ratio_to_baseline") + 1
        cols = cols[:k] + ("ratio_to_fp32_baseline",) + cols[k:]
    table = [tuple(cell(r, c) for c in cols) for r in rows]
    return cols, table


def cell(r: dict, c: str) -> str:
    """One row's cell; the size marked * where it is the crop side parse cuts for that model."""
    if c in PERCENT and r.get(c) is not None:
        return f"{r[c]:.0%}"
    if c == "size" and r.get("parse_side"):
        return f"{r[c]}*"
    return fmt(r.get(c))


def fmt(v) -> str:
    """A table cell: 3 decimals below 10, 1 above; counts over 100000 in millions; None as -."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    if isinstance(v, int) and v > 100000:
        return f"{v / 1e6:.2f}M"
    return str(v)
