"""Stage `pseudolabel`: a teacher's soft predictions on unlabelled aligned faces (method.md section 5).

OUT.h5 (self-contained, so distillation needs nothing else):
  /images (N,s,s,3) uint8, /heatmaps (N,s,s) uint8   copied from the input
  /probs  (N,C,s,s) uint8 (probability * 255, rounded) or float16 with --storage float16
  /confidence (N,s,s) uint8  max class probability * 255;  /ids (N,) strings
attrs: format "facepipe-pseudo", teacher (arch, checkpoint path and sha256, its manifest sha256), schema,
size, tta_flip, storage, done (faces written so far), manifest (written last).
Written as OUT.h5.partial in batches; rerunning continues from `done`; renamed when complete.
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
    shard: tuple = field(default=(0, 1), metadata={"identity": False})  # (rank, world) for torch.distributed


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
    with file_lock(out):
        if out.exists():
            old = read_pseudo_manifest(out)
            if old["config"] == config and not cfg.force:
                return old
            if not cfg.force:
                raise FacepipeError(f"{out} exists with another teacher or config; use --force to replace it.")
        return _run(cfg, config, ck, teacher_id, out, reporter)


def _run(cfg, config, ck, teacher_id, out, reporter) -> dict:
    t0 = time.time()
    device = pick_device(cfg.device)
    set_threads(cfg.threads)
    model, schema = build_from_checkpoint(ck)
    model.to(device).eval()
    heat = bool(ck["heatmap"])
    src = h5py.File(cfg.src, "r")
    n_all, s = src["images"].shape[0], src["images"].shape[1]
    if s != ck["size"]:
        raise FacepipeError(f"{cfg.src} has {s}px crops but the teacher was trained on {ck['size']}px; "
                            f"re-align with --size {ck['size']}.")
    rank, world = cfg.shard
    idx_all = np.arange(n_all)[rank::world]
    n, c = len(idx_all), schema.num_classes
    part = Path(str(out) + ".partial")
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
                x = to_input(imgs, hms if heat else None).to(device)
                p = predict_probs(model, x, flip_perm, cfg.tta_flip, autocast=device.type == "cuda").cpu().numpy()
                b = slice(a, a + len(sel))
                f["images"][b], f["heatmaps"][b] = imgs, hms
                f["probs"][b] = np.rint(p * 255).astype(np.uint8) if cfg.storage == "uint8" else p.astype(np.float16)
                f["confidence"][b] = np.rint(p.max(1) * 255).astype(np.uint8)
                f.attrs["done"] = a + len(sel)
                f.flush()
                advance(len(sel))
        conf = f["confidence"]
        mean_conf = float(np.mean([conf[i].mean() for i in range(0, n, max(1, n // 200))]) / 255)
        f.attrs["format"] = "facepipe-pseudo"
        f.attrs["schema"] = json.dumps(schema.to_dict())
        f.attrs["size"] = s
        f.attrs["heatmap"] = heat
        manifest = {"stage": "pseudolabel", "schema_version": 1, "facepipe_version": __version__,
                    "config": config, "teacher": teacher_id,
                    "inputs": {"src": {"path": str(Path(cfg.src).resolve())}},
                    "counts": {"faces": n, "classes": c, "mean_confidence": round(mean_conf, 4)},
                    "shard": list(cfg.shard), "seconds": round(time.time() - t0, 2),
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        f.attrs["manifest"] = json.dumps(manifest)
        f.close()
        f = None
        os.replace(part, out)
        return manifest
    finally:
        if f is not None:
            f.close()
        src.close()


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
