"""Stage `cache`: one HDF5 file per aligned set, read by training through facepipe.data.face_cache.FaceCache.

Layout (N faces, s = crop size, L = most landmarks of any face; all datasets chunked one face per
chunk and gzip-compressed so DataLoader workers read random faces cheaply):
  /images       (N, s, s, 3) uint8   aligned RGB crops
  /heatmaps     (N, s, s)    uint8   landmark heatmap channel (facepipe.util.heatmap), zeros if fitted
  /labels       (N, s, s)    uint8   label ids, 255 = ignore          (only if the set is labelled)
  /landmarks    (N, L, 2)    float32 landmarks in crop pixels, NaN-padded; /n_landmarks (N,) int16
  /matrices     (N, 3, 3)    float64 photo -> crop similarity (fitted faces: letterbox)
  /ids, /photo_ids, /split   (N,)    utf-8 strings; /photos (N,) the photo's path when cached
  /fitted       (N,)         bool    no face found: the whole photo was fitted into the crop
  /photo_size   (N, 2)       int32   original photo (height, width)
  /photo_labels/<photo_id>   (h, w) uint8  original-resolution labels, to score in photo coordinates
attrs: format ("facepipe-cache"), format_version, size, schema (JSON), manifest (JSON, written last).
The manifest's `align` is the AlignSpec the crops were made with (size, iod, letterbox) and `landmarks`,
where their points came from; training copies it into every checkpoint, and `parse` aligns by it.

The output is claimed through util.manifest.FileOutput: written as OUT.h5.partial and renamed when
complete, so a file named OUT.h5 is always whole; an interrupted run resumes from the partial file
(faces done so far are kept).
"""
from __future__ import annotations

import errno
import json
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from facepipe import __version__
from facepipe.data.aligned_set import read_faces
from facepipe.data.face_cache import partial_config, read_cache_manifest
from facepipe.util.align_spec import AlignSpec
from facepipe.util.errors import FacepipeError
from facepipe.util.heatmap import draw_heatmap
from facepipe.util.images import load_ids, load_rgb
from facepipe.util.manifest import FileOutput, command_line, config_dict, read_manifest
from facepipe.util.progress import SILENT, Reporter
from facepipe.util.schema import LabelSchema, load_schema

FORMAT_VERSION = 1
FLUSH_EVERY = 64  # faces between flushes of `done`: what a killed run keeps


@dataclass(frozen=True)
class CacheConfig:
    src: str
    out: str = field(metadata={"identity": False})
    photo_labels: bool = True  # keep original-resolution labels for scoring in photo coordinates
    compression: int = 4
    force: bool = field(default=False, metadata={"identity": False})


@dataclass(frozen=True)
class _Job:
    """What one cache run writes: the aligned set's faces and what its manifest says."""
    cfg: CacheConfig
    config: dict
    src: Path
    man: dict  # the align output's manifest
    faces: list
    size: int
    schema: LabelSchema | None
    labelled: bool


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
    faces = read_faces(src)
    schema_path = src / "schema.json"
    schema = load_schema(schema_path) if schema_path.exists() else None
    out = Path(cfg.out)
    if out.suffix not in (".h5", ".hdf5"):
        raise FacepipeError(f"cache output {out} should end in .h5")
    config = config_dict(cfg)
    config["input_manifest_sha256"] = man["_sha256"]
    job = _Job(cfg, config, src, man, faces, int(man["config"]["size"]), schema, all("label" in f for f in faces))
    with FileOutput(out, job.config, cfg.force, _existing_output, partial_config, what="cache") as fo:
        if fo.state == "done":
            return fo.manifest
        return _write(job, fo, reporter)


def _existing_output(path: Path) -> dict:
    """The manifest of the cache already at OUT. A file there that is no finished cache (damaged, cut short, or
    another file) is what this very command would make: the way out is --force or another name, not the
    "remake it with `facepipe cache`" said of a cache given as input."""
    try:
        return read_cache_manifest(path)
    except FacepipeError as e:
        why = re.sub(r"; (remake|rerun) .*$", "", str(e).removeprefix(f"{path} ")).rstrip(".")
        raise FacepipeError(f"cache output {path} exists but {why}; use --force to replace it, or write the "
                            "cache elsewhere.") from None


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


