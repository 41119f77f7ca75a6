"""Stage `pseudolabel`: a teacher's soft predictions on unlabelled aligned faces (method.md section 5).

Writes OUT.h5, a self-contained pseudo-label file (layout and reader: facepipe.data.pseudo_file), through
util.manifest.FileOutput: a lock beside OUT, the work in OUT.h5.partial in batches, a rerun continuing
from its `done` count, the manifest written last, then the rename to OUT.

Under torchrun (or with `shard=(rank, world)`) each rank labels a contiguous run of whole batches into
OUT.h5.part<rank>of<world> (resumable the same way); once every part is complete, rank 0 (or, without
torchrun, the shard that completes the set) copies their compressed chunks in order into OUT.h5 and
deletes the parts. Batches are the ones a single process would form, so the merged file holds the same
faces in the same order with the same probability bytes as a one-process run.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from facepipe import __version__
from facepipe.data.face_cache import CacheFile, partial_config, read_cache_manifest, to_input
from facepipe.data.pseudo_file import FORMAT, PseudoFile, read_pseudo_manifest
from facepipe.infer.checkpoint import load_checkpoint, run_checkpoint
from facepipe.infer.model import LoadedModel
from facepipe.util.device import pick_device, set_threads
from facepipe.util.distributed import default_threads, setup, split_range
from facepipe.util.errors import FacepipeError, OtherConfig
from facepipe.util.manifest import FileOutput, command_line, config_dict, file_lock, file_sha256
from facepipe.util.progress import SILENT, Reporter
from facepipe.util.sheets import grid, overlay

CHUNKED = ("images", "heatmaps", "probs", "confidence")


@dataclass(frozen=True)
class PseudoConfig:
    teacher: str
    src: str
    out: str = field(metadata={"identity": False})
    tta_flip: bool = True
    storage: str = "uint8"  # uint8 | float16
    # Crop pixels outside the source photo (the black fill of a crop cut from a tight photo): "ignore"
    # stores all-zero probabilities there, which distill leaves out of its loss and its augmentation
    # covers with a backdrop; "teacher" keeps what the teacher said of the black fill (background).
    outside_photo: str = "ignore"
    batch_size: int = field(default=16, metadata={"identity": False})
    device: str = field(default="auto", metadata={"identity": False})
    threads: int = field(default=0, metadata={"identity": False})
    force: bool = field(default=False, metadata={"identity": False})
    # (rank, world) of this process when not launched by torchrun (torchrun's own ranks take precedence).
    shard: tuple = field(default=(0, 1), metadata={"identity": False})


@dataclass(frozen=True)
class _Rank:  # what split_range needs, for shards run without torchrun
    rank: int
    world: int


@dataclass(frozen=True)
class _Ctx:
    cfg: PseudoConfig
    config: dict
    ck: dict
    ck_path: Path
    teacher_id: dict
    device: torch.device
    t0: float


def run_pseudolabel(cfg: PseudoConfig, reporter: Reporter = SILENT) -> dict:
    if cfg.storage not in ("uint8", "float16"):
        raise FacepipeError("--storage must be uint8 or float16")
    if cfg.outside_photo not in ("ignore", "teacher"):
        raise FacepipeError("--outside-photo must be ignore or teacher")
    ck_path = run_checkpoint(cfg.teacher, "best")
    ck = load_checkpoint(ck_path)
    src_man = read_cache_manifest(cfg.src)
    teacher_id = {"run": str(Path(cfg.teacher).resolve()), "checkpoint": str(ck_path.resolve()),
                  "checkpoint_sha256": file_sha256(ck_path), "arch": ck["arch"]}
    tm = Path(cfg.teacher) / "manifest.json"
    if tm.exists():
        teacher_id["manifest_sha256"] = file_sha256(tm)
    config = config_dict(cfg)
    config["teacher_id"] = teacher_id
    config["src_finished"] = src_man.get("finished")
    out = Path(cfg.out)
    device = pick_device(cfg.device)
    d = setup(device)
    rank, world = (d.rank, d.world) if d else tuple(cfg.shard)
    if not 0 <= rank < world:
        raise FacepipeError(f"shard {rank}/{world} is not a rank of {world}.")
    if out.exists() and not cfg.force:
        old = read_pseudo_manifest(out)
        if old["config"] == config:
            return old
        raise OtherConfig(f"{out} exists with another teacher or config; use --force to replace it.")
    set_threads(cfg.threads or default_threads(d))
    ctx = _Ctx(cfg, config, ck, ck_path, teacher_id, d.device if d else device, time.time())
    if world == 1:
        with _claim(ctx) as fo:
            if fo.state == "done":
                return fo.manifest
            _label(ctx, fo.part, 0, len(CacheFile(cfg.src)), reporter)
            return _finish(ctx, fo, [fo.part])
    return _run_part(ctx, d, rank, world, reporter)


def _claim(ctx: _Ctx) -> FileOutput:
    return FileOutput(ctx.cfg.out, ctx.config, ctx.cfg.force, read_pseudo_manifest, partial_config,
                      what="pseudo-labels", resume_under_force=True)


def _run_part(ctx: _Ctx, d, rank: int, world: int, reporter: Reporter) -> dict:
    """This rank's (or shard's) part, then the merge by rank 0 or by the shard that completes the set."""
    cfg, out = ctx.cfg, Path(ctx.cfg.out)
    parts = [part_path(out, r, world) for r in range(world)]
    n = len(CacheFile(cfg.src))
    with file_lock(parts[rank]):
        _label(ctx, parts[rank], *split_range(n, _Rank(rank, world), cfg.batch_size), reporter)
    if d is not None:
        d.barrier()  # every part complete (a rank that died took the others down with it)
        manifest = None
        if d.is_main:
            with _claim(ctx) as fo:
                manifest = fo.manifest if fo.state == "done" else _finish(ctx, fo, parts)
        return d.share(manifest)
    if not all(_complete(p, ctx.config) for p in parts):
        return {"stage": "pseudolabel", "part": str(parts[rank]), "shard": [rank, world], "merged": False}
    with _claim(ctx) as fo:
        if fo.state == "done" or (out.exists() and not all(p.exists() for p in parts)):
            return read_pseudo_manifest(out)  # another shard merged first
        return _finish(ctx, fo, parts)


def part_path(out, rank: int, world: int) -> Path:
    return Path(f"{out}.part{rank}of{world}")


def _complete(part: Path, config: dict) -> bool:
    try:
        with h5py.File(part, "r") as f:
            return f.attrs.get("config") == json.dumps(config) and int(f.attrs["done"]) == f["images"].shape[0]
    except (OSError, KeyError):
        return False


def _open_part(part: Path, config: dict):
    """The part file to continue (same config) or None: another config, or broken by an untimely kill."""
    if not part.exists():
        return None
    try:
        f = h5py.File(part, "a")
    except OSError:
        return None
    if f.attrs.get("config") != json.dumps(config):
        f.close()
        return None
    return f


def _create_part(part: Path, ctx: _Ctx, src: CacheFile, lo: int, hi: int, classes: int):
    n, s = hi - lo, src.size
    f = h5py.File(part, "w")
    kw = {"compression": "gzip", "compression_opts": 4}
    f.create_dataset("images", (n, s, s, 3), np.uint8, chunks=(1, s, s, 3), **kw)
    f.create_dataset("heatmaps", (n, s, s), np.uint8, chunks=(1, s, s), **kw)
    f.create_dataset("probs", (n, classes, s, s), np.uint8 if ctx.cfg.storage == "uint8" else np.float16,
                     chunks=(1, classes, s, s), **kw)
    f.create_dataset("confidence", (n, s, s), np.uint8, chunks=(1, s, s), **kw)
    f.create_dataset("ids", data=np.array(src.ids[lo:hi], dtype=object), dtype=h5py.string_dtype("utf-8"))
    f.create_dataset("source_index", data=np.arange(lo, hi))
    f.attrs["config"] = json.dumps(ctx.config)
    f.attrs["done"] = 0
    return f


def _label(ctx: _Ctx, part: Path, lo: int, hi: int, reporter: Reporter) -> None:
    """Teacher probabilities of source faces lo..hi-1 into `part`, resuming from its `done` count."""
    cfg = ctx.cfg
    teacher = LoadedModel.from_checkpoint(ctx.ck, ctx.ck_path, ctx.device)
    src = CacheFile(cfg.src)
    f = _open_part(part, ctx.config) or _create_part(part, ctx, src, lo, hi, teacher.schema.num_classes)
    try:
        done, n = int(f.attrs["done"]), hi - lo
        with reporter.task("pseudolabel", n) as advance:
            advance(done)
            for a in range(done, n, cfg.batch_size):
                sel = np.arange(lo + a, min(hi, lo + a + cfg.batch_size))
                imgs, hms = src.read("images", sel), src.read("heatmaps", sel)
                x = to_input(imgs, hms if teacher.heatmap else None)
                # a teacher of another crop side sees the crops at its own side; the labels keep theirs
                p = teacher.predict_at_own_side(x, cfg.tta_flip, autocast=ctx.device.type == "cuda").cpu().numpy()
                if cfg.outside_photo == "ignore":
                    p *= src.inside_photo(sel)[:, None]
                b = slice(a, a + len(sel))
                f["images"][b], f["heatmaps"][b] = imgs, hms
                f["probs"][b] = np.rint(p * 255).astype(np.uint8) if cfg.storage == "uint8" else p.astype(np.float16)
                f["confidence"][b] = np.rint(p.max(1) * 255).astype(np.uint8)
                f.attrs["done"] = a + len(sel)
                f.flush()
                advance(len(sel))
        f.attrs["schema"] = json.dumps(teacher.schema.to_dict())
        f.attrs["size"] = src.size
        f.attrs["heatmap"] = teacher.heatmap
    finally:
        f.close()
        src.close()


def _merge(parts: list[Path], merged: Path) -> None:
    """Complete parts -> one file: their compressed chunks copied in order, ids and attrs carried over.
    Rewritten from scratch each time: a merge killed half-way leaves the parts, which are kept until OUT
    is in place, so rerunning gives the same file."""
    with h5py.File(merged, "w") as f:
        srcs = [h5py.File(p, "r") for p in parts]
        try:
            n = sum(p["images"].shape[0] for p in srcs)
            for k in CHUNKED:
                d0 = srcs[0][k]
                dst = f.create_dataset(k, (n,) + d0.shape[1:], d0.dtype, chunks=d0.chunks,
                                       compression="gzip", compression_opts=4)
                zero = (0,) * (len(d0.shape) - 1)
                row = 0
                for p in srcs:
                    for i in range(p[k].shape[0]):
                        mask, raw = p[k].id.read_direct_chunk((i,) + zero)
                        dst.id.write_direct_chunk((row + i,) + zero, raw, mask)
                    row += p[k].shape[0]
            ids = [v.decode() if isinstance(v, bytes) else v for p in srcs for v in p["ids"][:]]
            f.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
            f.create_dataset("source_index", data=np.concatenate([p["source_index"][:] for p in srcs]))
            for k in ("config", "schema", "size", "heatmap"):
                f.attrs[k] = srcs[0].attrs[k]
            f.attrs["done"] = n
        finally:
            for p in srcs:
                p.close()


def _finish(ctx: _Ctx, fo: FileOutput, parts: list[Path]) -> dict:
    """Complete parts -> OUT.partial (one part: it already is; several: merged), the manifest written
    last, then the rename to OUT and the parts deleted."""
    if parts != [fo.part]:
        _merge(parts, fo.part)
    with h5py.File(fo.part, "a") as f:
        n, c = f["probs"].shape[:2]
        # A sample of the faces; confidence 0 marks a pixel outside the photo (a class's probability is
        # at least 1/C wherever the teacher spoke), so the mean is over the pixels it spoke of.
        conf = np.stack([f["confidence"][i] for i in range(0, n, max(1, n // 200))])
        known = conf > 0
        mean_conf = float(conf[known].mean() / 255) if known.any() else 0.0
        f.attrs["format"] = FORMAT
        manifest = {"stage": "pseudolabel", "schema_version": 1, "facepipe_version": __version__,
                    "config": ctx.config, "teacher": ctx.teacher_id,
                    # the teacher's own crop side: the faces were resampled to it where it is not theirs
                    "teacher_size": int(ctx.ck["size"]),
                    "inputs": {"src": {"path": str(Path(ctx.cfg.src).resolve())}},
                    "counts": {"faces": int(n), "classes": int(c), "mean_confidence": round(mean_conf, 4),
                               "outside_photo_share": round(float(1 - known.mean()), 4)},
                    "ranks": len(parts), "seconds": round(time.time() - ctx.t0, 2),
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command_line()}
        f.attrs["manifest"] = json.dumps(manifest)
    fo.finish()
    for p in parts:
        if p != fo.part and p.exists():
            p.unlink()
    return manifest


def pseudo_sheet(path, n: int = 12, seed: int = 0):
    """Faces with their pseudo-labels and confidence maps."""
    with PseudoFile(path) as f:
        rng = np.random.default_rng(seed)
        pick = sorted(rng.choice(len(f), size=min(n, len(f)), replace=False))
        rows, caps, row, cap = [], [], [], []
        for k, i in enumerate(pick):
            img = f.read("images", i)
            lab = f.read("probs", i).argmax(0).astype(np.uint8)
            conf = f.read("confidence", i)
            row += [img, overlay(img, lab, f.schema, 0.55), np.repeat(conf[..., None], 3, 2)]
            cap.append(f.ids[i][:20])
            if (k + 1) % 3 == 0 or k == len(pick) - 1:
                rows.append(row)
                caps.append(" | ".join(cap))
                row, cap = [], []
    return grid(rows, caps)
