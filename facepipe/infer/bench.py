"""Speed (and optionally accuracy) of several models side by side, in one process and one run.

A speed claim is a ratio measured in the same run against a named baseline (bisenet-r18 by default),
with input size, batch, threads, device, dtype and backend stated. Weights do not change speed, so
`--arch` models are benchmarked freshly initialised; `--model RUN` uses a trained checkpoint.

The rows are timed in turns (util.timing.timeit_in_turns), so that a model and its baseline meet the
same machine: each row's window is cut into TURNS slices, taken one row after another.

Every row also says how far to trust it: `spread` (how much the throughput of its slices differs),
`cpu_wait` (the share of time the timing threads were ready to run but another process had the CPU)
and `load` (the 1-minute load average before timing). On a shared machine absolute FPS swings by an
order of magnitude between runs; `unreliable` turns these into one verdict.
"""
from __future__ import annotations

import os
import platform
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from facepipe import __version__
from facepipe.analysis.macs import count_macs, count_params
from facepipe.infer.model import LoadedModel
from facepipe.infer.onnx_io import export_model, onnxruntime_version, ort_session
from facepipe.infer.quantize import equalized, quantize_file
from facepipe.models import create_model, default_in_channels
from facepipe.models.fold import fold_batchnorm
from facepipe.models.gray_route import one_branch
from facepipe.util.device import pick_device, set_threads
from facepipe.util.errors import FacepipeError
from facepipe.util.heap import heap_setting
from facepipe.util.progress import SILENT
from facepipe.util.timing import timeit_in_turns

BASELINE = "bisenet-r18"
# What `bench --fps` times when no model is named (and CI prints): the bundled models users get, trained,
# so the ratio is the default parser's own rather than an untrained network of the registered width.
DEFAULT_MODELS = ("default", "accurate")
TURNS = 5  # slices of each row's timing window, taken in turns with the other rows'; their rates give the spread
# (max - min) / median of the slices' throughput. Our 2-core VM shows 10-30% with no CPU wait at all
# (neighbours on the host), so only a swing past 50% is taken as interference rather than noise.
SPREAD_MAX = 0.5
WAIT_MAX = 0.10  # share of the timing threads' time spent waiting for a CPU another process held


@dataclass
class Entry:
    name: str  # label in the table
    model: torch.nn.Module
    in_channels: int
    schema: object = None
    run: str | None = None
    heatmap: bool = False
    side: int | None = None  # the crop side `parse` cuts for a trained model; None for an untrained arch


@dataclass(frozen=True)
class BenchConfig:
    sizes: tuple = (256,)
    batches: tuple = (1,)
    threads: int = 2
    device: str = "cpu"
    backend: str = "torch"  # torch | onnxruntime
    dtype: str = "fp32"  # fp32 | fp16 | bf16 (autocast on CUDA; bf16 also on CPU) | int8 (onnxruntime: infer.quantize)
    warmup: int = 5
    seconds: float = 2.0  # timing window per (model, size, batch); at least `min_iters` iterations
    min_iters: int = 10
    channels_last: bool = True  # NHWC, as `parse` runs models (predict.predict_probs); torch backend only
    fold_bn: bool = True  # fold BatchNorm into convs for every model timed, the baseline included
    # Also time each trained model at its own crop side (and the baseline there): the 384 px `accurate`
    # runs at 384 in parse, and a 256 px row alone understates its cost 2.25-fold. Off when sizes are named.
    own_sides: bool = False


def entry_sizes(e: Entry, entries: list[Entry], cfg: BenchConfig) -> tuple[int, ...]:
    """The sizes `e` is timed at: cfg.sizes, plus with cfg.own_sides its own crop side (a trained model) or
    every trained model's (the baseline, so that each own-side row has a ratio)."""
    if not cfg.own_sides:
        return tuple(cfg.sizes)
    extra = [e.side] if e.side else [q.side for q in entries if q.side] if e.name == BASELINE else []
    return tuple(cfg.sizes) + tuple(sorted(set(extra) - set(cfg.sizes)))


