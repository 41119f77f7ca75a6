"""Stage `train`: supervised training of a parser on a cache (the teacher recipe by default).

runs/NAME/
  config.json                 the TrainConfig
  metrics.jsonl               one line per epoch: losses, lr, seconds, validation scores
  checkpoints/last.pt         after every epoch (model, optimiser, schedule, loss centers, RNG, epoch)
  checkpoints/best.pt         best validation overall F1 (= last when there is no validation split)
  curves.png, eval.json       learning curves; test-split scores in photo coordinates at the end
  manifest.json               written last
Rerunning the same command continues from last.pt; a finished run is left alone.

Under `torchrun --nproc-per-node N -m facepipe train ...` the same command runs data-parallel
(DistributedDataParallel; gloo on CPU, nccl with one GPU per rank). --batch-size stays the global batch:
each rank takes its B/N faces of every batch of the one seeded order, augmentation draws are made for
the whole batch, losses are normalised over the whole batch and the sc-loss centers move on statistics
summed over ranks, so N ranks take the steps one process would take with batch B. The exception is
BatchNorm: on CUDA it becomes SyncBatchNorm (global-batch statistics); on CPU (gloo; torch's
SyncBatchNorm runs on GPUs only) each rank normalises with its own B/N faces, and the checkpoint keeps
rank 0's running statistics. Rank 0 alone writes the run folder; every rank resumes from its last.pt.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from facepipe.atomic import write_json, write_text
from facepipe.augment import augment, training_recipe
from facepipe.cache import read_cache_manifest
from facepipe.checkpoint import load_checkpoint, save_checkpoint
from facepipe.dataset import FaceCache, loader_batches, to_input
from facepipe.device import amp_dtype, channels_last, pick_device, set_threads
from facepipe.distributed import Dist, default_threads, setup, stage_output
from facepipe.errors import FacepipeError
from facepipe.interrupt import check as check_interrupt, deferred_sigint
from facepipe.manifest import config_dict
from facepipe.metrics import confusion_torch, scores
from facepipe.progress import SILENT, Reporter


@dataclass(frozen=True)
class TrainConfig:
    cache: str
    out: str = field(metadata={"identity": False})
    arch: str = "teacher"
    model_kwargs: dict = field(default_factory=dict)
    heatmap: bool = True
    loss: str = "sc"  # ce | center | sc | sc-all
    loss_weight: float = 0.005
    loss_warmup: int = 200  # iterations before the sc/center term applies
    epochs: int = 100  # ~25 min on a 2-core CPU for FASSEG's 202 training faces at 256 px
    batch_size: int = 8  # the global batch: under torchrun each of N ranks takes batch_size / N
    lr: float = 2e-3
    weight_decay: float = 1e-4
    train_split: str = "train"
    val_split: str = "auto"  # a split name, "none", or auto ("val" when the cache has one)
    val_every: int = 5
    augment: str = "wild"  # none | basic | wild (facepipe.augment)
    backgrounds: str | None = None  # a `backgrounds` output: faces pasted onto its photos (wild)
    seed: int = 0
    device: str = field(default="auto", metadata={"identity": False})
    threads: int = field(default=0, metadata={"identity": False})
    workers: int = field(default=0, metadata={"identity": False})
    amp: bool = field(default=True, metadata={"identity": False})
    final_eval: str = field(default="test", metadata={"identity": False})
    force: bool = field(default=False, metadata={"identity": False})


class Batches:
    """Seeded shuffled batches; small caches are held in memory, big ones read by DataLoader workers.

    With ranks, every rank draws the same order and takes rows [first, first + per) of each global batch."""

    IN_MEMORY_BYTES = 2 << 30

    def __init__(self, ds: FaceCache, batch_size: int, seed: int, workers: int, d: Dist | None = None):
        self.ds, self.bs, self.seed, self.workers = ds, batch_size, seed, workers
        self.per = batch_size // (d.world if d else 1)
        self.first = d.rank * self.per if d else 0
        s = ds.size
        self.in_memory = len(ds) * s * s * 5 < self.IN_MEMORY_BYTES
        if self.in_memory:
            f = ds._file()
            idx = ds.indices
            self.images = f["images"][np.sort(idx)]
            self.heat = f["heatmaps"][np.sort(idx)]
            self.labels = f["labels"][np.sort(idx)]

    def __len__(self):
        return max(1, len(self.ds) // self.bs)

    def epoch(self, epoch: int):
        g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        order = torch.randperm(len(self.ds), generator=g).numpy()
        if self.in_memory:
            for b in range(len(self)):
                sel = np.sort(order[b * self.bs:(b + 1) * self.bs])[self.first:self.first + self.per]
                x = to_input(self.images[sel], self.heat[sel] if self.ds.heatmap else None)
                yield x, torch.from_numpy(self.labels[sel].astype(np.int64))
        else:
            mine = order[: len(self) * self.bs].reshape(len(self), self.bs)[:, self.first:self.first + self.per]
            sub = torch.utils.data.Subset(self.ds, mine.ravel().tolist())
            yield from loader_batches(sub, self.per, self.workers)


def _val_split(cfg: TrainConfig, cache) -> str | None:
    import h5py

    with h5py.File(cache, "r") as f:
        splits = set(s.decode() if isinstance(s, bytes) else s for s in f["split"][:])
    if cfg.val_split == "none":
        return None
    if cfg.val_split == "auto":
        return "val" if "val" in splits else None
    if cfg.val_split not in splits:
        raise FacepipeError(f"--val-split {cfg.val_split} is not in {cache} (it has {', '.join(sorted(splits))}).")
    return cfg.val_split


@torch.no_grad()
def validate(model, ds: FaceCache, schema, device, batch_size: int = 16, d: Dist | None = None) -> dict:
    """Scores in the aligned crop (fast, for model selection and curves); ranks share the faces out and
    sum their confusion matrices."""
    model.eval()
    n = schema.num_classes
    cm = np.zeros((n, n), np.int64)
    f = ds._file()
    faces = ds.indices if d is None else ds.indices[d.rank::d.world]
    for start in range(0, len(faces), batch_size):
        check_interrupt()
        idx = np.sort(faces[start:start + batch_size])
        x = to_input(f["images"][idx], f["heatmaps"][idx] if ds.heatmap else None).to(device)
        y = torch.from_numpy(f["labels"][idx].astype(np.int64)).to(device)
        cm += confusion_torch(model(x).argmax(1), y, n)
    if d is not None:
        cm = d.sum_np(cm)
    s = scores(cm, schema)
    return {"pixel_acc": s["pixel_acc"], "overall_f1": s["overall_f1"], "mean_f1": s["mean_f1"]}


def lr_at(step: int, total: int, base: float, warmup: int = 100) -> float:
    warmup = max(1, min(warmup, total // 10))
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))


def train(cfg: TrainConfig, reporter: Reporter = SILENT, distributed: Dist | None = None) -> dict:
    """`distributed`: this rank's Dist; by default joined from torchrun's environment (None outside it)."""
    from facepipe.losses import build_criterion
    from facepipe.models import create_model

    cache_man = read_cache_manifest(cfg.cache)
    device = pick_device(cfg.device)
    d = distributed or setup(device)
    if d is not None:
        device = d.device
        check_global_batch(cfg.batch_size, d)
    main = d is None or d.is_main
    set_threads(cfg.threads or default_threads(d))
    train_ds = FaceCache(cfg.cache, split=cfg.train_split, heatmap=cfg.heatmap)
    schema = train_ds.schema
    if schema is None:
        raise FacepipeError(f"{cfg.cache} carries no label schema; re-import the dataset.")
    vsplit = _val_split(cfg, cfg.cache)
    val_ds = FaceCache(cfg.cache, split=vsplit, heatmap=cfg.heatmap) if vsplit else None
    aug_cfg, bank, aug_ids = training_recipe(cfg.augment, cfg.backgrounds, train_ds.size, cfg.seed, schema, reporter)
    out = Path(cfg.out)
    config = config_dict(cfg)
    config["cache_manifest"] = {"path": str(Path(cfg.cache).resolve()), "seconds": cache_man.get("seconds"),
                                "finished": cache_man.get("finished")}
    # Built before the run folder is claimed: settings the model refuses leave no half-made run behind.
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, num_classes=schema.num_classes, in_channels=4 if cfg.heatmap else 3,
                         **cfg.model_kwargs).to(device)
    with stage_output(out, "train", config, cfg.force, d) as so:
        if so.state == "done":
            return so.manifest
        if main:
            write_json(out / "config.json", {**asdict(cfg), "val_split_used": vsplit})
        with torch.no_grad():
            model.eval()
            _, feat = model(torch.zeros(1, 4 if cfg.heatmap else 3, 64, 64, device=device), return_features=True)
        criterion = build_criterion(cfg.loss, schema.num_classes, feat.shape[1], lam=cfg.loss_weight,
                                    warmup=cfg.loss_warmup)
        if isinstance(criterion, torch.nn.Module):
            criterion.to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        model = channels_last(model)
        dtype = amp_dtype(device) if cfg.amp else None
        use_amp = dtype is not None
        # bf16 keeps fp32's exponent range: only fp16 needs loss scaling.
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        batches = Batches(train_ds, cfg.batch_size, cfg.seed, cfg.workers, d)
        total_steps = cfg.epochs * len(batches)
        start_epoch, step, best = 0, 0, -1.0
        last_path, best_path = out / "checkpoints" / "last.pt", out / "checkpoints" / "best.pt"
        ck = resume_checkpoint(so.state, last_path, d)
        if ck is not None:
            start_epoch, step, best = resume(out, model, opt, criterion, ck=ck, trim=main)
            reporter.log(f"resuming {out} at epoch {start_epoch}")
        net = model if d is None else data_parallel(model, d, find_unused=criterion.extra is None)
        if d is not None:
            criterion.set_sync(d)
        part = (batches.first, cfg.batch_size) if d is not None else None
        flip_perm = torch.as_tensor(schema.flip_permutation().astype(np.int64))
        align = cache_man.get("align") or {"size": train_ds.size, "iod": 0.22}
        t_start = time.time()
        # Ctrl-C is taken between batches (facepipe.interrupt): never inside a finalizer, where it would be
        # swallowed, nor inside a checkpoint write.
        with reporter.task(f"train {cfg.arch}", cfg.epochs) as advance, deferred_sigint():
            advance(start_epoch)
            for epoch in range(start_epoch, cfg.epochs):
                net.train()
                t0, sums, nb = time.time(), {}, 0
                g = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
                # closing(): on an exception the DataLoader's workers are joined right here, not later by GC.
                with closing(batches.epoch(epoch)) as epoch_batches:
                    for x, y in epoch_batches:
                        check_interrupt()
                        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                        if cfg.augment != "none":
                            x, y = augment(x, y, flip_perm, aug_cfg, g, part=part, bank=bank, ids=aug_ids)
                        x = channels_last(x)
                        for pg in opt.param_groups:
                            pg["lr"] = lr_at(step, total_steps, cfg.lr)
                        with torch.autocast(device.type, dtype=dtype, enabled=use_amp):
                            logits, feats = net(x, return_features=True)
                        loss, parts = criterion(logits.float(), feats.float(), y)
                        opt.zero_grad(set_to_none=True)
                        scaler.scale(loss).backward()
                        scaler.step(opt)
                        scaler.update()
                        step += 1
                        nb += 1
                        for k, v in parts.items():
                            sums[k] = sums.get(k, 0.0) + float(v)
                        if not math.isfinite(float(loss.detach())):
                            raise FacepipeError(f"training diverged at epoch {epoch + 1} (loss {float(loss)}); "
                                                "lower --lr or check the cache.")
                sums = reduce_sums(sums, d)
                rec = {"epoch": epoch + 1, "step": step, "lr": opt.param_groups[0]["lr"],
                       "seconds": round(time.time() - t0, 2), **{k: v / nb for k, v in sums.items()}}
                last_epoch = epoch + 1 == cfg.epochs
                if d is not None:
                    d.sync_buffers(model)  # rank 0's BN statistics: the ones its checkpoint keeps
                if val_ds is not None and ((epoch + 1) % cfg.val_every == 0 or last_epoch):
                    rec["val"] = validate(model, val_ds, schema, device, d=d)
                score = rec["val"]["overall_f1"] if "val" in rec else None
                extra = {"optimizer": opt.state_dict(), "epoch": epoch + 1, "step": step, "align": align,
                         "rng": torch.get_rng_state(), "config": config,
                         "criterion": criterion.state_dict() if isinstance(criterion, torch.nn.Module) else None}
                if val_ds is None or (score is not None and score > best):
                    best = score if score is not None else best
                    if main:
                        save_checkpoint(best_path, model, arch=cfg.arch, schema=schema, size=train_ds.size,
                                        heatmap=cfg.heatmap, extra={"epoch": epoch + 1, "metrics": rec,
                                                                    "config": config, "align": align})
                extra["best"] = best
                if main:
                    # Metrics first: a kill between the two leaves a line that resume trims.
                    with open(out / "metrics.jsonl", "a") as fh:
                        fh.write(json.dumps(rec) + "\n")
                    save_checkpoint(last_path, model, arch=cfg.arch, schema=schema, size=train_ds.size,
                                    heatmap=cfg.heatmap, extra={**extra, "metrics": rec})
                advance(1, loss=f"{rec.get('total', 0):.3f}", **({"val_f1": f"{score:.3f}"} if score else {}))
        if not main:
            return d.share()  # rank 0's manifest, once it has plotted, evaluated and finished
        train_seconds = time.time() - t_start
        plot_curves(out / "metrics.jsonl", out / "curves.png")
        result = {"train_seconds_this_session": round(train_seconds, 1)}
        if cfg.final_eval:
            result["eval"] = final_eval(best_path, cfg, device, reporter)
        counts = {"train_faces": len(train_ds), "val_faces": len(val_ds) if val_ds else 0,
                  "epochs": cfg.epochs, "steps": step}
        if d is not None:
            counts["ranks"] = d.world
        m = so.finish(inputs={"cache": config["cache_manifest"]}, counts=counts, extra=result)
        return m if d is None else d.share(m)


def final_eval(ckpt_path, cfg: TrainConfig, device, reporter) -> dict | None:
    import h5py

    from facepipe.checkpoint import build_from_checkpoint
    from facepipe.evaluate import evaluate

    with h5py.File(cfg.cache, "r") as f:
        splits = set(s.decode() if isinstance(s, bytes) else s for s in f["split"][:])
        coords = "original" if "photo_labels" in f else "aligned"
    if cfg.final_eval not in splits:
        return None
    model, schema = build_from_checkpoint(load_checkpoint(ckpt_path))
    r = evaluate(model.to(device), cfg.cache, schema, split=cfg.final_eval, coords=coords, heatmap=cfg.heatmap,
                 device=str(device), reporter=reporter)
    r.pop("per_image", None)
    r.pop("confusion", None)
    write_json(Path(cfg.out) / "eval.json", r)
    return {k: r[k] for k in ("overall_f1", "pixel_acc", "mean_f1", "coords", "split")}


def resume(out: Path, model, opt, criterion=None, ck: dict | None = None, trim: bool = True) -> tuple[int, int, float]:
    """Load run state from out/checkpoints/last.pt (or `ck`, its contents); returns (epoch, step, best score)."""
    ck = ck or load_checkpoint(out / "checkpoints" / "last.pt")
    model.load_state_dict(ck["state_dict"])
    opt.load_state_dict(ck["optimizer"])
    if ck.get("criterion") and isinstance(criterion, torch.nn.Module):
        criterion.load_state_dict(ck["criterion"])
    torch.set_rng_state(ck["rng"])
    # Metrics of epochs after the checkpoint (killed mid-epoch) are dropped.
    if trim:
        _trim_metrics(out / "metrics.jsonl", ck["epoch"])
    return ck["epoch"], ck["step"], ck.get("best", -1.0)


def resume_checkpoint(state: str, last_path: Path, d: Dist | None) -> dict | None:
    """last.pt's contents when resuming, read by rank 0 and sent to every rank (no shared disk needed)."""
    main = d is None or d.is_main
    ck = load_checkpoint(last_path) if main and state == "resume" and last_path.exists() else None
    return ck if d is None else d.share(ck)


