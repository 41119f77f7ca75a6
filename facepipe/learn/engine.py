"""The training engine: the one epoch loop behind `train` and `distill`.

A stage supplies its batches (a function of the epoch, its seeded generator and the step) and its loss
(a function of the network and one batch); the engine does the rest, the same way for both:

  - `train_one_epoch`: learning-rate schedule, mixed precision (`Amp`), one optimiser step per batch,
    Ctrl-C taken between batches (facepipe.util.interrupt), loss parts summed, divergence stopped;
  - `Run`: the run folder. It claims it (util.manifest through util.distributed.stage_output: rank 0
    alone writes), resumes from checkpoints/last.pt, wraps the model in DDP under torchrun, validates
    every `val_every` epochs, writes metrics.jsonl, checkpoints/best.pt and last.pt after every epoch,
    and at the end curves.png, the final eval (eval.json, photo coordinates) and the manifest.

runs/NAME/
  config.json                 the stage's config
  metrics.jsonl               one line per epoch: losses, lr, seconds, validation scores
  checkpoints/last.pt         after every epoch (model, optimiser, loss state, RNG, epoch, step, best)
  checkpoints/best.pt         best validation overall F1 (= last when there is no validation split)
  curves.png, eval.json       learning curves; test-split scores in photo coordinates at the end
  manifest.json               written last
Rerunning the same command continues from last.pt; a finished run is left alone.

Every random draw of an epoch comes from torch.Generator(seed * 7919 + epoch) (augmentation, and
distill's order) or the stage's own seeded order, so a resumed run takes the steps an uninterrupted one
takes. Under torchrun the batches are global: each rank takes its share, losses are normalised over the
whole batch and loss parts are summed over ranks (`reduce_sums`).
"""
from __future__ import annotations

import json
import math
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from facepipe.data.face_cache import CacheFile, FaceCache, to_input
from facepipe.infer.checkpoint import load_checkpoint, save_checkpoint
from facepipe.infer.evaluate import evaluate_model
from facepipe.infer.model import LoadedModel
from facepipe.learn.curves import plot_curves
from facepipe.util.atomic import write_json, write_text
from facepipe.util.device import amp_dtype, pick_device, set_threads
from facepipe.util.distributed import Dist, default_threads, setup, stage_output
from facepipe.util.errors import FacepipeError
from facepipe.util.interrupt import check as check_interrupt
from facepipe.util.interrupt import deferred_sigint
from facepipe.util.metrics import confusion_torch, scores
from facepipe.util.progress import SILENT, Reporter
from facepipe.util.schema import LabelSchema

# --- the ranks and the device --------------------------------------------------------------------------

def start_ranks(device: str, threads: int, global_batches: tuple[int, ...] = (),
                distributed: Dist | None = None) -> tuple[torch.device, Dist | None]:
    """(device, this rank's Dist or None): torchrun's group joined (or `distributed` taken), every global
    batch checked to split over the ranks, and the threads set (--threads, or the cores shared out)."""
    dev = pick_device(device)
    d = distributed or setup(dev)
    if d is not None:
        dev = d.device
        for b in global_batches:
            check_global_batch(b, d)
    set_threads(threads or default_threads(d))
    return dev, d


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


# --- one epoch -------------------------------------------------------------------------------------------

class Amp:
    """Mixed precision: fp16 on CUDA, bf16 on CPUs with native bf16, off elsewhere or when not enabled."""

    def __init__(self, device: torch.device, enabled: bool = True):
        self.device_type = device.type
        self.dtype = amp_dtype(device) if enabled else None
        # bf16 keeps fp32's exponent range: only fp16 needs loss scaling.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def step(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()


def lr_at(step: int, total: int, base: float, warmup: int = 100) -> float:
    """Linear warm-up over min(warmup, total / 10) steps, then a cosine down to 0 at `total`."""
    warmup = max(1, min(warmup, total // 10))
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))


class Diverged(Exception):
    def __init__(self, loss: float):
        super().__init__(f"loss {loss}")
        self.loss = loss


LossFn = Callable[[torch.nn.Module, object], "tuple[torch.Tensor, dict]"]


def train_one_epoch(net, batches: Iterable, loss_fn: LossFn, opt, lr_of_step: Callable[[int], float], amp: Amp,
                    step: int) -> tuple[dict, int, int]:
    """One optimiser step per batch; returns (sums of the loss parts, batches, step after the epoch).
    loss_fn(net, batch) -> (loss, parts): the loss to step on and its named parts, as numbers."""
    sums, nb = {}, 0
    for batch in batches:
        check_interrupt()
        for pg in opt.param_groups:
            pg["lr"] = lr_of_step(step)
        loss, parts = loss_fn(net, batch)
        amp.step(loss, opt)
        step += 1
        nb += 1
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise Diverged(value)
    return sums, nb, step


