"""Ctrl-C without stray tracebacks: worker processes leave it to the main process, and the main process
takes it where the code chooses.

A terminal sends SIGINT to the whole foreground process group, workers included, and CPython raises
KeyboardInterrupt at whichever bytecode the main thread runs next. Two things go wrong with that:

* a worker hit while it starts up (multiprocessing's bootstrap, before torch's DataLoader loop guards
  against it) or while it runs a finalizer prints "Process ...: Traceback ... KeyboardInterrupt" or
  "Exception ignored in ... KeyboardInterrupt". Workers therefore ignore SIGINT (`ignore_sigint`, their
  initializer), and are forked with SIGINT blocked (`sigint_blocked`) so there is no moment between
  fork and initializer in which they could take it; the main process shuts them down.
* in the main process, the next bytecode is often a finalizer: torch's shared-memory bookkeeping of every
  batch a DataLoader worker sends (StorageWeakRef.__del__, WeakValueDictionary callbacks) or an iterator's
  __del__. An exception cannot leave a finalizer: Python prints "Exception ignored in ..." and carries on
  as if Ctrl-C had not been pressed. Inside `deferred_sigint()` SIGINT only sets a flag and `check()`
  raises KeyboardInterrupt between batches, where it unwinds like any other exception. That also keeps
  Ctrl-C out of a checkpoint being written. A second Ctrl-C before the next check raises at once.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from contextlib import contextmanager

_pending = False  # a Ctrl-C arrived inside deferred_sigint() and check() has not raised it yet
_active = False


def ignore_sigint(*_) -> None:
    """Initializer of worker processes (DataLoader worker_init_fn, pool initializer): Ctrl-C is the main
    process's to handle. SIG_IGN before unblocking discards a SIGINT that arrived while blocked. The
    worker also ends with its parent (die_with_parent)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    die_with_parent()


def die_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux prctl PR_SET_PDEATHSIG; a
    no-op elsewhere). Why: a pool worker waits on its call queue, whose pipe it holds open itself, so a
    parent killed by SIGKILL or the OOM killer left its workers idle forever, dlib's models (~100 MB)
    and all: 12 such orphans of `parse` were found here two hours after their parents were killed. A
    parent that died before this call is caught by the parent process id no longer being its own.
    (The signal follows the parent thread that started the worker: pools and loaders start theirs from
    the main thread, which lives as long as the process.)"""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid != os.getppid():  # orphaned already: adopted by another process
        os.kill(os.getpid(), signal.SIGTERM)


@contextmanager
def sigint_blocked():
    """SIGINT held back (not lost) in this thread; processes forked meanwhile inherit the block, and the
    mask survives exec, so spawned workers start blocked too. A Ctrl-C pressed meanwhile is delivered on exit."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks, and no fork
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _on_sigint(signum, frame):
    global _pending
    if _pending:  # the second Ctrl-C: the user does not want to wait for the next check
        raise KeyboardInterrupt
    _pending = True


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed inside deferred_sigint(); a no-op outside it."""
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt


@contextmanager
def deferred_sigint():
    """Within this block Ctrl-C is raised by check(), or on leaving the block, not wherever it lands.

    Does nothing outside the main thread (only it may set handlers, and only it gets KeyboardInterrupt),
    inside another deferred_sigint(), or when SIGINT already has a handler other than Python's default
    (someone chose how Ctrl-C behaves; that choice stands)."""
    global _pending, _active
    if (_active or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    _active, _pending = True, False
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        pending, _active, _pending = _pending, False, False
    if pending:  # pressed after the block's last check: not lost
        raise KeyboardInterrupt


def exit_on_next_sigint() -> None:
    """For a process on its way out after a Ctrl-C: another one ends it the kernel's way (status 130 in
    the shell too) instead of raising KeyboardInterrupt in an atexit handler or a finalizer of the
    interpreter's shutdown, which would print a traceback after the one-line message."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_DFL)


GRACE_S = 5.0  # stop_pool: how long the jobs in hand may take after a Ctrl-C during its wait


def stop_pool(ex) -> None:
    """Shut a concurrent.futures ProcessPoolExecutor down after its loop, whatever ended the loop: pending
    jobs are dropped and the jobs in hand waited for. A Ctrl-C during that wait (the user has pressed it
    twice) does not raise inside the wait: the jobs in hand get GRACE_S more, then the workers are ended
    (at once on a third press); it is raised afterwards, unless an exception is already on its way out.

    Why not ex.shutdown alone: in CPython 3.11, a KeyboardInterrupt that lands in Thread.join can leave
    the joined thread marked stopped while it still runs (threading's bpo-45274 cleanup tests
    lock.locked(), which the running thread's own lock also satisfies). The interrupted join was the
    executor's manager thread's, so the interpreter exited without waiting for it; multiprocessing's exit
    handler closed the call queue's feeder thread before the manager had queued the workers' stop
    sentinels, and the process then waited for its idle workers forever. That was 5 of ~40 runs of
    `timeout -s INT 8 facepipe parse ...`: timeout signals the child and then its process group, so
    the main process got SIGINT twice and the second landed in this join."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) not in (
            signal.default_int_handler, _on_sigint):
        ex.shutdown(wait=True, cancel_futures=True)
        return
    workers = list((getattr(ex, "_processes", None) or {}).values())
    pressed, timers = [], []

    def terminate():
        for p in workers:  # the manager thread sees them die, fails their jobs and ends: the wait returns
            if p.is_alive():
                p.terminate()

    def end_workers(signum, frame):
        # Not at once: a worker ended while it writes its result leaves half a message in the result pipe,
        # and the manager thread then waits for the rest forever (seen under CPU load), and one ended
        # while it writes a file leaves its temporary behind. The jobs in hand (a photo each) get
        # GRACE_S to finish; a further Ctrl-C ends them now.
        pressed.append(signum)
        if len(pressed) > 1:
            terminate()
        else:
            timers.append(threading.Timer(GRACE_S, terminate))
            timers[-1].daemon = True
            timers[-1].start()

    old = signal.signal(signal.SIGINT, end_workers)
    try:
        ex.shutdown(wait=True, cancel_futures=True)
    finally:
        signal.signal(signal.SIGINT, old)
        for t in timers:
            t.cancel()
    if pressed and sys.exc_info()[1] is None:
        raise KeyboardInterrupt
