"""Stage `pseudolabel`: a teacher's soft predictions on unlabelled aligned faces (method.md section 5).

OUT.h5 (self-contained, so distillation needs nothing else):
  /images (N,s,s,3) uint8, /heatmaps (N,s,s) uint8   copied from the input
  /probs  (N,C,s,s) uint8 (probability * 255, rounded) or float16 with --storage float16
  /confidence (N,s,s) uint8  max class probability * 255;  /ids (N,) strings
attrs: format "facepipe-pseudo", teacher (arch, checkpoint path and sha256, its manifest sha256), schema,
size, tta_flip, storage, done (faces written so far), manifest (written last).
Written as OUT.h5.partial in batches; rerunning continues from `done`; renamed when complete.

Under torchrun (or with `shard=(rank, world)`) each rank labels a contiguous run of whole batches into
OUT.h5.part<rank>of<world> (resumable the same way); once every part is complete, rank 0 (or, without
torchrun, the shard that completes the set) copies their compressed chunks in order into OUT.h5 and
deletes the parts. Batches are the ones a single process would form, so the merged file holds the same
faces in the same order with the same probability bytes as a one-process run.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from facepipe import __version__
from facepipe.cache import read_cache_manifest
from facepipe.checkpoint import build_from_checkpoint, load_checkpoint, run_checkpoint
from facepipe.dataset import to_input
from facepipe.device import pick_device, set_threads
from facepipe.distributed import default_threads, setup, split_range
from facepipe.errors import FacepipeError
from facepipe.manifest import config_dict, file_lock, file_sha256
from facepipe.predict import predict_probs
from facepipe.progress import SILENT, Reporter


@dataclass(frozen=True)
class PseudoConfig:
    teacher: str
    src: str
    out: str = field(metadata={"identity": False})
    tta_flip: bool = True
    storage: str = "uint8"  # uint8 | float16
    batch_size: int = field(default=16, metadata={"identity": False})
    device: str = field(default="auto", metadata={"identity": False})
    threads: int = field(default=0, metadata={"identity": False})
    force: bool = field(default=False, metadata={"identity": False})
    # (rank, world) of this process when not launched by torchrun (torchrun's own ranks take precedence).
    shard: tuple = field(default=(0, 1), metadata={"identity": False})


def default_output(teacher_run) -> Path:
    """Where `pseudolabel --teacher RUN` writes when OUT is not given, and where `distill` looks."""
    return Path(teacher_run) / "pseudo" / "unlabeled.h5"


def read_pseudo_manifest(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FacepipeError(f"pseudo-labels {path} not found; make them with "
                            f"`facepipe pseudolabel --teacher RUN UNLABELED.h5 {path}`.")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != "facepipe-pseudo" or "manifest" not in f.attrs:
                raise FacepipeError(f"{path} is not a complete facepipe pseudo-label file.")
            return json.loads(f.attrs["manifest"])
    except OSError as e:
        raise FacepipeError(f"{path} is not a readable HDF5 file ({e}); remake it with `facepipe pseudolabel`.") from None


def run_pseudolabel(cfg: PseudoConfig, reporter: Reporter = SILENT) -> dict:
    if cfg.storage not in ("uint8", "float16"):
        raise FacepipeError("--storage must be uint8 or float16")
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
        raise FacepipeError(f"{out} exists with another teacher or config; use --force to replace it.")
    set_threads(cfg.threads or default_threads(d))
    ctx = _Ctx(cfg, config, ck, teacher_id, d.device if d else device, time.time())
    if world == 1:
        with file_lock(out):
            _label(ctx, Path(str(out) + ".partial"), 0, _src_len(cfg.src), reporter)
            return _finish(ctx, [Path(str(out) + ".partial")], out)
    parts = [part_path(out, r, world) for r in range(world)]
    n = _src_len(cfg.src)
    with file_lock(parts[rank]):
        _label(ctx, parts[rank], *split_range(n, _Rank(rank, world), cfg.batch_size), reporter)
    if d is not None:
        d.barrier()  # every part complete (a rank that died took the others down with it)
        manifest = None
        if d.is_main:
            with file_lock(out):
                manifest = _finish(ctx, parts, out)
        return d.share(manifest)
    if not all(_complete(p, config) for p in parts):
        return {"stage": "pseudolabel", "part": str(parts[rank]), "shard": [rank, world], "merged": False}
    with file_lock(out):
        if out.exists():  # another shard merged first
            return read_pseudo_manifest(out)
        return _finish(ctx, parts, out)


def part_path(out, rank: int, world: int) -> Path:
    return Path(f"{out}.part{rank}of{world}")


@dataclass(frozen=True)
class _Rank:  # what split_range needs, for shards run without torchrun
    rank: int
    world: int


@dataclass(frozen=True)
class _Ctx:
    cfg: PseudoConfig
    config: dict
    ck: dict
    teacher_id: dict
    device: torch.device
    t0: float


def _src_len(src) -> int:
    with h5py.File(src, "r") as f:
        return int(f["images"].shape[0])


def _complete(part: Path, config: dict) -> bool:
    try:
        with h5py.File(part, "r") as f:
            return f.attrs.get("config") == json.dumps(config) and int(f.attrs["done"]) == f["images"].shape[0]
    except (OSError, KeyError):
        return False


def _label(ctx: _Ctx, part: Path, lo: int, hi: int, reporter: Reporter) -> None:
    """Teacher probabilities of source faces lo..hi-1 into `part`, resuming from its `done` count."""
    cfg, config, ck = ctx.cfg, ctx.config, ctx.ck
    model, schema = build_from_checkpoint(ck)
    model.to(ctx.device).eval()
    heat = bool(ck["heatmap"])
    src = h5py.File(cfg.src, "r")
    s = src["images"].shape[1]
    if s != ck["size"]:
        src.close()
        raise FacepipeError(f"{cfg.src} has {s}px crops but the teacher was trained on {ck['size']}px; "
                            f"re-align with --size {ck['size']}.")
    idx_all = np.arange(lo, hi)
    n, c = len(idx_all), schema.num_classes
    f = None
    if part.exists():
        try:
            f = h5py.File(part, "a")
            if f.attrs.get("config") != json.dumps(config):
                f.close()
                f = None
        except OSError:
            f = None  # broken by a kill at the wrong moment: start over
    if f is None:
        f = h5py.File(part, "w")
        kw = {"compression": "gzip", "compression_opts": 4}
        f.create_dataset("images", (n, s, s, 3), np.uint8, chunks=(1, s, s, 3), **kw)
        f.create_dataset("heatmaps", (n, s, s), np.uint8, chunks=(1, s, s), **kw)
        f.create_dataset("probs", (n, c, s, s), np.uint8 if cfg.storage == "uint8" else np.float16,
                         chunks=(1, c, s, s), **kw)
        f.create_dataset("confidence", (n, s, s), np.uint8, chunks=(1, s, s), **kw)
        ids = [v.decode() if isinstance(v, bytes) else v for v in src["ids"][idx_all]]
        f.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("source_index", data=idx_all)
        f.attrs["config"] = json.dumps(config)
        f.attrs["done"] = 0
    try:
        done = int(f.attrs["done"])
        flip_perm = schema.flip_permutation()
        with reporter.task("pseudolabel", n) as advance:
            advance(done)
            for a in range(done, n, cfg.batch_size):
                sel = idx_all[a:a + cfg.batch_size]
                imgs, hms = src["images"][sel], src["heatmaps"][sel]
                x = to_input(imgs, hms if heat else None).to(ctx.device)
                p = predict_probs(model, x, flip_perm, cfg.tta_flip, autocast=ctx.device.type == "cuda").cpu().numpy()
                b = slice(a, a + len(sel))
                f["images"][b], f["heatmaps"][b] = imgs, hms
                f["probs"][b] = np.rint(p * 255).astype(np.uint8) if cfg.storage == "uint8" else p.astype(np.float16)
                f["confidence"][b] = np.rint(p.max(1) * 255).astype(np.uint8)
                f.attrs["done"] = a + len(sel)
                f.flush()
                advance(len(sel))
        f.attrs["schema"] = json.dumps(schema.to_dict())
        f.attrs["size"] = s
        f.attrs["heatmap"] = heat
    finally:
        f.close()
        src.close()


CHUNKED = ("images", "heatmaps", "probs", "confidence")


def _finish(ctx: _Ctx, parts: list[Path], out: Path) -> dict:
    """Complete parts -> OUT (one part: renamed; several: their compressed chunks copied in order)."""
    merged = parts[0] if len(parts) == 1 else Path(str(out) + ".partial")
    if len(parts) > 1:
        # Rewritten from scratch each time: a merge killed half-way leaves the parts, which are kept until
        # OUT is in place, so rerunning gives the same file.
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
    with h5py.File(merged, "a") as f:
        n, c = f["probs"].shape[:2]
        conf = f["confidence"]
        mean_conf = float(np.mean([conf[i].mean() for i in range(0, n, max(1, n // 200))]) / 255)
        f.attrs["format"] = "facepipe-pseudo"
        manifest = {"stage": "pseudolabel", "schema_version": 1, "facepipe_version": __version__,
                    "config": ctx.config, "teacher": ctx.teacher_id,
                    "inputs": {"src": {"path": str(Path(ctx.cfg.src).resolve())}},
                    "counts": {"faces": int(n), "classes": int(c), "mean_confidence": round(mean_conf, 4)},
                    "ranks": len(parts), "seconds": round(time.time() - ctx.t0, 2),
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        f.attrs["manifest"] = json.dumps(manifest)
    os.replace(merged, out)
    for p in parts:
        if p != merged and p.exists():
            p.unlink()
    return manifest


def pseudo_sheet(path, n: int = 12, seed: int = 0):
    """Faces with their pseudo-labels and confidence maps."""
    from facepipe.schema import LabelSchema
    from facepipe.sheets import grid, overlay

    with h5py.File(path, "r") as f:
        schema = LabelSchema.from_dict(json.loads(f.attrs["schema"]))
        rng = np.random.default_rng(seed)
        pick = sorted(rng.choice(f["images"].shape[0], size=min(n, f["images"].shape[0]), replace=False))
        rows, caps, row, cap = [], [], [], []
        for k, i in enumerate(pick):
            img = f["images"][i]
            lab = f["probs"][i].argmax(0).astype(np.uint8)
            conf = f["confidence"][i]
            row += [img, overlay(img, lab, schema, 0.55), np.repeat(conf[..., None], 3, 2)]
            cap.append(str(f["ids"][i].decode() if isinstance(f["ids"][i], bytes) else f["ids"][i])[:20])
            if (k + 1) % 3 == 0 or k == len(pick) - 1:
                rows.append(row)
                caps.append(" | ".join(cap))
                row, cap = [], []
    return grid(rows, caps)
