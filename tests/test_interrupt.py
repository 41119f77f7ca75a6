"""Ctrl-C handling (facepipe/util/interrupt.py): the main process takes it where the loop chooses, worker
processes ignore it. The end-to-end check is tests/test_long_run.py's Ctrl-C of `train --workers 2`."""
import multiprocessing
import os
import signal

import pytest
import torch

from facepipe.data.face_cache import loader_batches
from facepipe.util.interrupt import check, deferred_sigint
from facepipe.util.pool import run_jobs


def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_is_raised_by_check_not_where_it_lands():
    with pytest.raises(KeyboardInterrupt):
        with deferred_sigint():
            ctrl_c()
            for _ in range(1000):  # plenty of bytecodes at which an immediate KeyboardInterrupt would land
                pass
            reached = True
            check()
            raise AssertionError("check() did not raise")
    assert reached
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    check()  # taken: nothing pending any more


def test_ctrl_c_after_the_last_check_is_raised_on_leaving():
    with pytest.raises(KeyboardInterrupt):
        with deferred_sigint():
            ctrl_c()
    with deferred_sigint():  # and a block without Ctrl-C raises nothing
        check()


def test_second_ctrl_c_raises_at_once():
    with pytest.raises(KeyboardInterrupt):
        with deferred_sigint():
            ctrl_c()
            ctrl_c()
            for _ in range(1000):
                pass
            raise AssertionError("the second Ctrl-C did not raise")


def test_a_handler_someone_set_is_kept():
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with deferred_sigint():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            ctrl_c()
            check()
    finally:
        signal.signal(signal.SIGINT, old)


def test_loader_workers_ignore_ctrl_c_and_are_joined_when_closed():
    data = torch.utils.data.TensorDataset(torch.arange(64.0))
    batches = loader_batches(data, 4, 2)
    first = next(batches)
    workers = multiprocessing.active_children()
    assert len(workers) == 2
    for w in workers:
        os.kill(w.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches them too
    rest = list(batches)  # they carry on, without a traceback of their own
    assert torch.cat([first[0]] + [b[0] for b in rest]).tolist() == list(range(64))
    assert not any(w.is_alive() for w in workers) and not multiprocessing.active_children()

    batches = loader_batches(data, 4, 2)
    next(batches)
    batches.close()  # an interrupted epoch: the workers are joined now, not when the GC gets to them
    assert not multiprocessing.active_children()


def _ctrl_c_in_worker(i):
    ctrl_c()
    return i * i


def test_pool_workers_ignore_ctrl_c():
    assert list(run_jobs(_ctrl_c_in_worker, list(range(10)), workers=2, chunksize=2)) == [i * i for i in range(10)]


def _slow_square(i):
    import time

    time.sleep(0.02)
    return i * i


def test_ctrl_c_stops_a_pool_soon_and_leaves_no_worker():
    got = []
    with pytest.raises(KeyboardInterrupt):
        for r in run_jobs(_slow_square, list(range(200)), workers=2, chunksize=2):
            got.append(r)
            if len(got) == 3:
                ctrl_c()  # taken at the next result, not inside the pool's machinery
    assert len(got) == 3 and not multiprocessing.active_children()


def _nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


def test_ctrl_c_while_a_pool_stops_ends_its_workers_not_the_wait():
    # The second Ctrl-C of an interrupted run, pressed while the pool waits for its jobs in hand. Raised
    # inside that wait it left the manager thread running but marked stopped, and the interpreter then
    # hung at exit (stop_pool's docstring); now it ends the workers and the wait returns.
    import threading
    import time
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from facepipe.util.interrupt import ignore_sigint, stop_pool

    ex = ProcessPoolExecutor(2, mp_context=get_context("spawn"), initializer=ignore_sigint)
    jobs = [ex.submit(_nap, 60) for _ in range(2)]
    _nap(0.2)
    manager, workers = ex._executor_manager_thread, list(ex._processes.values())
    assert len(workers) == 2 and not any(j.done() for j in jobs)
    threading.Timer(1.0, ctrl_c).start()  # the handler runs in this, the main thread, during the wait
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):  # raised after the wait: the run still ends as interrupted
        stop_pool(ex)
    assert time.perf_counter() - t0 < 30, "the wait outlasted the Ctrl-C"
    assert manager not in threading.enumerate() and not any(w.is_alive() for w in workers)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_while_a_pool_stops_lets_short_jobs_in_hand_finish():
    # Ended at once, a worker could die halfway through writing its result (the manager thread then
    # waited for the rest of the message forever) or a file (its temporary left behind): jobs in hand
    # that end within the grace period finish; the run still ends as interrupted.
    import threading
    import time
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from facepipe.util.interrupt import GRACE_S, ignore_sigint, stop_pool

    ex = ProcessPoolExecutor(2, mp_context=get_context("spawn"), initializer=ignore_sigint)
    # Both workers started and this module imported in them first: on a loaded machine a spawned worker
    # can take seconds to start, which the grace period below is not about.
    assert list(ex.map(_nap, [0.5, 0.5])) == [0.5, 0.5] and len(ex._processes) == 2
    jobs = [ex.submit(_nap, 2.0) for _ in range(2)]
    time.sleep(0.5)
    assert not any(j.done() for j in jobs)
    threading.Timer(0.5, ctrl_c).start()
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        stop_pool(ex)
    assert [j.result() for j in jobs] == [2.0, 2.0]  # finished, not failed with a broken pool
    assert time.perf_counter() - t0 < GRACE_S


def test_stop_pool_waits_for_jobs_in_hand_and_drops_the_rest():
    from concurrent.futures import ProcessPoolExecutor

    from facepipe.util.interrupt import stop_pool

    ex = ProcessPoolExecutor(1)
    jobs = [ex.submit(_nap, 0.3) for _ in range(20)]
    stop_pool(ex)
    assert jobs[0].result() == 0.3 and jobs[-1].cancelled()


_ORPHAN_SCRIPT = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from facepipe.util.interrupt import ignore_sigint

def nap(s):
    time.sleep(s)

if __name__ == "__main__":
    ctx = get_context(sys.argv[1])
    ex = ProcessPoolExecutor(2, mp_context=ctx, initializer=ignore_sigint)
    futs = [ex.submit(nap, 60) for _ in range(2)]
    time.sleep(3 if sys.argv[1] == "spawn" else 1)
    print(" ".join(str(p) for p in ex._processes), flush=True)
    os._exit(0)  # as if killed: no shutdown, no atexit
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_workers_end_with_a_parent_that_was_killed(tmp_path, method):
    # A parent killed with SIGKILL (or by the OOM killer) left its pool's workers waiting on their call
    # queue forever; util.interrupt.die_with_parent has the kernel end them with it.
    import subprocess
    import sys
    import time

    script, out = tmp_path / "orphans.py", tmp_path / "pids.txt"
    script.write_text(_ORPHAN_SCRIPT)
    with open(out, "w") as fh:  # a file, not a pipe: orphans holding a pipe would keep run() waiting
        r = subprocess.run([sys.executable, str(script), method], stdout=fh, stderr=subprocess.STDOUT, timeout=120)
    pids = [int(p) for p in (out.read_text().splitlines() or [""])[0].split() if p.isdigit()]
    assert r.returncode == 0 and len(pids) == 2, out.read_text()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), "pool workers outlived their killed parent"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
