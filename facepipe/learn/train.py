"""Stage `train`: supervised training of a parser on a cache (the teacher recipe by default).

This module holds what is particular to supervised training: the config, the seeded batches of the
cache's train split (augmented on the device), and the loss (cross entropy, + center or statistical
contextual loss on the network's features). The epoch loop, checkpoints, metrics, resume, validation and
final eval are the engine's (facepipe.learn.engine, which also describes the run folder).

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

from contextlib import closing
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from facepipe.data.face_cache import FaceCache, read_cache_manifest
from facepipe.infer.checkpoint import warm_start
from facepipe.learn.augment import NONE, augment, training_recipe
from facepipe.learn.batches import Batches
from facepipe.learn.engine import Amp, Run, RunSpec, start_ranks, val_split
from facepipe.learn.losses import build_criterion
from facepipe.models import create_model
from facepipe.util.align_spec import DEFAULT_IOD
from facepipe.util.device import channels_last
from facepipe.util.errors import FacepipeError
from facepipe.util.manifest import config_dict
from facepipe.util.progress import SILENT, Reporter


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
    # Crop pixels outside the photo a face was cut from (black fill; FASSEG's photos end at the hair):
    # "label" trains on the cache's label there (align's --outside-label, background by default), "ignore"
    # leaves them out of the loss (label 255), "edge" keeps background only beyond the photo's background
    # (data.face_cache.fill_outside_photo); the wild augmentation pastes a backdrop over ignored pixels.
    outside_photo: str = "label"
    val_split: str = "auto"  # a split name, "none", or auto ("val" when the cache has one)
    val_every: int = 5
    augment: str = "wild"  # none | basic | wild, optionally with fields set: "wild,paste=0" (learn.augment)
    backgrounds: str | None = None  # a `backgrounds` output: faces pasted onto its photos (wild)
    init: str | None = None  # warm start: a run, checkpoint file or bundled name with the same network
    seed: int = 0
    device: str = field(default="auto", metadata={"identity": False})
    threads: int = field(default=0, metadata={"identity": False})
    workers: int = field(default=0, metadata={"identity": False})
    amp: bool = field(default=True, metadata={"identity": False})
    final_eval: str = field(default="test", metadata={"identity": False})
    force: bool = field(default=False, metadata={"identity": False})


def train(cfg: TrainConfig, reporter: Reporter = SILENT, distributed=None) -> dict:
    """`distributed`: this rank's Dist; by default joined from torchrun's environment (None outside it)."""
    cache_man = read_cache_manifest(cfg.cache)
    device, d = start_ranks(cfg.device, cfg.threads, (cfg.batch_size,), distributed)
    train_ds = FaceCache(cfg.cache, split=cfg.train_split, heatmap=cfg.heatmap,
                         outside=cfg.outside_photo)
    schema = train_ds.schema
    if schema is None:
        raise FacepipeError(f"{cfg.cache} carries no label schema; re-import the dataset.")
    vsplit = val_split(cfg.val_split, train_ds.file)
    val_ds = FaceCache(cfg.cache, split=vsplit, heatmap=cfg.heatmap) if vsplit else None
    recipe = training_recipe(cfg.augment, cfg.backgrounds, train_ds.size, cfg.seed, schema, reporter)
    if recipe[0].tightu:  # a distill field: train's faces are all labelled (`tight` cuts those)
        reporter.log(f"[yellow]note[/]: --augment {cfg.augment}: tightu cuts pseudo-labelled faces, which train "
                     "has none of; tight=P cuts labelled ones.")
    config = config_dict(cfg)
    if cfg.outside_photo == "label":  # recorded only when set: runs made before the option still resume
        del config["outside_photo"]
    config["cache_manifest"] = {"path": str(Path(cfg.cache).resolve()), "seconds": cache_man.get("seconds"),
                                "finished": cache_man.get("finished")}
    # Built before the run folder is claimed: settings the model refuses leave no half-made run behind.
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, num_classes=schema.num_classes, in_channels=4 if cfg.heatmap else 3,
                         **cfg.model_kwargs).to(device)
    if cfg.init:
        config["init_sha256"] = warm_start(model, cfg.init, cfg.arch, schema, cfg.heatmap)
    spec = RunSpec("train", Path(cfg.out), config, cfg.force, cfg.arch, schema, train_ds.size, cfg.heatmap,
                   cache_man.get("align") or {"size": train_ds.size, "iod": DEFAULT_IOD}, cfg.epochs, cfg.lr, cfg.seed,
                   cfg.val_every, cfg.cache, cfg.final_eval,
                   "training diverged at epoch {epoch} (loss {loss}); lower --lr or check the cache.")
    with Run(spec, device, d, reporter, val_ds) as run:
        if run.done:
            return run.manifest
        run.write_config({**asdict(cfg), "val_split_used": vsplit})
        criterion = _criterion(cfg, model, schema.num_classes, device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        model = channels_last(model)
        amp = Amp(device, cfg.amp)
        batches = Batches(train_ds, cfg.batch_size, cfg.seed, cfg.workers, d)
        run.attach(model, opt, criterion, find_unused=criterion.extra is None)
        if d is not None:
            criterion.set_sync(d)
        part = (batches.first, cfg.batch_size) if d is not None else None
        feed = partial(_augmented, batches, device, recipe,
                       torch.as_tensor(schema.flip_permutation().astype(np.int64)), part)
        run.fit(feed, partial(_loss, criterion=criterion, amp=amp), len(batches), amp)
        counts = {"train_faces": len(train_ds), "val_faces": len(val_ds) if val_ds else 0}
        return run.finish(inputs={"cache": config["cache_manifest"]}, counts=counts,
                          extra={"train_seconds_this_session": round(run.train_seconds, 1)})


def _criterion(cfg: TrainConfig, model, num_classes: int, device):
    """The loss for cfg.loss, sized to the model's feature channels (one forward pass on zeros)."""
    with torch.no_grad():
        model.eval()
        _, feat = model(torch.zeros(1, 4 if cfg.heatmap else 3, 64, 64, device=device), return_features=True)
    criterion = build_criterion(cfg.loss, num_classes, feat.shape[1], lam=cfg.loss_weight, warmup=cfg.loss_warmup)
    if isinstance(criterion, torch.nn.Module):
        criterion.to(device)
    return criterion


def _augmented(batches: Batches, device, recipe, flip_perm, part, epoch: int,
               g: torch.Generator, step: int):
    """The epoch's batches on the device, augmented with the epoch's generator `g`."""
    aug_cfg, bank, aug_ids = recipe
    with closing(batches.epoch(epoch)) as epoch_batches:
        for x, y in epoch_batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if aug_cfg != NONE:
                x, y = augment(x, y, flip_perm, aug_cfg, g, part=part, bank=bank, ids=aug_ids)
            yield channels_last(x), y


def _loss(net, batch, criterion, amp: Amp):
    x, y = batch
    with amp.autocast():
        logits, feats = net(x, return_features=True)
    return criterion(logits.float(), feats.float(), y)
