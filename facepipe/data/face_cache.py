"""The one reader of facepipe caches (HDF5): no stage reads a cache with h5py itself (data/cache.py and
data/resample.py, which write them, and learn/pseudolabel.py, which writes its own file, open them to write).

`CacheFile` is the file: ids, splits, schema, the alignment spec, and batches of rows. `FaceCache` is a
torch Dataset over one split of it. The HDF5 file is opened lazily in each process (h5py handles must
not cross a fork), so both can be handed to DataLoader workers. The layout is in facepipe.data.cache.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import torch
from scipy import ndimage

from facepipe.util.align_spec import AlignSpec
from facepipe.util.errors import FacepipeError
from facepipe.util.geometry import inside_photo
from facepipe.util.input_norm import MEAN, STD
from facepipe.util.interrupt import ignore_sigint, sigint_blocked
from facepipe.util.schema import LabelSchema



def to_input(images: np.ndarray, heatmaps: np.ndarray | None) -> torch.Tensor:
    """uint8 (N,H,W,3) [+ (N,H,W)] -> float (N,3|4,H,W): ImageNet-normalised RGB, heatmap in [0, 1]."""
    x = (images.astype(np.float32) - MEAN) / STD
    x = torch.from_numpy(x).permute(0, 3, 1, 2)
    if heatmaps is not None:
        h = torch.from_numpy(heatmaps.astype(np.float32) / 255.0)[:, None]
        x = torch.cat([x, h], 1)
    return x.contiguous()


def decode_strings(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def read_cache_manifest(path) -> dict:
    """A finished cache's manifest; one line naming the fix for a missing, foreign or unfinished file."""
    path = Path(path)
    if not path.exists():
        raise FacepipeError(f"cache {path} not found; make it with `facepipe cache ALIGNED {path}`.")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != "facepipe-cache":
                raise FacepipeError(f"{path} is not a facepipe cache.")
            m = f.attrs.get("manifest")
            if m is None:
                raise FacepipeError(f"{path} is incomplete; rerun `facepipe cache` to finish it.")
            return json.loads(m)
    except OSError as e:
        raise FacepipeError(f"{path} is not a readable HDF5 file ({e}); remake it with `facepipe cache`.") from None


def partial_config(path) -> dict | None:
    """The config an interrupted run's partial HDF5 file (a cache, a pseudo-label file or a rank's part)
    was started with; None when it cannot tell (a file broken by a kill)."""
    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs["config"])
    except Exception:  # h5py raises several types for a half-written file
        return None


class Hdf5View:
    """A read-only HDF5 file read by rows. Opened lazily in each process (h5py handles must not cross a
    fork), so a view can be handed to DataLoader workers."""

    def __init__(self, path):
        self.path, self._f = str(path), None

    def file(self) -> h5py.File:
        if self._f is None:
            self._f = h5py.File(self.path, "r")
        return self._f

    def read(self, name: str, rows) -> np.ndarray:
        """Dataset `name` at `rows` (one row number or several, in any order), in their order."""
        rows = np.asarray(rows, np.int64)
        if rows.ndim == 0:
            return self.file()[name][int(rows)]
        order = np.argsort(rows, kind="stable")  # h5py reads increasing indices only
        out = self.file()[name][rows[order]] if len(rows) else self.file()[name][:0]
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        return out[back]

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_f"] = None
        return d


class CacheFile(Hdf5View):
    """A finished cache: its metadata at hand, its arrays (images, heatmaps, labels, landmarks,
    matrices, ...) read by rows on demand."""

    def __init__(self, path):
        super().__init__(path)
        self.manifest = read_cache_manifest(path)
        with h5py.File(self.path, "r") as f:
            self.splits = np.array(decode_strings(f["split"][:]))
            self.ids = decode_strings(f["ids"][:])
            self.has_labels = "labels" in f
            self.has_photo_labels = "photo_labels" in f
            self.knows_photos = "matrices" in f and "photo_size" in f  # where each crop's photo ends
            self.size = int(f.attrs["size"])
            self.schema = LabelSchema.from_dict(json.loads(f.attrs["schema"])) if "schema" in f.attrs else None
        self.align = AlignSpec.from_dict(self.manifest.get("align"), self.size)

    def __len__(self) -> int:
        return len(self.ids)

    def split_names(self) -> set[str]:
        return set(self.splits.tolist())

    def rows(self, split: str | tuple[str, ...] | None = None) -> np.ndarray:
        """Row numbers of the faces in `split` (a name or several; None: all), refusing an empty one."""
        if split is None:
            return np.arange(len(self))
        want = (split,) if isinstance(split, str) else tuple(split)
        sel = np.isin(self.splits, want)
        if not sel.any():
            raise FacepipeError(f"{self.path} has no faces in split {'/'.join(want)} "
                                f"(it has: {', '.join(sorted(self.split_names()))}).")
        return np.flatnonzero(sel)

    def strings(self, name: str, row: int) -> str:
        return decode_strings([self.file()[name][int(row)]])[0] if name in self.file() else ""

    def inside_photo(self, rows) -> np.ndarray:
        """(n, s, s) bool: the crop pixels of faces `rows` that lie wholly inside the photo each was cut from
        (util.geometry.inside_photo); all True for a cache without its matrices and photo sizes.

        Why: a crop cut from a tight photo (utkface's 200 x 200 faces cover a third of it; FASSEG's photos
        end at the hair) is black fill beyond the photo's edge, and whatever a label or a teacher says of
        the fill (background) tells a network that the hair stops there (docs/results.md, "Pseudo-labels
        outside the photo")."""
        rows = np.atleast_1d(np.asarray(rows, np.int64))
        if not self.knows_photos:
            return np.ones((len(rows), self.size, self.size), bool)
        mats, sizes = self.read("matrices", rows), self.read("photo_size", rows)
        return np.stack([inside_photo(m, self.size, hw) for m, hw in zip(mats, sizes)])

    def photo_label(self, row: int) -> np.ndarray:
        """The original-resolution labels of the photo face `row` was cut from."""
        return self.file()["photo_labels"][self.strings("photo_ids", row)][()]


