"""Timing callables the way `bench` does: per-iteration seconds after a warm-up, and the share of the
timing spent waiting for a CPU (other processes' load). `bench --fps` times its models in turns
(timeit_in_turns), `bench --parse` one network alone (timeit)."""
from __future__ import annotations

import time
from pathlib import Path


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


def _counters(before, after) -> tuple[int, int] | None:
    """(ns on a CPU, ns waiting for one) of this process's threads between two _sched() readings."""
    if before is None or after is None:
        return None
    # Threads started in between count from zero; threads that ended are lost (pools persist).
    return (sum(r - before.get(t, (0, 0))[0] for t, (r, _) in after.items()),
            sum(w - before.get(t, (0, 0))[1] for t, (_, w) in after.items()))


def _share(run: int, wait: int) -> float | None:
    return wait / (run + wait) if run + wait > 0 else None


def cpu_wait_share(before, after, cpu_s: float = 0.0, wall_s: float = 0.0, threads: int = 1) -> float | None:
    """Share of the timing threads' time spent runnable but off a CPU, i.e. taken by other processes.

    From the kernel's per-thread run/wait counters where there are some; otherwise estimated as the CPU
    time the process did not get out of `threads` x wall (torch's and onnxruntime's pools spin while
    they wait, so a quiet machine gives them nearly threads x wall).
    """
    counters = _counters(before, after)
    if counters is not None:
        return _share(*counters)
    if wall_s <= 0 or threads <= 0:
        return None
    return float(min(1.0, max(0.0, 1.0 - cpu_s / (wall_s * threads))))


def _window(fn, seconds: float, min_iters: int, sync) -> tuple[list[float], tuple[int, int] | None, float, float]:
    """One timing window: per-iteration seconds, the kernel's (run, wait) ns of this process's threads over
    it (None off Linux), and its CPU and wall seconds."""
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
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return times, _counters(s0, _sched()), cpu, wall


def _wait_share(windows, threads: int, on_cpu: bool) -> float | None:
    """cpu_wait_share over several windows of one callable (the kernel's counters summed where all have them)."""
    counters = [w[1] for w in windows]
    if all(c is not None for c in counters):
        return _share(sum(c[0] for c in counters), sum(c[1] for c in counters))
    if not on_cpu:  # off Linux the CPU-time estimate only means something when the CPU does the work
        return None
    return cpu_wait_share(None, None, sum(w[2] for w in windows), sum(w[3] for w in windows), threads)


def timeit(fn, warmup: int, seconds: float, min_iters: int, sync, threads: int = 1,
           on_cpu: bool = True) -> tuple[list[float], float | None]:
    """Per-iteration seconds after warm-up, and the share of the timing spent waiting for a CPU."""
    for _ in range(warmup):
        fn()
    sync()
    window = _window(fn, seconds, min_iters, sync)
    return window[0], _wait_share([window], threads, on_cpu)


def timeit_in_turns(fns, warmup: int, seconds: float, min_iters: int, sync, threads: int = 1,
                    on_cpu: bool = True, turns: int = 5, advance=None) -> list[tuple[list[list[float]], float | None]]:
    """Several callables timed in turns: `turns` rounds, each giving every callable a slice of seconds/turns
    (at least min_iters/turns iterations) after one untimed call, the order reversed every other round.
    Per callable: its slices' per-iteration seconds, and the share of its slices spent waiting for a CPU.

    Why in turns: the machine's speed changes over seconds (our 2-core VM: the second core's threads run
    fast for a while, then 30% slower for a small network, with nothing else running). Timed one after the
    other, a model and its baseline each land in whichever state their own window met, and their ratio
    swung 9.0-15.1x over 12 runs; timed in turns, both meet the same mix. The untimed call puts the
    callable's weights back in the caches the others used.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    sync()
    per_slice = max(1, -(-min_iters // turns))
    windows = [[] for _ in fns]
    for k in range(turns):
        order = range(len(fns)) if k % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            fns[i]()
            sync()
            windows[i].append(_window(fns[i], seconds / turns, per_slice, sync))
            if advance is not None:
                advance()
    return [([w[0] for w in ws], _wait_share(ws, threads, on_cpu)) for ws in windows]
