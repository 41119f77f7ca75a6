"""Stage `distill`: semi-supervised distillation of a teacher into a real-time student (method.md 5).

Loss per step = CE(student, ground truth) on a labelled batch
              + alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) on labelled and unlabelled batches,
averaged over valid pixels: pixels whose teacher confidence is below `confidence` are left out. The
teacher's outputs on labelled faces are computed once at the start; on unlabelled faces they come from
`facepipe pseudolabel` (stored probabilities; T = 1 uses them directly, T != 1 re-tempers them).
Run layout, resume and checkpoints are those of `train`, and so is running under torchrun: --batch-size
and --unlabeled-batch are global batches shared out among the ranks, losses are normalised over the
whole batch (each rank's loss is world x its share, so DDP's gradient average is the one-process
gradient), BatchNorm is per rank on CPU and SyncBatchNorm on GPUs. Every rank computes the teacher's
outputs on all labelled faces (once, cheap next to training).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from facepipe.atomic import write_json
from facepipe.augment import augment, training_recipe
from facepipe.cache import read_cache_manifest
from facepipe.checkpoint import build_from_checkpoint, load_checkpoint, run_checkpoint, save_checkpoint
from facepipe.dataset import FaceCache, to_input
from facepipe.device import amp_dtype, channels_last, pick_device, set_threads
from facepipe.distributed import Dist, default_threads, setup, stage_output
from facepipe.errors import FacepipeError
from facepipe.interrupt import check as check_interrupt, deferred_sigint
from facepipe.manifest import config_dict, file_sha256
from facepipe.predict import predict_probs
from facepipe.progress import SILENT, Reporter
from facepipe.pseudolabel import default_output, read_pseudo_manifest
from facepipe.train import (check_global_batch, data_parallel, final_eval, lr_at, plot_curves, reduce_sums, resume,
                            resume_checkpoint, validate)


@dataclass(frozen=True)
class DistillConfig:
    teacher: str
    out: str = field(metadata={"identity": False})
    labeled: str | None = None  # default: the cache the teacher was trained on
    unlabeled: str | None = None  # default: <teacher>/pseudo/unlabeled.h5 if it exists; "none" to skip
    arch: str = "student"
    model_kwargs: dict = field(default_factory=dict)
    temperature: float = 1.0
    alpha: float = 1.0
    confidence: float = 0.0  # teacher max-probability below this: pixel left out of KD
    kd_labeled: bool = True
    epochs: int = 60
    batch_size: int = 8  # global batches: under torchrun each of N ranks takes 1/N of them
    unlabeled_batch: int = 8
    lr: float = 4e-3
    weight_decay: float = 1e-4
    val_split: str = "auto"
    val_every: int = 5
    augment: str = "wild"  # none | basic | wild (facepipe.augment)
    backgrounds: str | None = None  # a `backgrounds` output: faces pasted onto its photos (wild)
    seed: int = 0
    device: str = field(default="auto", metadata={"identity": False})
    threads: int = field(default=0, metadata={"identity": False})
    amp: bool = field(default=True, metadata={"identity": False})
    final_eval: str = field(default="test", metadata={"identity": False})
    force: bool = field(default=False, metadata={"identity": False})


def kd_loss(student_logits, teacher_probs, temperature: float, valid, d: Dist | None = None):
    """Mean over valid pixels of T^2 * KL(p_t^T || p_s^T); teacher_probs are at T = 1.

    With `d`: world x this rank's share of the mean over every rank's valid pixels."""
    if temperature != 1.0:
        t = torch.softmax(torch.log(teacher_probs.clamp_min(1e-6)) / temperature, 1)
    else:
        t = teacher_probs
    log_s = F.log_softmax(student_logits / temperature, 1)
    kl = (t * (torch.log(t.clamp_min(1e-8)) - log_s)).sum(1)
    n = valid.sum() if d is None else d.sum(valid.sum())
    if n == 0:
        return student_logits.sum() * 0.0
    return (kl * valid).sum() / n * temperature ** 2 * (1 if d is None else d.world)


def ce_loss(logits, y, d: Dist | None = None):
    """Cross entropy over labelled pixels; with `d`, world x this rank's share of the global-batch mean."""
    if d is None:
        return F.cross_entropy(logits, y, ignore_index=255)
    n = d.sum((y != 255).sum()).clamp(min=1)
    return F.cross_entropy(logits, y, ignore_index=255, reduction="sum") / n * d.world


