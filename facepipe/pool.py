"""Per-item work over both cores: a process pool when it pays, a plain loop otherwise."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator


def run_jobs(fn: Callable, jobs: list, workers: int, min_jobs: int = 5, chunksize: int = 8) -> Iterator:
    """Yield fn(job) for every job, in order. `fn` must be a module-level function (it is pickled)."""
    if workers > 1 and len(jobs) >= min_jobs:
        with ProcessPoolExecutor(workers) as ex:
            yield from ex.map(fn, jobs, chunksize=chunksize)
    else:
        for j in jobs:
            yield fn(j)