@torch.no_grad()
def validate(model, ds: FaceCache, schema, device, batch_size: int = 16, d: Dist | None = None) -> dict:
    """Scores in the aligned crop (fast, for model selection and curves); ranks share the faces out and
    sum their confusion matrices."""
    model.eval()
    n = schema.num_classes
    cm = np.zeros((n, n), np.int64)
    faces = ds.indices if d is None else ds.indices[d.rank::d.world]
    for start in range(0, len(faces), batch_size):
        check_interrupt()
        images, heat, labels = ds.batch(np.sort(faces[start:start + batch_size]))
        x = to_input(images, heat).to(device)
        y = torch.from_numpy(labels.astype(np.int64)).to(device)
        cm += confusion_torch(model(x).argmax(1), y, n)
    if d is not None:
        cm = d.sum_np(cm)
    s = scores(cm, schema)
    return {"pixel_acc": s["pixel_acc"], "overall_f1": s["overall_f1"], "mean_f1": s["mean_f1"]}


def val_split(name: str, cache: CacheFile) -> str | None:
    """The split used for model selection: a name, "none", or "auto" (val when the cache has one)."""
    splits = cache.split_names()
    if name == "none":
        return None
    if name == "auto":
        return "val" if "val" in splits else None
    if name not in splits:
        raise FacepipeError(f"--val-split {name} is not in {cache.path} (it has {', '.join(sorted(splits))}).")
    return name


# --- the run folder --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunSpec:
    """What a stage tells the engine about its run besides batches and loss."""
    stage: str  # train | distill: the manifest's stage and the progress bar's label
    out: Path
    config: dict  # the identity config: manifest, checkpoints
    force: bool
    arch: str
    schema: LabelSchema
    size: int
    heatmap: bool
    align: dict  # the AlignSpec the faces were cut with, kept in every checkpoint
    epochs: int
    lr: float
    seed: int
    val_every: int
    eval_cache: str  # scored at the end on its `final_eval` split, when it has one
    final_eval: str  # the split name; "" for no final eval
    diverged: str  # the message, formatted with epoch and loss


