"""Timing a callable the way `bench` does (used by `bench --fps` and `bench --parse`): per-iteration
seconds after a warm-up, and the share of the window spent waiting for a CPU (other processes' load)."""
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
