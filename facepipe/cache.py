"""Stage `cache`: one HDF5 file per aligned set, read by training through facepipe.dataset.FaceCache.

Layout (N faces, s = crop size, L = most landmarks of any face; all datasets chunked one face per
chunk and gzip-compressed so DataLoader workers read random faces cheaply):
  /images       (N, s, s, 3) uint8   aligned RGB crops
  /heatmaps     (N, s, s)    uint8   landmark heatmap channel (facepipe.heatmap), zeros if fitted
  /labels       (N, s, s)    uint8   label ids, 255 = ignore          (only if the set is labelled)
  /landmarks    (N, L, 2)    float32 landmarks in crop pixels, NaN-padded; /n_landmarks (N,) int16
  /matrices     (N, 3, 3)    float64 photo -> crop similarity (fitted faces: letterbox)
  /ids, /photo_ids, /split   (N,)    utf-8 strings; /photos (N,) the photo's path when cached
  /fitted       (N,)         bool    no face found: the whole photo was fitted into the crop
  /photo_size   (N, 2)       int32   original photo (height, width)
  /photo_labels/<photo_id>   (h, w) uint8  original-resolution labels, to score in photo coordinates
attrs: format ("facepipe-cache"), format_version, size, schema (JSON), manifest (JSON, written last).

The file is written as OUT.h5.partial and renamed when complete, so a file named OUT.h5 is always whole;
an interrupted run resumes from the partial file (faces done so far are kept).
"""
from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from facepipe import __version__
from facepipe.align import read_faces
from facepipe.errors import FacepipeError
from facepipe.heatmap import draw_heatmap
from facepipe.images import load_ids, load_rgb
from facepipe.manifest import config_dict, file_lock, read_manifest
from facepipe.progress import SILENT, Reporter
from facepipe.schema import load_schema

FORMAT_VERSION = 1


@dataclass(frozen=True)
class CacheConfig:
    src: str
    out: str = field(metadata={"identity": False})
    photo_labels: bool = True  # keep original-resolution labels for scoring in photo coordinates
    compression: int = 4
    force: bool = field(default=False, metadata={"identity": False})


def _decode(face: dict, src: Path, size: int) -> tuple:
    img = load_rgb(src / face["image"])
    if img.shape[:2] != (size, size):
        raise FacepipeError(f"{face['id']}: crop is {img.shape[1]}x{img.shape[0]}, expected {size}")
    lab = load_ids(src / face["label"]) if face.get("label") else None
    lm = np.asarray(face["landmarks"], np.float32) if face.get("landmarks") else None
    return img, lab, lm, draw_heatmap(lm, size)


def run_cache(cfg: CacheConfig, reporter: Reporter = SILENT) -> dict:
    src = Path(cfg.src)
    man = read_manifest(src, ("align",))
    size = int(man["config"]["size"])
    faces = read_faces(src)
    schema_path = src / "schema.json"
    schema = load_schema(schema_path) if schema_path.exists() else None
    labelled = all("label" in f for f in faces)
    out = Path(cfg.out)
    if out.suffix not in (".h5", ".hdf5"):
        raise FacepipeError(f"cache output {out} should end in .h5")
    config = config_dict(cfg)
    config["input_manifest_sha256"] = man["_sha256"]
    with file_lock(out):
        if out.exists():
            old = read_cache_manifest(out)
            if old.get("config") == config and not cfg.force:
                return old
            if not cfg.force:
                raise FacepipeError(f"{out} exists with another config; use --force to replace it.")
        return _write(cfg, config, src, man, faces, size, schema, labelled, out, reporter)


def _create(path: Path, n: int, size: int, lmax: int, labelled: bool, comp: int, config: dict):
    f = h5py.File(path, "w")
    kw = {"compression": "gzip", "compression_opts": comp}
    f.create_dataset("images", (n, size, size, 3), np.uint8, chunks=(1, size, size, 3), **kw)
    f.create_dataset("heatmaps", (n, size, size), np.uint8, chunks=(1, size, size), **kw)
    if labelled:
        f.create_dataset("labels", (n, size, size), np.uint8, chunks=(1, size, size), **kw)
    f.create_dataset("landmarks", (n, lmax, 2), np.float32, fillvalue=np.nan)
    f.attrs["config"] = json.dumps(config)
    f.attrs["done"] = 0
    return f


