"""The one reader of pseudo-label files (what `facepipe pseudolabel` writes and `distill` reads).

OUT.h5 (self-contained, so distillation needs nothing else):
  /images (N,s,s,3) uint8, /heatmaps (N,s,s) uint8   copied from the source cache
  /probs  (N,C,s,s) uint8 (probability * 255, rounded) or float16 with --storage float16; all zero on the
          crop pixels outside the photo a face was cut from (pseudolabel --outside-photo ignore, the default)
  /confidence (N,s,s) uint8  max class probability * 255;  /ids (N,) strings;  /source_index (N,)
attrs: format "facepipe-pseudo", config, schema, size, heatmap, done (faces written so far), manifest
(written last: teacher arch, checkpoint path and sha256, its manifest sha256, counts, command).
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py

from facepipe.data.face_cache import Hdf5View, decode_strings
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


class PseudoFile(Hdf5View):
    """A finished pseudo-label file: metadata at hand, arrays (images, heatmaps, probs, confidence) read
    by rows on demand."""

    def __init__(self, path):
        super().__init__(path)
        self.manifest = read_pseudo_manifest(path)
        a = self.file().attrs
        self.schema = LabelSchema.from_dict(json.loads(a["schema"]))
        self.size, self.heatmap = int(a["size"]), bool(a["heatmap"])
        self.ids = decode_strings(self.file()["ids"][:])

    def __len__(self) -> int:
        return len(self.ids)