def check_global_batch(batch_size: int, d: Dist) -> None:
    if batch_size % d.world:
        raise FacepipeError(f"--batch-size {batch_size} is the global batch and must be a multiple of the "
                            f"{d.world} ranks; use {max(1, batch_size // d.world) * d.world}.")


def data_parallel(model, d: Dist, find_unused: bool = False):
    """DDP around `model` (whose parameters the optimizer already holds); SyncBatchNorm on GPUs.
    `find_unused`: some parameters get no gradient (the feature projection under plain cross entropy)."""
    kw = {"find_unused_parameters": find_unused}
    if d.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=[d.device], **kw)
    return torch.nn.parallel.DistributedDataParallel(model, **kw)


def reduce_sums(sums: dict, d: Dist | None) -> dict:
    """Per-rank sums of loss shares -> the one-process sums (every rank has the same keys in order)."""
    if d is None or not sums:
        return sums
    keys = list(sums)
    tot = d.sum_np(np.array([sums[k] for k in keys], np.float64))
    return {k: float(v) for k, v in zip(keys, tot)}


def _trim_metrics(path: Path, upto_epoch: int):
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["epoch"] <= upto_epoch:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            pass  # a line cut short by a full disk or a kill mid-append: its epoch is redone anyway
    write_text(path, "".join(l + "\n" for l in keep))


def plot_curves(metrics_path, png_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(l) for l in Path(metrics_path).read_text().splitlines() if l.strip()]
    if not recs:
        return
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ep = [r["epoch"] for r in recs]
    for key in ("total", "ce", "sc", "center", "kd"):
        if key in recs[0]:
            ax[0].plot(ep, [r.get(key, np.nan) for r in recs], label=key)
    ax[0].set_xlabel("epoch"), ax[0].set_ylabel("loss"), ax[0].legend(), ax[0].set_yscale("log")
    vr = [r for r in recs if "val" in r]
    if vr:
        for key in ("pixel_acc", "overall_f1", "mean_f1"):
            ax[1].plot([r["epoch"] for r in vr], [r["val"][key] for r in vr], marker="o", label=key)
        ax[1].set_xlabel("epoch"), ax[1].set_title("validation (aligned crop)"), ax[1].legend()
    else:
        ax[1].text(0.5, 0.5, "no validation split", ha="center", va="center")
    fig.tight_layout()
    from facepipe.atomic import atomic_path

    with atomic_path(png_path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
