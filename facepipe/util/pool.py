"""Per-item work over both cores: a process pool when it pays, a plain loop otherwise."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

from facepipe.util.interrupt import check, deferred_sigint, ignore_sigint, sigint_blocked, stop_pool


NO_FACE = "no face found"  # a per-photo stage's skipped item read without trouble: no face in it


def run_jobs(fn: Callable, jobs: list, workers: int, min_jobs: int = 5, chunksize: int = 8) -> Iterator:
    """Yield fn(job) for every job, in order. `fn` must be a module-level function (it is pickled).

    Ctrl-C is this process's alone (facepipe.util.interrupt): workers ignore it from birth instead of each
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
            stop_pool(ex)
    else:
        for j in jobs:
            yield fn(j)


def each_photo(name: str, photos: list, shard: tuple[int, int] | None, done: Callable[[object], Path], fn: Callable,
               job: Callable[[object], tuple], workers: int, reporter) -> tuple[list, list, list[dict]]:
    """A per-photo stage's loop: the photos of this shard, those not done yet (`done(photo)` is the file
    that marks one finished), each run as fn(job(photo)) -> (id, result, error or None) with progress.
    Returns (this shard's photos, those done now, the skipped ones with their reasons)."""
    mine = photos if shard is None else photos[shard[0]::shard[1]]
    todo = [p for p in mine if not done(p).exists()]
    skipped = []
    with reporter.task(name, len(mine)) as advance:
        advance(len(mine) - len(todo))
        for pid, _, err in run_jobs(fn, [job(p) for p in todo], workers or (os.cpu_count() or 1)):
            if err is not None:
                skipped.append({"id": pid, "reason": err})
            advance()
    return mine, todo, skipped


def new_since(manifest: dict, photos: list, done: Callable[[object], Path], out: Path) -> list:
    """The photos a finished per-photo stage has not seen: no file marks them done, its manifest does not
    name them as skipped, and they are not its own outputs (an OUT inside SRC): photos added to SRC after
    the stage finished, or renamed."""
    seen = {str(s.get("id")) for s in manifest.get("skipped", [])}
    o = Path(out).resolve()
    return [p for p in photos if str(p.id) not in seen and not done(p).exists()
            and o not in Path(p.path).resolve().parents]


def name_new(new: list, src, out, reporter) -> None:
    """The warning of a finished stage rerun on a SRC that gained photos: they are not taken up (a finished
    output is left alone: its manifest's sha256 is what the next stage was made from)."""
    if new:
        reporter.log(f"[yellow]{len(new)} photo(s) in {src} are not in {out}, finished before they came "
                     f"(e.g. {new[0].path}): --force redoes the folder with them, or write to another[/]")
