"""Per-item work over both cores: a process pool when it pays, a plain loop otherwise."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator

from facepipe.interrupt import check, deferred_sigint, ignore_sigint, sigint_blocked


def run_jobs(fn: Callable, jobs: list, workers: int, min_jobs: int = 5, chunksize: int = 8) -> Iterator:
    """Yield fn(job) for every job, in order. `fn` must be a module-level function (it is pickled).

    Ctrl-C is this process's alone (facepipe.interrupt): workers ignore it from birth instead of each
    printing a KeyboardInterrupt traceback, and it is raised here between results (within a chunk's time),
    never inside a finalizer that would swallow it. On Ctrl-C or any other exit, jobs not yet started are
    dropped and only the chunks in hand are waited for."""
    if workers > 1 and len(jobs) >= min_jobs:
        ex = ProcessPoolExecutor(workers, initializer=ignore_sigint)
        try:
            with deferred_sigint():
                with sigint_blocked():  # map() submits every chunk, which starts the workers
                    results = ex.map(fn, jobs, chunksize=chunksize)
                for r in results:
                    check()
                    yield r
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
    else:
        for j in jobs:
            yield fn(j)
