"""util.heap: freed memory stays in the process, so a network's next call reuses it without page faults."""
import subprocess
import sys

import pytest

# In a fresh interpreter (the allocator's state is per process): free a heap's worth of 1 MiB blocks at
# once, as a forward pass frees its activations, then allocate and touch them again, and count the pages
# the kernel had to hand back in between (minor faults).
SCRIPT = """
import resource, sys
from facepipe.util.heap import keep_freed_memory
setting = keep_freed_memory() if sys.argv[1] == "kept" else "allocator defaults"
def touch_blocks():
    blocks = [bytearray(1 << 20) for _ in range(48)]  # zero-filled: every page touched
    del blocks
touch_blocks()  # the first round: the allocator's moving thresholds settle here
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    touch_blocks()
print(setting, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode):
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True).stdout
    setting, faults = out.rsplit(" ", 1)
    return setting, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's thresholds: Linux only")
def test_freed_memory_is_reused_without_page_faults():
    setting, kept = _faults("kept")
    if not setting.startswith("glibc"):
        pytest.skip(f"not glibc here ({setting})")
    _, default = _faults("defaults")
    # 48 MiB given back and taken again five times is 60,000 pages; kept, next to none come back.
    assert default > 10_000, default
    assert kept < default / 20, (kept, default)


def test_the_users_own_glibc_variables_win(monkeypatch):
    from facepipe.util import heap

    monkeypatch.setitem(heap._state, "setting", "allocator defaults")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert heap.keep_freed_memory() == "glibc: MALLOC_TRIM_THRESHOLD_=0"
    assert heap.heap_setting() == "glibc: MALLOC_TRIM_THRESHOLD_=0"
