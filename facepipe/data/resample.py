"""A cache at another input size: the same aligned crops resampled to s x s.

The r_norm sweep trains at several sizes from one cache. Resampling the 256 px crops is the same as
aligning at s directly (both are one similarity warp of the photo) up to one extra interpolation;
images and heatmaps are resized with antialiasing, labels by nearest neighbour. Matrices are
composed with the scaling so photo-coordinate scoring still maps each crop onto its photo.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from facepipe.data.face_cache import read_cache_manifest
from facepipe.util.errors import FacepipeError
from facepipe.util.manifest import FileOutput, command_line

RESIZED = ("images", "heatmaps", "labels", "landmarks", "matrices")


def scale_matrix(k: float) -> np.ndarray:
    """Crop pixel coords at size S -> size k*S, pixel centres kept (x' = (x + 0.5) k - 0.5)."""
    return np.array([[k, 0, 0.5 * k - 0.5], [0, k, 0.5 * k - 0.5], [0, 0, 1]], np.float64)


def _resize(arr: np.ndarray, size: int, mode: str) -> np.ndarray:
    """(N,H,W[,C]) uint8 -> (N,size,size[,C]) uint8."""
    t = torch.from_numpy(arr)
    chan = t.ndim == 4
    t = t.permute(0, 3, 1, 2) if chan else t[:, None]
    if mode == "nearest":
        # nearest-exact samples pixel centres the way scale_matrix maps them
        out = F.interpolate(t.float(), size=(size, size), mode="nearest-exact")
    else:
        out = F.interpolate(t.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out = out.round().clamp(0, 255)
    out = out.to(torch.uint8)
    out = out.permute(0, 2, 3, 1) if chan else out[:, 0]
    return out.numpy()


def resample_cache(src, dst, size: int, chunk: int = 64) -> dict:
    """Write `dst`, a copy of cache `src` at `size`; an existing dst made from the same src is kept, one
    made from another (or unreadable) is made again."""
    src, dst = Path(src), Path(dst)
    man = read_cache_manifest(src)
    key = {"resampled_from": str(src.resolve()), "src_finished": man.get("finished"), "size": size}
    with FileOutput(dst, key, False, _made_from, lambda part: None, what="resampled cache",
                    replace_other=True) as claim:
        if claim.state == "done":
            return read_cache_manifest(dst)
        t0 = time.time()
        with h5py.File(src, "r") as fi, h5py.File(claim.part, "w") as fo:
            _copy_resized(fi, fo, size / int(man.get("size") or man["align"]["size"]), size, chunk)
            new = dict(man, size=size, resample=key, seconds=round(time.time() - t0, 3),
                       align=dict(man.get("align") or {}, size=size),
                       finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), command=command_line())
            fo.attrs["manifest"] = json.dumps(new)  # last
        claim.finish()
        return new


def _made_from(path: Path) -> dict:
    """{"config": the resample key} of an existing resampled cache; {} when it cannot be read."""
    try:
        return {"config": read_cache_manifest(path).get("resample")}
    except FacepipeError:
        return {}


def _copy_resized(fi, fo, k: float, size: int, chunk: int) -> None:
    """Every dataset and attribute of `fi` into `fo`, the crop-sized ones resampled by k to `size`."""
    for name in fi:
        if name not in RESIZED:
            fi.copy(fi[name], fo, name)
    n = fi["images"].shape[0]
    kw = {"compression": "gzip", "compression_opts": 1}
    for name, mode in (("images", "bilinear"), ("heatmaps", "bilinear"), ("labels", "nearest")):
        if name not in fi:
            continue
        shape = (n, size, size) + fi[name].shape[3:]
        d = fo.create_dataset(name, shape, np.uint8, chunks=(1,) + shape[1:], **kw)
        for a in range(0, n, chunk):
            d[a:a + chunk] = _resize(fi[name][a:a + chunk], size, mode)
    s = scale_matrix(k)
    fo.create_dataset("matrices", data=np.einsum("ij,njk->nik", s, fi["matrices"][:]))
    lm = fi["landmarks"][:]
    fo.create_dataset("landmarks", data=((lm + 0.5) * k - 0.5).astype(np.float32))
    for a, v in fi.attrs.items():
        if a != "manifest":
            fo.attrs[a] = v
    fo.attrs["size"] = size


def check_size(size: int) -> None:
    if size < 32 or size % 8:
        raise FacepipeError(f"size {size}: use a multiple of 8, at least 32 (the models downsample by 8).")