def arch_entry(name: str, num_classes: int = 6) -> Entry:
    """A registered architecture, freshly initialised: weights do not change speed."""
    cin = default_in_channels(name)  # RGB + heatmap for the paper's parsers, RGB for BiSeNet
    return Entry(name=name, model=create_model(name, num_classes=num_classes, in_channels=cin).eval(),
                 in_channels=cin, heatmap=cin == 4)


def run_entry(run: str) -> Entry:
    """A trained run, checkpoint file or bundled model, as trained (bench folds BatchNorm itself)."""
    m = LoadedModel.load(run)
    name = f"{Path(run).name} ({m.arch})" if Path(run).is_dir() else Path(run).stem
    return Entry(name=name, model=m.net, in_channels=m.in_channels, schema=m.schema, run=run, heatmap=m.heatmap,
                 side=m.size)


def repeat_spread(slices: list[list[float]]) -> float:
    """(max - min) / median of the throughput of a row's slices (lists of per-iteration seconds).

    Slices rather than single iterations: one iteration's jitter (a page fault, a timer tick) averages
    out within a slice, while a neighbour starting or stopping mid-window does not.
    """
    rate = np.array([len(t) / sum(t) for t in slices if len(t)])
    if len(rate) < 2:
        return 0.0
    return float((rate.max() - rate.min()) / np.median(rate))


def unreliable(spread: float, cpu_wait: float | None, load: float | None, cores: int) -> list[str]:
    """Why figures measured under these conditions cannot be compared with another run's; [] if they can."""
    why = []
    if spread > SPREAD_MAX:
        why.append(f"repeat spread {spread:.0%}")
    if cpu_wait is not None and cpu_wait > WAIT_MAX:
        why.append(f"waited {cpu_wait:.0%} of the time for a CPU")
    # The load average trails by a minute and still holds our own previous runs (at most `cores` threads),
    # so only demand beyond every core is taken as someone else's; moderate contention shows in cpu_wait.
    if load is not None and load > cores:
        why.append(f"load {load:.1f} on {cores} cores")
    return why


def warning(rows: list[dict]) -> str | None:
    """One line naming the measured load, spread and CPU wait when any row is unreliable, else None."""
    bad = [r for r in rows if r.get("unreliable")]
    if not bad:
        return None
    worst = max(rows, key=lambda r: r["spread"])
    waits = [r["cpu_wait"] for r in rows if r.get("cpu_wait") is not None]
    load = rows[0].get("load")
    parts = [f"load {load:.1f} on {rows[0]['cores']} cores" if load is not None else "load unknown",
             f"repeat spread up to {worst['spread']:.0%} ({worst['model']})"]
    if waits:
        parts.append(f"up to {max(waits):.0%} of the timing spent waiting for a CPU")
    # Same-run ratios share the conditions, so they move less than absolute fps; but the load changes
    # between rows and hits small models (many short ops, each a thread hand-off) harder: they still move.
    return (f"figures unreliable: {', '.join(parts)}; absolute fps will not repeat, ratio_to_baseline "
            f"(same run) moves less but still moves")


@dataclass(frozen=True)
class _Where:
    """Where one bench call times: device, threads, and the machine's load read before any timing."""
    dev: torch.device
    threads: int
    load: float | None
    cores: int

    def sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize()


