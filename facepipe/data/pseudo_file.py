"""The one reader of pseudo-label files (what `facepipe pseudolabel` writes and `distill` reads).

OUT.h5 (self-contained, so distillation needs nothing else):
  /images (N,s,s,3) uint8, /heatmaps (N,s,s) uint8   copied from the source cache
  /probs  (N,C,s,s) uint8 (probability * 255, rounded) or float16 with --storage float16
  /confidence (N,s,s) uint8  max class probability * 255;  /ids (N,) strings;  /source_index (N,)
attrs: format "facepipe-pseudo", config, schema, size, heatmap, done (faces written so far), manifest
(written last: teacher arch, checkpoint path and sha256, its manifest sha256, counts, command).
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from facepipe.data.face_cache import decode_strings
from facepipe.util.errors import FacepipeError
from facepipe.util.schema import LabelSchema

FORMAT = "facepipe-pseudo"


def default_output(teacher_run) -> Path:
    """Where `pseudolabel --teacher RUN` writes when OUT is not given, and where `distill` looks."""
    return Path(teacher_run) / "pseudo" / "unlabeled.h5"


def read_pseudo_manifest(path) -> dict:
    """A finished pseudo-label file's manifest; one line naming the fix for a missing or unfinished one."""
    path = Path(path)
    if not path.exists():
        raise FacepipeError(f"pseudo-labels {path} not found; make them with "
                            f"`facepipe pseudolabel --teacher RUN UNLABELED.h5 {path}`.")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT or "manifest" not in f.attrs:
                raise FacepipeError(f"{path} is not a complete facepipe pseudo-label file.")
            return json.loads(f.attrs["manifest"])
    except OSError as e:
        raise FacepipeError(f"{path} is not a readable HDF5 file ({e}); remake it with "
                            "`facepipe pseudolabel`.") from None


def partial_config(path) -> dict | None:
    """The config a partial (or part) file was started with; None when it cannot tell (a broken file)."""
    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs["config"])
    except (OSError, KeyError, ValueError):
        return None


class PseudoFile:
    """Read-only view of a finished pseudo-label file: metadata at hand, arrays read by rows on demand."""

    def __init__(self, path):
        self.path = str(path)
        self.manifest = read_pseudo_manifest(path)
        self._f = h5py.File(self.path, "r")
        a = self._f.attrs
        self.schema = LabelSchema.from_dict(json.loads(a["schema"]))
        self.size, self.heatmap = int(a["size"]), bool(a["heatmap"])
        self.ids = decode_strings(self._f["ids"][:])

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, name: str, rows) -> np.ndarray:
        """Dataset `name` (images, heatmaps, probs, confidence) at `rows`, in their order."""
        rows = np.asarray(rows, np.int64)
        if rows.ndim == 0:
            return self._f[name][int(rows)]
        order = np.argsort(rows, kind="stable")  # h5py reads increasing indices only
        out = self._f[name][rows[order]] if len(rows) else self._f[name][:0]
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        return out[back]

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
