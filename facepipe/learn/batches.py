"""Seeded, shuffled training batches of a cache split (what `train` feeds the engine).

Every epoch draws its order from (seed, epoch) alone, so a resumed run sees the batches an uninterrupted
one would. Small caches are held in memory; big ones are read by DataLoader workers. Under torchrun every
rank draws the same order and takes its rows [first, first + per) of each global batch.
"""
from __future__ import annotations

import numpy as np
import torch

from facepipe.data.face_cache import FaceCache, loader_batches, to_input
from facepipe.util.distributed import Dist


class Batches:
    """Seeded shuffled batches; small caches are held in memory, big ones read by DataLoader workers.

    With ranks, every rank draws the same order and takes rows [first, first + per) of each global batch."""

    IN_MEMORY_BYTES = 2 << 30

    def __init__(self, ds: FaceCache, batch_size: int, seed: int, workers: int, d: Dist | None = None):
        self.ds, self.bs, self.seed, self.workers = ds, batch_size, seed, workers
        self.per = batch_size // (d.world if d else 1)
        self.first = d.rank * self.per if d else 0
        s = ds.size
        self.in_memory = len(ds) * s * s * 5 < self.IN_MEMORY_BYTES
        if self.in_memory:
            self.images, self.heat, self.labels = ds.batch(np.sort(ds.indices))

    def __len__(self):
        return max(1, len(self.ds) // self.bs)

    def epoch(self, epoch: int):
        """(input, labels) tensor pairs of this rank, one per global batch of the epoch."""
        g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        order = torch.randperm(len(self.ds), generator=g).numpy()
        if self.in_memory:
            for b in range(len(self)):
                sel = np.sort(order[b * self.bs:(b + 1) * self.bs])[self.first:self.first + self.per]
                x = to_input(self.images[sel], self.heat[sel] if self.ds.heatmap else None)
                yield x, torch.from_numpy(self.labels[sel].astype(np.int64))
        else:
            mine = order[: len(self) * self.bs].reshape(len(self), self.bs)[:, self.first:self.first + self.per]
            sub = torch.utils.data.Subset(self.ds, mine.ravel().tolist())
            yield from loader_batches(sub, self.per, self.workers)