def _checked(cfg: BenchConfig, dev: torch.device) -> BenchConfig:
    if cfg.backend not in ("torch", "onnxruntime"):
        raise FacepipeError("--backend must be torch or onnxruntime")
    # onnxruntime takes NCHW arrays and picks its own layouts: the memory format is a torch setting.
    cfg = replace(cfg, channels_last=cfg.channels_last and cfg.backend == "torch")
    if cfg.backend == "onnxruntime" and dev.type != "cpu":
        raise FacepipeError("--backend onnxruntime is measured on the CPU here; use --device cpu.")
    if cfg.dtype == "int8" and cfg.backend != "onnxruntime":
        raise FacepipeError("--dtype int8 is timed under onnxruntime (export --int8's graphs): "
                            "add --backend onnxruntime.")
    if cfg.backend == "onnxruntime" and cfg.dtype in ("fp16", "bf16"):
        # The graph is exported in float32 either way: a row labelled bf16 would time fp32.
        raise FacepipeError(f"--backend onnxruntime times float32 graphs (--dtype fp32) or int8 ones (--dtype int8), "
                            f"not {cfg.dtype}.")
    if cfg.dtype == "fp16" and dev.type == "cpu":
        raise FacepipeError("fp16 on the CPU is not a fair measurement in torch; use --dtype bf16 or fp32.")
    return cfg


@dataclass
class _Job:
    """One row to time: its callable and what the row says besides the timing."""
    name: str
    size: int
    batch: int
    fn: object
    params: int
    macs: int
    dtype: str
    parse_side: bool = False  # the size is the crop side parse cuts for this model


def bench_speed(entries: list[Entry], cfg: BenchConfig, reporter=None) -> list[dict]:
    """One row per (entry, size, batch): fps, latencies, params, MACs, how far to trust it, and the ratio to
    the baseline's row of the same size and batch when the baseline is among the entries."""
    dev = pick_device(cfg.device)
    threads = set_threads(cfg.threads)
    cfg = _checked(cfg, dev)
    # Read before any timing: only this process's one loading thread is in it yet, so it is the others'.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    where = _Where(dev, threads, load, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="facepipe-bench-") as tmp:  # ONNX files, kept until all are timed
        jobs = [j for i, e in enumerate(entries)
                for j in _jobs(e, entry_sizes(e, entries, cfg), cfg, where, Path(tmp) / f"m{i}.onnx")]
        if cfg.dtype == "int8":  # the baseline also as users run it, in float: both ratios from one run
            jobs += [replace(j, name=f"{j.name} (fp32)") for i, e in enumerate(entries) if e.name == BASELINE
                     for j in _jobs(e, entry_sizes(e, entries, cfg), replace(cfg, dtype="fp32"), where,
                                    Path(tmp) / f"f{i}.onnx")]
        with (reporter or SILENT).task("bench", len(jobs) * TURNS) as advance:
            timed = timeit_in_turns([j.fn for j in jobs], cfg.warmup, cfg.seconds, cfg.min_iters, where.sync,
                                    where.threads, on_cpu=dev.type == "cpu", turns=TURNS, advance=advance)
    rows = [_row(j, slices, wait, where) for j, (slices, wait) in zip(jobs, timed)]
    for r in rows:
        r["ratio_to_baseline"] = _ratio(r, rows, r["dtype"])
        if cfg.dtype == "int8":
            r["ratio_to_fp32_baseline"] = _ratio(r, rows, "fp32")
    env = environment(dev, threads, cfg)
    for r in rows:
        r.update({k: env[k] for k in ("device", "threads", "backend", "bn_folded", "channels_last", "heap")})
    return rows


def _ratio(r: dict, rows: list[dict], dtype: str) -> float | None:
    """r's FPS over the baseline's at the same size and batch, the baseline in `dtype`; None without one."""
    base = [q for q in rows if q["model"].split(" ")[0] == BASELINE and q["size"] == r["size"]
            and q["batch"] == r["batch"] and q["dtype"] == dtype]
    return float(r["fps"] / base[0]["fps"]) if base else None


