"""torch Dataset over a facepipe cache (HDF5), safe in DataLoader worker processes.

The HDF5 file is opened lazily in each process (h5py handles must not cross a fork), so the same
FaceCache object can be handed to a DataLoader with num_workers > 0.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import torch

from facepipe.cache import read_cache_manifest
from facepipe.errors import FacepipeError
from facepipe.schema import LabelSchema

MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def to_input(images: np.ndarray, heatmaps: np.ndarray | None) -> torch.Tensor:
    """uint8 (N,H,W,3) [+ (N,H,W)] -> float (N,3|4,H,W): ImageNet-normalised RGB, heatmap in [0, 1]."""
    x = (images.astype(np.float32) - MEAN) / STD
    x = torch.from_numpy(x).permute(0, 3, 1, 2)
    if heatmaps is not None:
        h = torch.from_numpy(heatmaps.astype(np.float32) / 255.0)[:, None]
        x = torch.cat([x, h], 1)
    return x.contiguous()


class FaceCache(torch.utils.data.Dataset):
    def __init__(self, path, split: str | tuple[str, ...] | None = None, heatmap: bool = True,
                 indices=None, need_labels: bool = True):
        self.path = str(path)
        self.manifest = read_cache_manifest(path)
        self.heatmap = heatmap
        with h5py.File(self.path, "r") as f:
            splits = np.array([s.decode() if isinstance(s, bytes) else s for s in f["split"][:]])
            self.ids = [s.decode() if isinstance(s, bytes) else s for s in f["ids"][:]]
            self.has_labels = "labels" in f
            self.size = int(f.attrs["size"])
            self.schema = LabelSchema.from_dict(json.loads(f.attrs["schema"])) if "schema" in f.attrs else None
        if need_labels and not self.has_labels:
            raise FacepipeError(f"{path} has no labels; training needs a labelled cache.")
        if indices is None:
            sel = np.ones(len(splits), bool)
            if split is not None:
                want = (split,) if isinstance(split, str) else tuple(split)
                sel = np.isin(splits, want)
                if not sel.any():
                    raise FacepipeError(f"{path} has no faces in split {'/'.join(want)} "
                                        f"(it has: {', '.join(sorted(set(splits)))}).")
            indices = np.flatnonzero(sel)
        self.indices = np.asarray(indices)
        self._f = None

    def __len__(self):
        return len(self.indices)

    def _file(self):
        if self._f is None:
            self._f = h5py.File(self.path, "r")
        return self._f

    def raw(self, i: int) -> dict:
        """uint8 arrays of face i (of this subset): image, heatmap, label (or None)."""
        f = self._file()
        j = int(self.indices[i])
        return {"image": f["images"][j], "heatmap": f["heatmaps"][j],
                "label": f["labels"][j] if self.has_labels else None, "index": j}

    def __getitem__(self, i):
        r = self.raw(i)
        x = to_input(r["image"][None], r["heatmap"][None] if self.heatmap else None)[0]
        y = torch.from_numpy(r["label"].astype(np.int64)) if r["label"] is not None else torch.zeros(0)
        return x, y

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_f"] = None
        return d


def loader_batches(dataset, batch_size: int, workers: int):
    """Batches of a DataLoader over `dataset` whose workers leave Ctrl-C to this process and are shut down
    as soon as the iteration ends, by exhaustion, an exception or close() of this generator.

    Not left to the iterator's __del__: an interrupted epoch's iterator can live on in a traceback until
    interpreter shutdown, where torch's __del__ does nothing and workers are killed instead of joined."""
    from facepipe.interrupt import ignore_sigint, sigint_blocked

    dl = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                     persistent_workers=False, worker_init_fn=ignore_sigint if workers else None)
    it = None
    try:
        # The workers are forked here: none may take a Ctrl-C before ignore_sigint runs. One pressed
        # meanwhile is delivered as the block ends, once `it` exists to be shut down.
        with sigint_blocked():
            it = iter(dl)
        yield from it
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)  # private, but the one way to join workers now
        if shutdown is not None:
            shutdown()
