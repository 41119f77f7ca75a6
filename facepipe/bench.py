"""Speed (and optionally accuracy) of several models side by side, in one process and one run.

A speed claim is a ratio measured in the same run against a named baseline (bisenet-r18 by default),
with input size, batch, threads, device, dtype and backend stated. Weights do not change speed, so
`--arch` models are benchmarked freshly initialised; `--model RUN` uses a trained checkpoint.

Every row also says how far to trust it: `spread` (how much the throughput of consecutive slices of the
timing window differs), `cpu_wait` (the share of time the timing threads were ready to run but another
process had the CPU) and `load` (the 1-minute load average before timing). On a shared machine absolute
FPS swings by an order of magnitude between runs; `unreliable` turns these into one verdict.
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from facepipe.errors import FacepipeError
from facepipe.macs import count_macs, count_params

BASELINE = "bisenet-r18"
DEFAULT_ARCHS = ("teacher", "student", BASELINE)
REPEATS = 5  # slices of each timing window whose throughputs give the row's spread
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


@dataclass(frozen=True)
class BenchConfig:
    sizes: tuple = (256,)
    batches: tuple = (1,)
    threads: int = 2
    device: str = "cpu"
    backend: str = "torch"  # torch | onnxruntime
    dtype: str = "fp32"  # fp32 | fp16 | bf16 (autocast on CUDA; bf16 also on CPU)
    warmup: int = 5
    seconds: float = 2.0  # timing window per (model, size, batch); at least `min_iters` iterations
    min_iters: int = 10
    channels_last: bool = True  # NHWC, as `parse` runs models (predict.predict_probs); torch backend only
    fold_bn: bool = True  # fold BatchNorm into convs for every model timed, the baseline included


def arch_entry(name: str, num_classes: int = 6) -> Entry:
    from facepipe.models import create_model

    # The paper's parsers take RGB + the landmark heatmap; BiSeNet as users run it takes RGB.
    cin = 3 if name.startswith("bisenet") else 4
    return Entry(name=name, model=create_model(name, num_classes=num_classes, in_channels=cin).eval(),
                 in_channels=cin, heatmap=cin == 4)


def run_entry(run: str) -> Entry:
    from facepipe.checkpoint import build_from_checkpoint, load_checkpoint, run_checkpoint

    ck_path = run_checkpoint(run)
    ck = load_checkpoint(ck_path)
    model, schema = build_from_checkpoint(ck)
    name = f"{Path(run).name} ({ck['arch']})" if Path(run).is_dir() else Path(run).stem
    return Entry(name=name, model=model.eval(), in_channels=int(ck["in_channels"]), schema=schema, run=run,
                 heatmap=bool(ck["heatmap"]))


def _sched() -> dict[str, tuple[int, int]] | None:
    """Per thread of this process: (ns spent on a CPU, ns runnable but waiting for one). None off Linux."""
    base = Path("/proc/self/task")
    if not base.is_dir():
        return None
    out = {}
    for t in base.iterdir():
        try:
            run, wait = (t / "schedstat").read_text().split()[:2]
        except (OSError, ValueError):
            continue  # the thread ended while we listed it
        out[t.name] = (int(run), int(wait))
    return out or None


def cpu_wait_share(before, after, cpu_s: float = 0.0, wall_s: float = 0.0, threads: int = 1) -> float | None:
    """Share of the timing threads' time spent runnable but off a CPU, i.e. taken by other processes.

    From the kernel's per-thread run/wait counters where there are some; otherwise estimated as the CPU
    time the process did not get out of `threads` x wall (torch's and onnxruntime's pools spin while
    they wait, so a quiet machine gives them nearly threads x wall).
    """
    if before is not None and after is not None:
        # Threads started during the window count from zero; threads that ended are lost (pools persist).
        run = sum(r - before.get(t, (0, 0))[0] for t, (r, _) in after.items())
        wait = sum(w - before.get(t, (0, 0))[1] for t, (_, w) in after.items())
        return wait / (run + wait) if run + wait > 0 else None
    if wall_s <= 0 or threads <= 0:
        return None
    return float(min(1.0, max(0.0, 1.0 - cpu_s / (wall_s * threads))))


def repeat_spread(times, repeats: int = REPEATS) -> float:
    """(max - min) / median of the throughput of `repeats` consecutive slices of one timing window.

    Slices rather than single iterations: one iteration's jitter (a page fault, a timer tick) averages
    out within a slice, while a neighbour starting or stopping mid-window does not.
    """
    t = np.asarray(times, dtype=float)
    if len(t) < 2:
        return 0.0
    rate = np.array([len(c) / c.sum() for c in np.array_split(t, min(repeats, len(t)))])
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


def timeit(fn, warmup: int, seconds: float, min_iters: int, sync, threads: int = 1,
            on_cpu: bool = True) -> tuple[list[float], float | None]:
    """Per-iteration seconds after warm-up, and the share of the timing spent waiting for a CPU."""
    for _ in range(warmup):
        fn()
    sync()
    s0, c0 = _sched(), time.process_time()
    times, t0 = [], time.perf_counter()
    t_end = t0 + seconds
    while len(times) < min_iters or time.perf_counter() < t_end:
        t1 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t1)
        if len(times) >= 10000:
            break
    wall, cpu, s1 = time.perf_counter() - t0, time.process_time() - c0, _sched()
    # Off Linux the CPU-time estimate only means something when the CPU does the work.
    wait = cpu_wait_share(s0, s1, cpu, wall, threads) if (s0 is not None or on_cpu) else None
    return times, wait


def bench_speed(entries: list[Entry], cfg: BenchConfig, reporter=None) -> list[dict]:
    from facepipe.device import pick_device, set_threads

    dev = pick_device(cfg.device)
    threads = set_threads(cfg.threads)
    if cfg.backend not in ("torch", "onnxruntime"):
        raise FacepipeError("--backend must be torch or onnxruntime")
    # onnxruntime takes NCHW arrays and picks its own layouts: the memory format is a torch setting.
    cfg = replace(cfg, channels_last=cfg.channels_last and cfg.backend == "torch")
    if cfg.backend == "onnxruntime" and dev.type != "cpu":
        raise FacepipeError("--backend onnxruntime is measured on the CPU here; use --device cpu.")
    if cfg.dtype == "fp16" and dev.type == "cpu":
        raise FacepipeError("fp16 on the CPU is not a fair measurement in torch; use --dtype bf16 or fp32.")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rows = []
    total = len(entries) * len(cfg.sizes) * len(cfg.batches)
    from contextlib import nullcontext

    from facepipe.progress import SILENT

    rep = reporter or SILENT
    # Read before any timing: only this process's one loading thread is in it yet, so it is the others'.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    cores = os.cpu_count() or 1
    with rep.task("bench", total) as advance:
        for e in entries:
            params = count_params(e.model)  # as trained (folding would drop the BatchNorm parameters)
            model = e.model.eval()
            if cfg.fold_bn and cfg.backend == "torch":
                from facepipe.models.fold import fold_batchnorm

                model = fold_batchnorm(model)
            model = model.to(dev)
            if cfg.channels_last:
                model = model.to(memory_format=torch.channels_last)
            onnx_path = None
            if cfg.backend == "onnxruntime":
                from facepipe.export import export_model

                tmpdir = tempfile.TemporaryDirectory(prefix="facepipe-bench-")  # removed when collected
                onnx_path = Path(tmpdir.name) / "m.onnx"
                export_model(e.model.cpu(), e.in_channels, cfg.sizes[0], onnx_path)
            for s in cfg.sizes:
                macs = count_macs(model, torch.zeros(1, e.in_channels, s, s, device=dev))
                for b in cfg.batches:
                    x = torch.randn(b, e.in_channels, s, s, device=dev)
                    if cfg.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    if cfg.backend == "onnxruntime":
                        import onnxruntime as ort

                        so = ort.SessionOptions()
                        so.intra_op_num_threads = threads
                        so.inter_op_num_threads = 1
                        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
                        # The input's name comes from the file (`image` since export names its axes).
                        feed = {sess.get_inputs()[0].name: x.cpu().numpy()}

                        def fn(sess=sess, feed=feed):
                            sess.run(None, feed)
                    else:
                        ac = (torch.autocast(dev.type, dtype=torch.float16 if cfg.dtype == "fp16" else torch.bfloat16)
                              if cfg.dtype in ("fp16", "bf16") else nullcontext())

                        def fn(model=model, x=x, ac=ac):
                            with torch.inference_mode(), ac:
                                model(x)
                    times, wait = timeit(fn, cfg.warmup, cfg.seconds, cfg.min_iters, sync, threads,
                                          on_cpu=dev.type == "cpu")
                    t = np.array(times)
                    spread = repeat_spread(t)
                    rows.append({"model": e.name, "size": s, "batch": b, "fps": float(b * len(t) / t.sum()),
                                 "latency_ms_p50": float(np.percentile(t, 50) * 1000),
                                 "latency_ms_p95": float(np.percentile(t, 95) * 1000),
                                 "params": params, "macs": macs, "iters": len(t),
                                 "spread": spread, "cpu_wait": wait, "load": load, "cores": cores,
                                 "unreliable": bool(unreliable(spread, wait, load, cores))})
                    advance()
    for r in rows:
        base = [q for q in rows if q["model"].split(" ")[0] == BASELINE and q["size"] == r["size"]
                and q["batch"] == r["batch"]]
        r["ratio_to_baseline"] = float(r["fps"] / base[0]["fps"]) if base else None
    env = environment(dev, threads, cfg)
    for r in rows:
        r.update({k: env[k] for k in ("device", "threads", "dtype", "backend", "bn_folded", "channels_last")})
    return rows


def environment(dev, threads, cfg) -> dict:
    import onnxruntime

    from facepipe import __version__

    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    return {"device": f"{dev.type}:{name}", "threads": threads, "dtype": cfg.dtype, "backend": cfg.backend,
            "bn_folded": cfg.fold_bn, "channels_last": cfg.channels_last,
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "facepipe": __version__,
            "python": platform.python_version(), "cpu_count": os.cpu_count()}