class Run:
    """One training run folder, claimed for the `with` block: `done` runs are left alone (`manifest`)."""

    def __init__(self, spec: RunSpec, device: torch.device, d: Dist | None, reporter: Reporter = SILENT,
                 val_ds: FaceCache | None = None):
        self.spec, self.device, self.d, self.reporter, self.val_ds = spec, device, d, reporter, val_ds
        self.main = d is None or d.is_main
        self.last_path = spec.out / "checkpoints" / "last.pt"
        self.best_path = spec.out / "checkpoints" / "best.pt"
        self.start_epoch, self.step, self.best, self.train_seconds = 0, 0, -1.0, 0.0
        self.model = self.net = self.opt = self.criterion = None

    def __enter__(self) -> "Run":
        self._claim = stage_output(self.spec.out, self.spec.stage, self.spec.config, self.spec.force, self.d)
        self.so = self._claim.__enter__()
        return self

    def __exit__(self, *exc):
        return self._claim.__exit__(*exc)

    @property
    def done(self) -> bool:
        return self.so.state == "done"

    @property
    def manifest(self) -> dict:
        return self.so.manifest

    def write_config(self, config: dict) -> None:
        if self.main:
            write_json(self.spec.out / "config.json", config)

    def attach(self, model, opt, criterion=None, find_unused: bool = False):
        """The model, its optimizer and loss module (state kept in checkpoints), resumed from last.pt when
        the run was interrupted; returns the network to train (DDP under torchrun)."""
        ck = resume_checkpoint(self.so.state, self.last_path, self.d)
        if ck is not None:
            self.start_epoch, self.step, self.best = resume(self.spec.out, model, opt, criterion, ck=ck,
                                                            trim=self.main)
            self.reporter.log(f"resuming {self.spec.out} at epoch {self.start_epoch}")
        self.model, self.opt, self.criterion = model, opt, criterion
        self.net = model if self.d is None else data_parallel(model, self.d, find_unused=find_unused)
        return self.net

    def fit(self, epoch_batches: Callable[[int, torch.Generator, int], Iterable], loss_fn: LossFn,
            steps_per_epoch: int, amp: Amp) -> None:
        """Epochs from where the run stands to the end. epoch_batches(epoch, generator, step) yields the
        epoch's batches; the generator is the epoch's seeded one, for its random draws."""
        spec = self.spec
        total = spec.epochs * steps_per_epoch
        t_start = time.time()
        # Ctrl-C is taken between batches (facepipe.util.interrupt): never inside a finalizer, where it would
        # be swallowed, nor inside a checkpoint write.
        with self.reporter.task(f"{spec.stage} {spec.arch}", spec.epochs) as advance, deferred_sigint():
            advance(self.start_epoch)
            for epoch in range(self.start_epoch, spec.epochs):
                self.net.train()
                t0 = time.time()
                g = torch.Generator().manual_seed(spec.seed * 7919 + epoch)
                # closing(): on an exception the DataLoader's workers are joined right here, not later by GC.
                with closing(epoch_batches(epoch, g, self.step)) as batches:
                    try:
                        sums, nb, self.step = train_one_epoch(self.net, batches, loss_fn, self.opt,
                                                              lambda s: lr_at(s, total, spec.lr), amp, self.step)
                    except Diverged as e:
                        raise FacepipeError(spec.diverged.format(epoch=epoch + 1, loss=e.loss)) from None
                rec = {"epoch": epoch + 1, "step": self.step, "lr": self.opt.param_groups[0]["lr"],
                       "seconds": round(time.time() - t0, 2),
                       **{k: v / nb for k, v in reduce_sums(sums, self.d).items()}}
                score = self._end_epoch(epoch, rec)
                advance(1, loss=f"{rec.get('total', 0):.3f}", **({"val_f1": f"{score:.3f}"} if score else {}))
        self.train_seconds = time.time() - t_start

    def _end_epoch(self, epoch: int, rec: dict) -> float | None:
        """Validation when due, best.pt when the score improved, then the metrics line and last.pt."""
        spec, d = self.spec, self.d
        if d is not None:
            d.sync_buffers(self.model)  # rank 0's BN statistics: the ones its checkpoint keeps
        if self.val_ds is not None and ((epoch + 1) % spec.val_every == 0 or epoch + 1 == spec.epochs):
            rec["val"] = validate(self.model, self.val_ds, spec.schema, self.device, d=d)
        score = rec["val"]["overall_f1"] if "val" in rec else None
        state = {"optimizer": self.opt.state_dict(), "epoch": epoch + 1, "step": self.step, "align": spec.align,
                 "rng": torch.get_rng_state(), "config": spec.config}
        if self.criterion is not None:
            c = self.criterion
            state["criterion"] = c.state_dict() if isinstance(c, torch.nn.Module) else None
        if self.val_ds is None or (score is not None and score > self.best):
            self.best = score if score is not None else self.best
            if self.main:
                self._save(self.best_path, {"epoch": epoch + 1, "metrics": rec, "config": spec.config,
                                            "align": spec.align})
        if self.main:
            # Metrics first: a kill between the two leaves a line that resume trims.
            with open(spec.out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            self._save(self.last_path, {**state, "best": self.best, "metrics": rec})
        return score

    def _save(self, path: Path, extra: dict) -> None:
        s = self.spec
        save_checkpoint(path, self.model, arch=s.arch, schema=s.schema, size=s.size, heatmap=s.heatmap,
                        extra=extra)

    def finish(self, inputs: dict, counts: dict, extra: dict | None = None) -> dict:
        """Curves, the final eval and the manifest (rank 0); every rank returns rank 0's manifest."""
        if not self.main:
            return self.d.share()  # rank 0's manifest, once it has plotted, evaluated and finished
        spec = self.spec
        plot_curves(spec.out / "metrics.jsonl", spec.out / "curves.png")
        result = dict(extra or {})
        if spec.final_eval:
            result["eval"] = final_eval(self.best_path, spec.eval_cache, spec.final_eval, spec.out, self.device,
                                        self.reporter)
        counts = {**counts, "epochs": spec.epochs, "steps": self.step}
        if self.d is not None:
            counts["ranks"] = self.d.world
        m = self.so.finish(inputs=inputs, counts=counts, extra=result)
        return m if self.d is None else self.d.share(m)


def final_eval(ckpt_path, cache, split: str, out, device, reporter: Reporter = SILENT) -> dict | None:
    """Scores of the checkpoint on the cache's `split` (photo coordinates when the cache has photo labels)
    into out/eval.json; None when the cache has no such split."""
    cf = CacheFile(cache)
    coords = "original" if cf.has_photo_labels else "aligned"
    if split not in cf.split_names():
        return None
    r = evaluate_model(LoadedModel.load(ckpt_path, device=device), cache, split=split, coords=coords,
                       reporter=reporter)
    r.pop("per_image", None)
    r.pop("confusion", None)
    write_json(Path(out) / "eval.json", r)
    return {k: r[k] for k in ("overall_f1", "pixel_acc", "mean_f1", "coords", "split")}


# --- resume ------------------------------------------------------------------------------------------------

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