def _open(job: _Job, fo: FileOutput):
    """The partial file to resume (same config, same faces) or a new one."""
    if fo.state == "resume":
        try:
            f = h5py.File(fo.part, "a")
            if f["images"].shape[0] == len(job.faces):
                return f
            f.close()
        except Exception:  # a partial file broken by a kill (h5py raises several types): start over
            pass
    lmax = max([len(f["landmarks"]) for f in job.faces if f.get("landmarks")] or [0])
    return _create(fo.part, len(job.faces), job.size, lmax, job.labelled, job.cfg.compression, job.config)


def _write(job: _Job, fo: FileOutput, reporter) -> dict:
    t0 = time.time()
    f = _open(job, fo)
    try:
        _write_faces(f, job, reporter)
        _write_tables(f, job.faces)
        n_photo_labels = _write_photo_labels(f, job) if job.cfg.photo_labels and job.labelled else 0
        if job.schema is not None:
            f.attrs["schema"] = job.schema.to_json()
        f.attrs["format"] = "facepipe-cache"
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["size"] = job.size
        manifest = _manifest(job, n_photo_labels, t0)
        f.attrs["manifest"] = json.dumps(manifest)  # last
        f.close()
        f = None
        fo.finish()
        return manifest
    except (OSError, RuntimeError) as e:
        if f is None:
            raise
        _truncate(fo.part)  # first: closing the handles below needs the space back
        traceback.clear_frames(e.__traceback__)  # drops the loop's dataset handles before the file goes
        abandon_h5(f, fo.part)
        f = None
        raise FacepipeError(write_failure(fo.out, fo.part, e)) from None
    finally:
        if f is not None:
            f.close()


def _write_faces(f, job: _Job, reporter) -> None:
    """Crops, heatmaps, labels and landmarks, face by face from where the partial file stopped."""
    n, start = len(job.faces), int(f.attrs["done"])
    with reporter.task("cache", n) as advance:
        advance(start)
        # Handles held for the loop: a temporary handle closed per face flushes metadata each time,
        # and on a full disk those failures only surface as ignored errors in h5py's deallocator.
        d_img, d_hm, d_lm = f["images"], f["heatmaps"], f["landmarks"]
        d_lab = f["labels"] if job.labelled else None
        for i in range(start, n):
            img, lab, lm, hm = _decode(job.faces[i], job.src, job.size)
            d_img[i] = img
            d_hm[i] = hm
            if job.labelled:
                d_lab[i] = lab
            if lm is not None:
                d_lm[i, : len(lm)] = lm
            if (i + 1) % FLUSH_EVERY == 0 or i + 1 == n:
                f.attrs["done"] = i + 1
                f.flush()
            advance()


def _write_tables(f, faces: list) -> None:
    """Per-face strings and small arrays, rewritten whole (a resumed run may find them half made)."""
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


def _write_photo_labels(f, job: _Job) -> int:
    """Each photo's original-resolution labels once; returns how many were added."""
    g = f.require_group("photo_labels")
    added = 0
    for fc in job.faces:
        pid = fc["photo_id"]
        if pid in g or not fc.get("photo_label"):
            continue
        g.create_dataset(pid, data=load_ids(fc["photo_label"]), compression="gzip",
                         compression_opts=job.cfg.compression)
        added += 1
    return added


def _align_entry(align_config: dict, size: int) -> dict:
    """The cache manifest's `align`: the AlignSpec the crops were made with, plus where their landmarks
    came from (`landmarks`: a folder, "dataset" or None). `parse` aligns new photos the same way."""
    spec = AlignSpec.from_dict(align_config, size)
    return {**spec.to_dict(), "landmarks": align_config.get("landmarks")}


def _manifest(job: _Job, n_photo_labels: int, t0: float) -> dict:
    faces, splits = job.faces, {}
    for fc in faces:
        splits[fc["split"]] = splits.get(fc["split"], 0) + 1
    return {
        "stage": "cache", "schema_version": 1, "facepipe_version": __version__, "config": job.config,
        "inputs": {"src": {"path": str(job.src.resolve()), "manifest_sha256": job.man["_sha256"]}},
        "counts": {"faces": len(faces), "labelled": job.labelled, "fitted": int(sum(fc["fitted"] for fc in faces)),
                   "photo_labels": n_photo_labels, **{f"split_{k}": v for k, v in splits.items()}},
        "size": job.size, "seconds": round(time.time() - t0, 3),
        "align": _align_entry(job.man["config"], job.size),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command_line(),
    }


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