def resolve_inputs(cfg: DistillConfig) -> tuple[str, str | None]:
    teacher = Path(cfg.teacher)
    labeled = cfg.labeled
    if labeled is None:
        tc = teacher / "config.json"
        if not tc.exists():
            raise FacepipeError(f"{teacher} has no config.json to find its training cache; pass --labeled CACHE.")
        labeled = json.loads(tc.read_text())["cache"]
    if not Path(labeled).exists():
        raise FacepipeError(f"labelled cache {labeled} not found; pass --labeled CACHE.")
    unl = cfg.unlabeled
    if unl == "none":
        return labeled, None
    if unl is None:
        d = default_output(teacher)
        if not d.exists():
            raise FacepipeError(
                f"no pseudo-labels at {d}; make them with `facepipe pseudolabel --teacher {teacher} UNLABELED.h5` "
                "(UNLABELED.h5 from landmarks/align/cache on unlabelled photos), or pass --unlabeled none.")
        unl = str(d)
    read_pseudo_manifest(unl)
    return labeled, unl


def distill(cfg: DistillConfig, reporter: Reporter = SILENT) -> dict:
    from facepipe.models import create_model

    # The teacher first: a mistyped teacher is then named as such, not as a run without config.json.
    t_ck_path = run_checkpoint(cfg.teacher, "best")
    labeled, unl = resolve_inputs(cfg)
    t_ck = load_checkpoint(t_ck_path)
    heat = bool(t_ck["heatmap"])
    device = pick_device(cfg.device)
    d = setup(device)
    if d is not None:
        device = d.device
        check_global_batch(cfg.batch_size, d)
        check_global_batch(cfg.unlabeled_batch, d)
    main = d is None or d.is_main
    scale = 1 if d is None else d.world  # logged parts are shares: loss / world
    set_threads(cfg.threads or default_threads(d))
    lab_ds = FaceCache(labeled, split="train", heatmap=heat)
    schema = lab_ds.schema
    vsplit = None
    if cfg.val_split != "none":
        with h5py.File(labeled, "r") as f:
            splits = set(s.decode() if isinstance(s, bytes) else s for s in f["split"][:])
        vsplit = ("val" if "val" in splits else None) if cfg.val_split == "auto" else cfg.val_split
    val_ds = FaceCache(labeled, split=vsplit, heatmap=heat) if vsplit else None
    aug_cfg, bank, aug_ids = training_recipe(cfg.augment, cfg.backgrounds, lab_ds.size, cfg.seed, schema, reporter)
    config = config_dict(cfg)
    config.update({"labeled_resolved": str(Path(labeled).resolve()), "unlabeled_resolved": unl and str(Path(unl).resolve()),
                   "teacher_checkpoint_sha256": file_sha256(t_ck_path)})
    out = Path(cfg.out)
    # A trial build before the run folder is claimed, so settings the model refuses leave no half-made
    # run behind; the RNG is put back, so the seeded build below initialises exactly as before.
    with torch.random.fork_rng(devices=[]):
        create_model(cfg.arch, num_classes=schema.num_classes, in_channels=4 if heat else 3, **cfg.model_kwargs)
    with stage_output(out, "distill", config, cfg.force, d) as so:
        if so.state == "done":
            return so.manifest
        if main:
            write_json(out / "config.json", {**asdict(cfg), "labeled": labeled, "unlabeled": unl, "cache": labeled,
                                             "heatmap": heat, "val_split_used": vsplit})
        torch.manual_seed(cfg.seed)
        teacher, _ = build_from_checkpoint(t_ck)
        teacher.to(device).eval()
        f = lab_ds._file()
        idx = np.sort(lab_ds.indices)
        L_img, L_hm, L_lab = f["images"][idx], f["heatmaps"][idx], f["labels"][idx]
        # Teacher outputs on labelled faces, once (uint8 like the stored pseudo-labels).
        L_prob = np.zeros((len(idx), schema.num_classes) + L_img.shape[1:3], np.uint8)
        with reporter.task("teacher on labelled faces", len(idx)) as adv:
            for a in range(0, len(idx), 8):
                x = to_input(L_img[a:a + 8], L_hm[a:a + 8] if heat else None).to(device)
                p = predict_probs(teacher, x, schema.flip_permutation(), tta_flip=True).cpu().numpy()
                L_prob[a:a + 8] = np.rint(p * 255).astype(np.uint8)
                adv(len(x))
        del teacher
        U = h5py.File(unl, "r") if unl else None
        n_unl = U["images"].shape[0] if U else 0
        model = create_model(cfg.arch, num_classes=schema.num_classes, in_channels=4 if heat else 3,
                             **cfg.model_kwargs).to(device)
        model = channels_last(model)
        dtype = amp_dtype(device) if cfg.amp else None
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps_per_epoch = max(1, len(idx) // cfg.batch_size)
        total = cfg.epochs * steps_per_epoch
        start_epoch, step, best = 0, 0, -1.0
        last_path, best_path = out / "checkpoints" / "last.pt", out / "checkpoints" / "best.pt"
        ck = resume_checkpoint(so.state, last_path, d)
        if ck is not None:
            start_epoch, step, best = resume(out, model, opt, ck=ck, trim=main)
        net = model if d is None else data_parallel(model, d, find_unused=True)  # the feature projection
        per, uper = cfg.batch_size // scale, cfg.unlabeled_batch // scale
        first, ufirst = (d.rank * per, d.rank * uper) if d else (0, 0)
        part, upart = ((first, cfg.batch_size), (ufirst, cfg.unlabeled_batch)) if d else (None, None)
        flip_perm = torch.as_tensor(schema.flip_permutation().astype(np.int64))
        thr = cfg.confidence
        align = t_ck.get("align") or {"size": lab_ds.size, "iod": 0.22}
        # Ctrl-C between batches, as in train (facepipe.interrupt).
        with reporter.task(f"distill {cfg.arch}", cfg.epochs) as advance, deferred_sigint():
            advance(start_epoch)
            for epoch in range(start_epoch, cfg.epochs):
                net.train()
                t0, sums = time.time(), {}
                g = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
                order = torch.randperm(len(idx), generator=g).numpy()
                uorder = torch.randperm(n_unl, generator=g).numpy() if n_unl else None
                for b in range(steps_per_epoch):
                    check_interrupt()
                    sel = np.sort(order[b * cfg.batch_size:(b + 1) * cfg.batch_size])[first:first + per]
                    x = to_input(L_img[sel], L_hm[sel] if heat else None).to(device)
                    y = torch.from_numpy(L_lab[sel].astype(np.int64)).to(device)
                    p = _probs(L_prob[sel]).to(device)
                    if cfg.augment != "none":
                        x, y, p = augment(x, y, flip_perm, aug_cfg, g, soft=p, part=part, bank=bank, ids=aug_ids)
                    for pg in opt.param_groups:
                        pg["lr"] = lr_at(step, total, cfg.lr)
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                        logits = net(channels_last(x)).float()
                    ce = ce_loss(logits, y, d)
                    loss, parts = ce, {"ce": ce.item() / scale}
                    if cfg.kd_labeled and cfg.alpha > 0:
                        valid = (p.max(1).values >= max(thr, 1e-3)).float()
                        kd_l = kd_loss(logits, p, cfg.temperature, valid, d)
                        loss = loss + cfg.alpha * kd_l
                        parts["kd_labeled"] = kd_l.item() / scale
                    if n_unl and cfg.alpha > 0:
                        us = np.sort(uorder[(step * cfg.unlabeled_batch) % n_unl:][:cfg.unlabeled_batch])
                        if len(us) < cfg.unlabeled_batch:
                            us = np.sort(uorder[:cfg.unlabeled_batch])
                        us = us[ufirst:ufirst + uper]
                        xu = to_input(U["images"][us], U["heatmaps"][us] if heat else None).to(device)
                        pu = _probs(U["probs"][us]).to(device)
                        if cfg.augment != "none":
                            xu, _, pu = augment(xu, None, flip_perm, aug_cfg, g, soft=pu, part=upart, bank=bank,
                                                ids=aug_ids)
                        valid = (pu.max(1).values >= max(thr, 1e-3)).float()
                        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                            logits_u = net(channels_last(xu)).float()
                        kd_u = kd_loss(logits_u, pu, cfg.temperature, valid, d)
                        loss = loss + cfg.alpha * kd_u
                        parts["kd_unlabeled"] = kd_u.item() / scale
                    parts["total"] = loss.item() / scale
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    step += 1
                    if not math.isfinite(parts["total"]):
                        raise FacepipeError(f"distillation diverged at epoch {epoch + 1}; lower --lr.")
                    for k, v in parts.items():
                        sums[k] = sums.get(k, 0.0) + v
                sums = reduce_sums(sums, d)
                rec = {"epoch": epoch + 1, "step": step, "lr": opt.param_groups[0]["lr"],
                       "seconds": round(time.time() - t0, 2), **{k: v / steps_per_epoch for k, v in sums.items()}}
                last = epoch + 1 == cfg.epochs
                if d is not None:
                    d.sync_buffers(model)  # rank 0's BN statistics: the ones its checkpoint keeps
                if val_ds is not None and ((epoch + 1) % cfg.val_every == 0 or last):
                    rec["val"] = validate(model, val_ds, schema, device, d=d)
                score = rec["val"]["overall_f1"] if "val" in rec else None
                if val_ds is None or (score is not None and score > best):
                    best = score if score is not None else best
                    if main:
                        save_checkpoint(best_path, model, arch=cfg.arch, schema=schema, size=lab_ds.size,
                                        heatmap=heat, extra={"epoch": epoch + 1, "metrics": rec, "config": config,
                                                             "align": align})
                if main:
                    with open(out / "metrics.jsonl", "a") as fh:
                        fh.write(json.dumps(rec) + "\n")
                    save_checkpoint(last_path, model, arch=cfg.arch, schema=schema, size=lab_ds.size, heatmap=heat,
                                    extra={"optimizer": opt.state_dict(), "epoch": epoch + 1, "step": step,
                                           "align": align, "rng": torch.get_rng_state(), "best": best, "metrics": rec,
                                           "config": config})
                advance(1, loss=f"{rec['total']:.3f}")
        if U is not None:
            U.close()
        if not main:
            return d.share()  # rank 0's manifest, once it has evaluated and finished
        plot_curves(out / "metrics.jsonl", out / "curves.png")
        extra = {}
        if cfg.final_eval:
            from facepipe.train import TrainConfig

            tcfg = TrainConfig(cache=labeled, out=str(out), heatmap=heat, final_eval=cfg.final_eval)
            extra["eval"] = final_eval(best_path, tcfg, device, reporter)
        counts = {"labeled_faces": len(idx), "unlabeled_faces": n_unl, "epochs": cfg.epochs, "steps": step}
        if d is not None:
            counts["ranks"] = d.world
        m = so.finish(inputs={"teacher": str(t_ck_path.resolve()), "labeled": labeled, "unlabeled": unl},
                      counts=counts, extra=extra)
        return m if d is None else d.share(m)


def _probs(stored: np.ndarray) -> torch.Tensor:
    a = torch.from_numpy(np.asarray(stored)).float()
    # uint8 quantisation leaves sums slightly off 1: renormalise (all-zero pixels stay zero = invalid).
    return a / a.sum(1, keepdim=True).clamp_min(1e-6)
