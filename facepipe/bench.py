"""Speed (and optionally accuracy) of several models side by side, in one process and one run.

A speed claim is a ratio measured in the same run against a named baseline (bisenet-r18 by default),
with input size, batch, threads, device, dtype and backend stated. Weights do not change speed, so
`--arch` models are benchmarked freshly initialised; `--model RUN` uses a trained checkpoint.
"""
from __future__ import annotations

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


def _timeit(fn, warmup: int, seconds: float, min_iters: int, sync) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    times, t_end = [], time.perf_counter() + seconds
    while len(times) < min_iters or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        if len(times) >= 10000:
            break
    return times


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
                        xn = x.cpu().numpy()

                        def fn(sess=sess, xn=xn):
                            sess.run(None, {"input": xn})
                    else:
                        ac = (torch.autocast(dev.type, dtype=torch.float16 if cfg.dtype == "fp16" else torch.bfloat16)
                              if cfg.dtype in ("fp16", "bf16") else nullcontext())

                        def fn(model=model, x=x, ac=ac):
                            with torch.inference_mode(), ac:
                                model(x)
                    times = _timeit(fn, cfg.warmup, cfg.seconds, cfg.min_iters, sync)
                    t = np.array(times)
                    rows.append({"model": e.name, "size": s, "batch": b, "fps": float(b * len(t) / t.sum()),
                                 "latency_ms_p50": float(np.percentile(t, 50) * 1000),
                                 "latency_ms_p95": float(np.percentile(t, 95) * 1000),
                                 "params": params, "macs": macs, "iters": len(t)})
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
            "python": platform.python_version(), "cpu_count": __import__("os").cpu_count()}
