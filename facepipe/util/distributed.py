"""torch.distributed for the stages that scale out: torchrun starts the ranks, this module joins them.

`setup(device)` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) and
returns a `Dist` for this process, or None outside torchrun (and for a world of one), so single-process
runs take exactly the code path they always took. Backend: nccl for CUDA (one GPU per rank,
cuda:LOCAL_RANK), gloo for CPU. Rank 0 writes every output; the other ranks learn its decisions
(resume or not, refusals) through `share`.
"""
from __future__ import annotations

import datetime
import gc
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist

from facepipe.util.errors import FacepipeError
from facepipe.util.manifest import StageOutput

# Ranks wait at barriers while rank 0 evaluates or merges; torch's default (10 min for nccl) is too short.
TIMEOUT = datetime.timedelta(minutes=int(os.environ.get("FACEPIPE_DIST_TIMEOUT_MIN", "60")))


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    local_world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        dist.barrier()

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (a new tensor; no gradient flows through it)."""
        t = t.detach().clone()
        dist.all_reduce(t)
        return t

    def sum_keep_grad(self, t: torch.Tensor) -> torch.Tensor:
        """The sum over ranks in value; the gradient flows into this rank's own term only (DDP adds the
        other ranks' contributions when it averages gradients)."""
        return t + (self.sum(t) - t.detach())

    def share(self, obj=None):
        """Rank 0's `obj` on every rank (any picklable object)."""
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def sum_np(self, a):
        """Sum of a numpy array over ranks (nccl needs it on the GPU for the trip)."""
        t = torch.from_numpy(a).to(self.device)
        dist.all_reduce(t)
        return t.cpu().numpy()

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's BatchNorm running statistics everywhere (CPU ranks keep their own otherwise)."""
        for b in module.buffers():
            dist.broadcast(b.data, src=0)


def env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: torch.device | None = None) -> Dist | None:
    """Join torchrun's process group (once per process); None when not launched by torchrun with N > 1."""
    if env_world() <= 1:
        return None
    rank, world = int(os.environ["RANK"]), env_world()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    device = device or torch.device("cpu")
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise FacepipeError(f"rank {rank} wants cuda:{local_rank} but this node has "
                                f"{torch.cuda.device_count()} GPUs; lower --nproc-per-node.")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT,
                                **({"device_id": device} if device.type == "cuda" else {}))
    return Dist(rank, world, local_rank, local_world, device)


def default_threads(d: Dist | None) -> int:
    """Threads per process when --threads is 0: the cores shared out among this node's ranks."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // (d.local_world if d else 1))


def split_range(n: int, d: Dist | None, unit: int = 1) -> tuple[int, int]:
    """This rank's contiguous [start, stop) of n items, cut at multiples of `unit` (a batch), so that each
    batch is the same group of items it is in a one-process run."""
    if d is None:
        return 0, n
    blocks = -(-n // unit)
    a, b = blocks * d.rank // d.world, blocks * (d.rank + 1) // d.world
    return min(n, a * unit), min(n, b * unit)


def cleanup(sync: bool = False) -> bool:
    """Leave the process group; True when this process had joined one. After a clean run all ranks meet
    first: gloo aborts the process ("terminate called without an active exception") when one rank tears
    down its connections while another is still using them. After a failure there is no meeting (the
    others may never come)."""
    if not dist.is_initialized():
        return False
    gc.collect()  # what may still hold the group (a DDP reducer in a reference cycle) goes while it works
    if sync:
        try:
            dist.barrier()
        except Exception:
            pass
    dist.destroy_process_group()
    return True


def leave_finished() -> NoReturn:
    """End a rank whose stage finished, after cleanup: exit code 0 without the interpreter's teardown.

    Why: a finished 2-rank CPU run still died now and then at teardown with SIGABRT ("terminate called
    without an active exception": a gloo thread of torch's C++ side destroyed while joinable), after every
    output was written: 4 of 16 full runs of tests/test_distributed.py on 2 busy cores, with the barrier
    above already in place; 0 of 20 with this exit and the gc.collect above. Every stage has closed its files and written its manifest by now, so what
    the teardown would still do (free memory, close descriptors) the operating system does anyway."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def is_main() -> bool:
    """Rank 0 of torchrun's group, or a process outside torchrun: the one that writes and prints."""
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def stage_output(out, stage: str, config: dict, force: bool, d: Dist | None):
    """manifest.StageOutput claimed by rank 0 alone; the other ranks get its state ("done", "resume",
    "fresh", with the manifest when done) or its refusal, and never touch the folder or its lock."""
    if d is None:
        with StageOutput(out, stage, config, force=force) as so:
            yield so
        return
    if not d.is_main:
        msg = d.share()
        if msg[0] == "error":
            raise FacepipeError(msg[1])
        yield _Follower(msg[1], msg[2])
        return
    so = StageOutput(out, stage, config, force=force)
    try:
        so.__enter__()
    except BaseException as e:
        d.share(("error", str(e)))
        raise
    d.share(("ok", so.state, getattr(so, "manifest", None)))
    try:
        yield so
    finally:
        so.__exit__(None, None, None)


@dataclass
class _Follower:
    state: str
    manifest: dict | None