OUTSIDE_PHOTO = ("label", "ignore", "edge")


def check_outside_photo(mode: str) -> str:
    """`mode` if it is one of OUTSIDE_PHOTO (train's and distill's --outside-photo), else one line."""
    if mode not in OUTSIDE_PHOTO:
        raise FacepipeError(f"--outside-photo must be one of {', '.join(OUTSIDE_PHOTO)}")
    return mode


def fill_outside_photo(labels: np.ndarray, inside: np.ndarray, mode: str, background: int) -> np.ndarray:
    """(n, s, s) labels with the crop pixels outside the photo (~inside) set by `mode`: "label" as cached
    (align's --outside-label, background by default); "ignore" 255; "edge" background where the nearest
    pixel inside the photo is background, 255 elsewhere.

    Why "edge": FASSEG's photos end at the hair (hair is the nearest photo pixel for 19% of the training
    crops' fill, skin for 10%), so "label" says that hair stops at the photo's edge; "ignore" also drops
    "a plain wall goes on beyond its edge", 71% of the fill."""
    if mode == "label":
        return labels
    out = labels.copy()
    for y, keep in zip(out, inside):
        if keep.all():
            continue
        if mode == "ignore" or not keep.any():
            y[~keep] = 255
            continue
        iy, ix = ndimage.distance_transform_edt(~keep, return_distances=False, return_indices=True)
        near = y[iy, ix]
        y[~keep] = np.where(near[~keep] == background, background, 255)
    return out


class FaceCache(torch.utils.data.Dataset):
    """Faces of one split (or given rows) of a cache as (input, label) tensor pairs."""

    def __init__(self, path, split: str | tuple[str, ...] | None = None, heatmap: bool = True,
                 indices=None, need_labels: bool = True, outside: str = "label"):
        """outside: the labels of the crop pixels outside each face's photo (CacheFile.inside_photo), as
        fill_outside_photo gives them (`train` and `distill --outside-photo`)."""
        check_outside_photo(outside)
        self.file = path if isinstance(path, CacheFile) else CacheFile(path)
        if outside != "label" and not self.file.knows_photos:
            raise FacepipeError(f"{self.file.path} does not record where its crops' photos end (matrices, photo "
                                f"sizes); make it again with `facepipe cache` to use --outside-photo {outside}.")
        self.outside = outside
        self.path, self.manifest, self.heatmap = self.file.path, self.file.manifest, heatmap
        self.ids, self.has_labels, self.size, self.schema = (self.file.ids, self.file.has_labels, self.file.size,
                                                             self.file.schema)
        if need_labels and not self.has_labels:
            raise FacepipeError(f"{self.path} has no labels (a cache of unlabelled faces); this command needs a "
                                "labelled one (`facepipe import FORMAT DATASET OUT`, then landmarks, align, cache).")
        self.indices = np.asarray(self.file.rows(split) if indices is None else indices)

    def __len__(self):
        return len(self.indices)

    def batch(self, rows) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """uint8 images, heatmaps (None without the channel) and labels (None unlabelled) of cache `rows`."""
        return (self.file.read("images", rows), self.file.read("heatmaps", rows) if self.heatmap else None,
                self._labels(rows) if self.has_labels else None)

    def _labels(self, rows) -> np.ndarray:
        y = self.file.read("labels", rows)
        if self.outside == "label":
            return y
        inside = self.file.inside_photo(rows)
        return fill_outside_photo(y.reshape(inside.shape), inside, self.outside,
                                  self.schema.index("background")).reshape(y.shape)

    def raw(self, i: int) -> dict:
        """uint8 arrays of face i (of this subset): image, heatmap, label (or None)."""
        j = int(self.indices[i])
        f = self.file
        return {"image": f.read("images", j), "heatmap": f.read("heatmaps", j),
                "label": self._labels(j) if self.has_labels else None, "index": j}

    def __getitem__(self, i):
        r = self.raw(i)
        x = to_input(r["image"][None], r["heatmap"][None] if self.heatmap else None)[0]
        y = torch.from_numpy(r["label"].astype(np.int64)) if r["label"] is not None else torch.zeros(0)
        return x, y


def loader_batches(dataset, batch_size: int, workers: int):
    """Batches of a DataLoader over `dataset` whose workers leave Ctrl-C to this process and are shut down
    as soon as the iteration ends, by exhaustion, an exception or close() of this generator.

    Not left to the iterator's __del__: an interrupted epoch's iterator can live on in a traceback until
    interpreter shutdown, where torch's __del__ does nothing and workers are killed instead of joined."""
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