def _write(cfg, config, src, man, faces, size, schema, labelled, out, reporter) -> dict:
    t0 = time.time()
    part = Path(str(out) + ".partial")
    n = len(faces)
    lmax = max([len(f["landmarks"]) for f in faces if f.get("landmarks")] or [0])
    f = None
    if part.exists() and not cfg.force:
        try:
            f = h5py.File(part, "a")
            if f.attrs.get("config") != json.dumps(config) or f["images"].shape[0] != n:
                f.close()
                f = None
        except Exception:  # a partial file broken by a kill (h5py raises several types): start over
            f = None
    if f is None:
        f = _create(part, n, size, lmax, labelled, cfg.compression, config)
    try:
        start = int(f.attrs["done"])
        with reporter.task("cache", n) as advance:
            advance(start)
            # Handles held for the loop: a temporary handle closed per face flushes metadata each time,
            # and on a full disk those failures only surface as ignored errors in h5py's deallocator.
            d_img, d_hm, d_lm = f["images"], f["heatmaps"], f["landmarks"]
            d_lab = f["labels"] if labelled else None
            for i in range(start, n):
                img, lab, lm, hm = _decode(faces[i], src, size)
                d_img[i] = img
                d_hm[i] = hm
                if labelled:
                    d_lab[i] = lab
                if lm is not None:
                    d_lm[i, : len(lm)] = lm
                if (i + 1) % 64 == 0 or i + 1 == n:
                    f.attrs["done"] = i + 1
                    f.flush()
                advance()
        str_dt = h5py.string_dtype("utf-8")
        for name, key in (("ids", "id"), ("photo_ids", "photo_id"), ("split", "split"), ("photos", "photo")):
            if name in f:
                del f[name]
            f.create_dataset(name, data=np.array([fc.get(key) or "" for fc in faces], dtype=object), dtype=str_dt)
        for name, data in (("n_landmarks", np.array([len(fc["landmarks"] or []) for fc in faces], np.int16)),
                           ("matrices", np.array([fc["matrix"] for fc in faces], np.float64)),
                           ("fitted", np.array([fc["fitted"] for fc in faces], bool)),
                           ("photo_size", np.array([[fc["height"], fc["width"]] for fc in faces], np.int32))):
            if name in f:
                del f[name]
            f.create_dataset(name, data=data)
        n_photo_labels = 0
        if cfg.photo_labels and labelled:
            g = f.require_group("photo_labels")
            for fc in faces:
                pid = fc["photo_id"]
                if pid in g or not fc.get("photo_label"):
                    continue
                g.create_dataset(pid, data=load_ids(fc["photo_label"]), compression="gzip",
                                 compression_opts=cfg.compression)
                n_photo_labels += 1
        if schema is not None:
            f.attrs["schema"] = schema.to_json()
        f.attrs["format"] = "facepipe-cache"
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["size"] = size
        splits = {}
        for fc in faces:
            splits[fc["split"]] = splits.get(fc["split"], 0) + 1
        manifest = {
            "stage": "cache", "schema_version": 1, "facepipe_version": __version__, "config": config,
            "inputs": {"src": {"path": str(src.resolve()), "manifest_sha256": man["_sha256"]}},
            "counts": {"faces": n, "labelled": labelled, "fitted": int(sum(fc["fitted"] for fc in faces)),
                       "photo_labels": n_photo_labels, **{f"split_{k}": v for k, v in splits.items()}},
            "size": size, "seconds": round(time.time() - t0, 3),
            # How crops were made: `parse` aligns new photos the same way for a model trained on this.
            "align": {k: man["config"].get(k) for k in ("size", "iod", "letterbox", "landmarks")},
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        f.attrs["manifest"] = json.dumps(manifest)  # last
        f.close()
        f = None
        os.replace(part, out)
        return manifest
    except (OSError, RuntimeError) as e:
        if f is None:
            raise
        _truncate(part)  # first: closing the handles below needs the space back
        d_img = d_hm = d_lm = d_lab = None  # noqa: F841
        abandon_h5(f, part)
        f = None
        raise FacepipeError(write_failure(out, part, e)) from None
    finally:
        if f is not None:
            f.close()


def abandon_h5(f, part: Path) -> None:
    """Drop a partial HDF5 file after a failed write (disk full). HDF5 flushes its metadata on close;
    with the disk still full that fails again and h5py can crash the interpreter at exit, so the file
    is truncated first (freeing its space), then closed and removed."""
    _truncate(part)
    try:
        f.close()
    except Exception:
        pass
    try:
        os.unlink(part)
    except OSError:
        pass


def _truncate(path: Path) -> None:
    try:
        os.truncate(path, 0)
    except OSError:
        pass


def write_failure(out: Path, part: Path, e: Exception) -> str:
    """One line for a failed HDF5 write; HDF5 puts the errno inside its message text."""
    text = str(e)
    full = getattr(e, "errno", None) == errno.ENOSPC or "errno = 28" in text or "No space left" in text
    reason = "no space left on device" if full else (text.strip().splitlines() or [type(e).__name__])[0][:160]
    return (f"writing {out} failed: {reason}; the unfinished {part.name} was removed and any earlier "
            f"{out.name} is untouched. Free some space and rerun.")


def read_cache_manifest(path) -> dict:
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