def _prepared(model: torch.nn.Module, cfg: BenchConfig, dev: torch.device) -> torch.nn.Module:
    """The model as it is timed: eval mode, BatchNorm folded (torch backend), on `dev`, NHWC if asked."""
    model = model.eval()
    if cfg.fold_bn and cfg.backend == "torch":
        model = fold_batchnorm(model)
    model = model.to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _jobs(e: Entry, sizes: tuple[int, ...], cfg: BenchConfig, where: _Where, onnx_path: Path) -> list[_Job]:
    # As trained (folding would drop the BatchNorm parameters); a two-branch model (models.gray_route) runs
    # one branch per face: its torch timing includes the choice, its ONNX graph is the colour branch.
    params = count_params(one_branch(e.model))
    model, dev = _prepared(e.model, cfg, where.dev), where.dev
    onnx = cfg.backend == "onnxruntime"
    jobs = []
    for s in sizes:
        # The colour branch's, like params: a constant input is colourless, so a two-branch model would
        # route it to its gray branch and count that.
        macs = count_macs(one_branch(model), torch.zeros(1, e.in_channels, s, s, device=dev))
        path = onnx_path.with_name(f"{onnx_path.stem}-{s}.onnx")
        if onnx:  # one file per size, as `export --fixed-size` writes it: parse's crops have one size
            int8 = cfg.dtype == "int8"
            # int8 as `export --int8` makes it; the ranges do not change the speed: random input sets them
            x8 = np.random.default_rng(0).normal(size=(4, e.in_channels, s, s)).astype(np.float32) if int8 else None
            net = one_branch(e.model).cpu()
            export_model(equalized(net, x8) if int8 else net, e.in_channels, s, path, fixed_size=True)
            if int8:
                path = quantize_file(path, path.with_name(f"{path.stem}-int8.onnx"), x8)
        for b in cfg.batches:
            x = torch.randn(b, e.in_channels, s, s, device=dev)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            fn = _onnx_call(path, x, where.threads) if onnx else _torch_call(model, x, cfg.dtype, dev)
            jobs.append(_Job(e.name, s, b, fn, params, macs, cfg.dtype, s == e.side))
    return jobs


def _onnx_call(onnx_path: Path, x: torch.Tensor, threads: int):
    # Each row's threads stop spinning when its call returns: left spinning, they took the cores from the
    # next row's session (results.md "onnxruntime in int8": the default 1.70 -> 2.29 ms after another row).
    sess = ort_session(onnx_path, threads, inter_op_threads=1, stop_spinning=True)
    # The input's name comes from the file (`image` since export names its axes).
    feed = {sess.get_inputs()[0].name: x.cpu().numpy()}
    return lambda: sess.run(None, feed)


def _torch_call(model: torch.nn.Module, x: torch.Tensor, dtype: str, dev: torch.device):
    ac = (torch.autocast(dev.type, dtype=torch.float16 if dtype == "fp16" else torch.bfloat16)
          if dtype in ("fp16", "bf16") else nullcontext())

    def fn():
        with torch.inference_mode(), ac:
            model(x)
    return fn


def _row(job: _Job, slices: list[list[float]], wait, where: _Where) -> dict:
    t = np.concatenate(slices)
    spread = repeat_spread(slices)
    return {"model": job.name, "size": job.size, "batch": job.batch, "dtype": job.dtype,
            "fps": float(job.batch * len(t) / t.sum()),
            "latency_ms_p50": float(np.percentile(t, 50) * 1000),
            "latency_ms_p95": float(np.percentile(t, 95) * 1000),
            "params": job.params, "macs": job.macs, "iters": len(t), "parse_side": job.parse_side,
            "spread": spread, "cpu_wait": wait, "load": where.load, "cores": where.cores,
            "unreliable": bool(unreliable(spread, wait, where.load, where.cores))}


def environment(dev, threads, cfg) -> dict:
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    return {"device": f"{dev.type}:{name}", "threads": threads, "dtype": cfg.dtype, "backend": cfg.backend,
            "bn_folded": cfg.fold_bn, "channels_last": cfg.channels_last,
            "torch": torch.__version__, "onnxruntime": onnxruntime_version(), "facepipe": __version__,
            "heap": heap_setting(),
            "python": platform.python_version(), "cpu_count": os.cpu_count()}
