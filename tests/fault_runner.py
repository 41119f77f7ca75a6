"""Runs the real `facepipe` CLI in a subprocess with two test hooks (used by tests/test_faults.py and
tests/test_long_run.py; not collected by pytest):

  FACEPIPE_TEST_PROGRESS=FILE  append "<task> <steps done>" to FILE after every progress step, so the
                               test can SIGKILL/SIGINT the process at a chosen step from outside;
  FACEPIPE_TEST_LOADER=1       force training's DataLoader path (a tiny cache is otherwise held in
                               memory and --workers would do nothing).
"""
import os
import sys
from contextlib import contextmanager

import facepipe.util.progress as progress

_path = os.environ.get("FACEPIPE_TEST_PROGRESS")
if _path:
    _task = progress.Reporter.task

    @contextmanager
    def task(self, description, total):
        with _task(self, description, total) as adv:
            done = [0]

            def advance(n=1, **kw):
                adv(n, **kw)
                done[0] += n
                with open(_path, "a") as fh:
                    fh.write(f"{description.split()[0]} {done[0]}\n")
            yield advance

    progress.Reporter.task = task

if os.environ.get("FACEPIPE_TEST_LOADER"):
    import facepipe.learn.train

    facepipe.learn.train.Batches.IN_MEMORY_BYTES = 0

if __name__ == "__main__":
    from facepipe.cli import main

    sys.argv[0] = "facepipe"
    main()
