"""The bundled models with and without models.layers.upsample_whole, timed in turns in one process.

    python tools/upsample_ab.py [--seconds 8]

Each model runs as `bench --fps` runs it (BatchNorm folded, channels_last, 2 threads, batch 1, at its own
crop side), once with the logits' last resize as ATen's bilinear kernel and once as upsample_whole;
bisenet-r18 at each side gives the ratios. The switch is models.layers.MAX_WHOLE_FACTOR (1: never), set
before each call, so both ways meet the same machine (util.timing.timeit_in_turns).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from facepipe.infer.bench import BASELINE, BenchConfig, _prepared, arch_entry, run_entry
from facepipe.models import layers
from facepipe.util.heap import keep_freed_memory
from facepipe.util.timing import timeit_in_turns


def timed_call(model, x, factor: int):
    def fn():
        layers.MAX_WHOLE_FACTOR = factor
        with torch.inference_mode():
            model(x)
    return fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    keep_freed_memory()
    torch.set_num_threads(2)
    whole = layers.MAX_WHOLE_FACTOR
    names, fns = [], []
    for name in ("default", "accurate"):
        e = run_entry(name)
        m = _prepared(e.model, BenchConfig(), torch.device("cpu"))
        x = torch.randn(1, e.in_channels, e.side, e.side).contiguous(memory_format=torch.channels_last)
        names += [(name, e.side, "ATen"), (name, e.side, "whole")]
        fns += [timed_call(m, x, 1), timed_call(m, x, whole)]
    for side in sorted({s for _, s, _ in names}):
        m = _prepared(arch_entry(BASELINE).model, BenchConfig(), torch.device("cpu"))
        names.append((BASELINE, side, "ATen"))
        fns.append(timed_call(m, torch.randn(1, 3, side, side).contiguous(memory_format=torch.channels_last), whole))
    res = timeit_in_turns(fns, 5, args.seconds, 10, lambda: None, 2, turns=10)
    fps = {n: sum(map(len, sl)) / sum(map(sum, sl)) for n, (sl, _) in zip(names, res)}
    med = {n: float(np.median(np.concatenate(sl))) for n, (sl, _) in zip(names, res)}
    for (name, side, way), (sl, _) in zip(names, res):
        base = fps[(BASELINE, side, "ATen")]
        print(f"{name:12s} {side:4d}  {way:5s}  {fps[(name, side, way)]:7.1f} fps  median "
              f"{np.median(np.concatenate(sl)) * 1e3:7.3f} ms  {fps[(name, side, way)] / base:6.2f}x {BASELINE}")
    for name, side in dict.fromkeys((n, s) for n, s, _ in names if n != BASELINE):
        gain = fps[(name, side, "whole")] / fps[(name, side, "ATen")] - 1
        fast = med[(name, side, "ATen")] / med[(name, side, "whole")] - 1
        print(f"{name} at {side}: {gain:+.1%} frames per second, {fast:+.1%} on the median call, with upsample_whole")


if __name__ == "__main__":
    main()
