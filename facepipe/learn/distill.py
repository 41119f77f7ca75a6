"""Stage `distill`: semi-supervised distillation of a teacher into a real-time student (method.md 5).

Loss per step = CE(student, ground truth) on a labelled batch
              + alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) on labelled and unlabelled batches,
averaged over valid pixels: pixels whose teacher confidence is below `confidence` are left out. The
teacher's outputs on labelled faces are computed once at the start; on unlabelled faces they come from
`facepipe pseudolabel` (stored probabilities, read through data.pseudo_file; T = 1 uses them directly,
T != 1 re-tempers them). This module supplies the batches and the loss; the epoch loop, run layout,
resume and checkpoints are the engine's (facepipe.learn.engine), as for `train`. So is running under
torchrun: --batch-size and --unlabeled-batch are global batches shared out among the ranks, losses are
normalised over the whole batch (each rank's loss is world x its share, so DDP's gradient average is the
one-process gradient), BatchNorm is per rank on CPU and SyncBatchNorm on GPUs. Every rank computes the
teacher's outputs on all labelled faces (once, cheap next to training).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facepipe.data.face_cache import FaceCache, check_outside_photo, to_input
from facepipe.data.pseudo_file import PseudoFile, default_output, read_pseudo_manifest
from facepipe.infer.checkpoint import load_checkpoint, run_checkpoint, warm_start
from facepipe.infer.model import LoadedModel
from facepipe.learn.augment import NONE, augment, training_recipe
from facepipe.learn.engine import Amp, Run, RunSpec, start_ranks, val_split
from facepipe.models import create_model
from facepipe.util.align_spec import DEFAULT_IOD
from facepipe.util.device import channels_last
from facepipe.util.distributed import Dist
from facepipe.util.errors import FacepipeError
from facepipe.util.manifest import config_dict, file_sha256
from facepipe.util.progress import SILENT, Reporter


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
    # Labelled crop pixels outside the photo (black fill): "ignore" leaves them out of both losses (label
    # 255, no teacher target), "edge" does so except beyond the photo's background (where the label stays
    # background; data.face_cache.fill_outside_photo), "label" keeps the cache's label there and the
    # teacher's answer on the fill.
    outside_photo: str = "label"
    epochs: int = 60
    batch_size: int = 8  # global batches: under torchrun each of N ranks takes 1/N of them
    unlabeled_batch: int = 8
    lr: float = 4e-3
    weight_decay: float = 1e-4
    val_split: str = "auto"
    val_every: int = 5
    augment: str = "wild"  # none | basic | wild, optionally with fields set: "wild,paste=0" (learn.augment)
    backgrounds: str | None = None  # a `backgrounds` output: faces pasted onto its photos (wild)
    init: str | None = None  # warm start: a student run, checkpoint file or bundled name with the same network
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
    labeled, unl = cfg.labeled, cfg.unlabeled
    if not teacher.is_dir():  # a checkpoint file or bundled name: no run folder to find the inputs in
        missing = ["--labeled CACHE" if labeled is None else "",
                   f"--unlabeled PSEUDO.h5 (`facepipe pseudolabel --teacher {cfg.teacher} UNLABELED.h5 "
                   f"PSEUDO.h5`) or --unlabeled none" if unl is None else ""]
        if any(missing):
            raise FacepipeError(f"--teacher {cfg.teacher} is a checkpoint, not a run folder: pass "
                                + " and ".join(m for m in missing if m) + ".")
    if labeled is None:
        tc = teacher / "config.json"
        if not tc.exists():
            raise FacepipeError(f"{teacher} has no config.json to find its training cache; pass --labeled CACHE.")
        labeled = json.loads(tc.read_text())["cache"]
    if not Path(labeled).exists():
        raise FacepipeError(f"labelled cache {labeled} not found; pass --labeled CACHE.")
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
    # The teacher first: a mistyped teacher is then named as such, not as a run without config.json.
    check_outside_photo(cfg.outside_photo)
    t_ck_path = run_checkpoint(cfg.teacher, "best")
    labeled, unl = resolve_inputs(cfg)
    t_ck = load_checkpoint(t_ck_path)
    heat = bool(t_ck["heatmap"])
    device, d = start_ranks(cfg.device, cfg.threads, (cfg.batch_size, cfg.unlabeled_batch))
    lab_ds = FaceCache(labeled, split="train", heatmap=heat, outside=cfg.outside_photo)
    check_inputs(t_ck, lab_ds, labeled, unl, reporter)
    schema = lab_ds.schema
    vsplit = val_split(cfg.val_split, lab_ds.file)
    val_ds = FaceCache(labeled, split=vsplit, heatmap=heat) if vsplit else None
    recipe = training_recipe(cfg.augment, cfg.backgrounds, lab_ds.size, cfg.seed, schema, reporter)
    config = config_dict(cfg)
    if cfg.outside_photo == "label":  # recorded only when set: runs made before the option still resume
        del config["outside_photo"]
    config.update({"labeled_resolved": str(Path(labeled).resolve()),
                   "unlabeled_resolved": unl and str(Path(unl).resolve()),
                   "teacher_checkpoint_sha256": file_sha256(t_ck_path)})
    if cfg.init is None:
        del config["init"]  # absent when unused: runs made before --init existed still resume
    # A trial build before the run folder is claimed, so settings the model refuses, or an --init of
    # another network, leave no half-made run behind; the RNG is put back, so the seeded build below
    # initialises exactly as before.
    with torch.random.fork_rng(devices=[]):
        trial = create_model(cfg.arch, num_classes=schema.num_classes, in_channels=4 if heat else 3,
                             **cfg.model_kwargs)
        if cfg.init:
            config["init_sha256"] = warm_start(trial, cfg.init, cfg.arch, schema, heat)
    spec = RunSpec("distill", Path(cfg.out), config, cfg.force, cfg.arch, schema, lab_ds.size, heat,
                   student_align(t_ck, lab_ds), cfg.epochs, cfg.lr, cfg.seed,
                   cfg.val_every, labeled, cfg.final_eval, "distillation diverged at epoch {epoch}; lower --lr.")
    with Run(spec, device, d, reporter, val_ds) as run:
        if run.done:
            return run.manifest
        run.write_config({**asdict(cfg), "labeled": labeled, "unlabeled": unl, "cache": labeled, "heatmap": heat,
                          "val_split_used": vsplit})
        torch.manual_seed(cfg.seed)  # the teacher's build draws first, then the student's
        teacher = LoadedModel.from_checkpoint(t_ck, t_ck_path, device)
        faces = _Faces(cfg, lab_ds, teacher_targets(teacher, lab_ds, reporter), device, recipe, d)
        del teacher
        faces.unlabeled = PseudoFile(unl) if unl else None
        model = create_model(cfg.arch, num_classes=schema.num_classes, in_channels=4 if heat else 3,
                             **cfg.model_kwargs)
        if cfg.init:  # the weights the trial build loaded; a resumed run then loads its last.pt over them
            model.load_state_dict(trial.state_dict())
        model = channels_last(model.to(device))
        amp = student_amp(device, cfg.amp)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        run.attach(model, opt, find_unused=True)  # the feature projection gets no gradient
        try:
            run.fit(faces.epoch, partial(_loss, cfg=cfg, amp=amp, d=d), faces.steps_per_epoch, amp)
        finally:
            faces.close()  # the pseudo-label file, on Ctrl-C and errors too
        counts = {"labeled_faces": len(faces.idx), "unlabeled_faces": faces.n_unl}
        return run.finish(inputs={"teacher": str(t_ck_path.resolve()), "labeled": labeled, "unlabeled": unl},
                          counts=counts)


def check_inputs(t_ck: dict, lab_ds: FaceCache, labeled: str, unl: str | None, reporter: Reporter = SILENT) -> None:
    """Refused before a run exists: a teacher or pseudo-labels with other classes than the labelled cache's
    (the student learns one set of classes from all three), and pseudo-labels of another crop side than
    the labelled crops (a student fed two sides learns two scales; the networks are fully convolutional,
    so nothing else would complain). A teacher of another side is fine: it labels the crops resampled to
    its own side (LoadedModel.predict_at_own_side), as `pseudolabel` does."""
    size, classes = lab_ds.size, tuple(lab_ds.schema.classes)
    _same_classes("the teacher", tuple(t_ck["schema"]["classes"]), labeled, classes)
    if unl:
        pf = PseudoFile(unl)
        try:
            _same_classes(unl, tuple(pf.schema.classes), labeled, classes)
            if pf.size != size:
                raise FacepipeError(f"{unl} holds {pf.size}px faces but {labeled} {size}px ones; pseudo-label "
                                    f"a cache aligned with --size {size}.")
        finally:
            pf.close()
    t = (t_ck.get("align") or {}).get("size") or t_ck.get("size")
    if t and int(t) != size:
        reporter.log(f"the teacher was trained on {t}px crops: it labels {labeled}'s {size}px crops resampled "
                     f"to {t}px, the student learns at {size}px.")


def _same_classes(what: str, theirs: tuple, labeled: str, classes: tuple) -> None:
    if theirs != classes:
        raise FacepipeError(f"{what} predicts {', '.join(theirs)} but {labeled} is labelled {', '.join(classes)}: "
                            "distill from a teacher trained on the labelled cache's classes.")


def student_align(t_ck: dict, lab_ds: FaceCache) -> dict:
    """How the student's crops are cut (what `parse` cuts for it): the labelled cache's, which it learns
    from, as `train` records; the teacher's may be another side or turn shift. A cache that does not
    record it: the teacher's, at the cache's side."""
    return lab_ds.file.manifest.get("align") or {**(t_ck.get("align") or {"iod": DEFAULT_IOD}), "size": lab_ds.size}


def student_amp(device, enabled: bool) -> Amp:
    """fp16 on CUDA; fp32 on every CPU. bf16 autocast made the student's loss non-finite at random (2 of
    4 identical 1-epoch runs on a Zen 4; 0 of 4 in fp32) and is no faster for so small a network
    (docs/results.md, "The default student, one more cycle")."""
    return Amp(device, enabled and device.type != "cpu")


def teacher_targets(teacher: LoadedModel, ds: FaceCache, reporter: Reporter) -> tuple:
    """(rows, images, heatmaps or None, labels, teacher probabilities as uint8 like the stored
    pseudo-labels) of the labelled faces, in row order; the teacher runs once, with flip TTA. Where
    `ds.outside` left a pixel outside the photo unlabelled (255), its probabilities are 0 too."""
    idx = np.sort(ds.indices)
    images, heat, labels = ds.batch(idx)
    probs = np.zeros((len(idx), teacher.schema.num_classes) + images.shape[1:3], np.uint8)
    with reporter.task("teacher on labelled faces", len(idx)) as adv:
        for a in range(0, len(idx), 8):
            x = to_input(images[a:a + 8], heat[a:a + 8] if heat is not None else None)
            probs[a:a + 8] = teacher.predict_uint8(x, tta_flip=True)
            adv(len(x))
    if ds.outside != "label":
        dropped = (labels == 255) & ~ds.file.inside_photo(idx)
        probs *= ~dropped[:, None]
    return idx, images, heat, labels, probs


class _Faces:
    """The batches of one step: a labelled batch with its teacher targets, and a pseudo-labelled batch.

    Per epoch, the labelled order and then the unlabelled order are drawn from the epoch's generator,
    then each step's augmentation draws, labelled batch first. Unlabelled batches run on through the
    shuffled faces step after step (their position follows the global step) and start over when a
    batch would run past the end."""

    def __init__(self, cfg: DistillConfig, ds: FaceCache, targets: tuple, device, recipe, d: Dist | None):
        self.cfg, self.device, self.recipe = cfg, device, recipe
        self.idx, self.images, self.heat, self.labels, self.probs = targets
        self.flip_perm = torch.as_tensor(ds.schema.flip_permutation().astype(np.int64))
        self.steps_per_epoch = max(1, len(self.idx) // cfg.batch_size)
        scale = 1 if d is None else d.world
        self.per, self.uper = cfg.batch_size // scale, cfg.unlabeled_batch // scale
        self.first, self.ufirst = (d.rank * self.per, d.rank * self.uper) if d else (0, 0)
        self.part = (self.first, cfg.batch_size) if d else None  # augmentation draws for the global batch
        self.upart = (self.ufirst, cfg.unlabeled_batch) if d else None
        self.unlabeled: PseudoFile | None = None

    @property
    def n_unl(self) -> int:
        return len(self.unlabeled) if self.unlabeled is not None else 0

    def epoch(self, epoch: int, g: torch.Generator, step: int):
        cfg = self.cfg
        order = torch.randperm(len(self.idx), generator=g).numpy()
        uorder = torch.randperm(self.n_unl, generator=g).numpy() if self.n_unl else None
        for b in range(self.steps_per_epoch):
            sel = np.sort(order[b * cfg.batch_size:(b + 1) * cfg.batch_size])[self.first:self.first + self.per]
            x = to_input(self.images[sel], self.heat[sel] if self.heat is not None else None).to(self.device)
            y = torch.from_numpy(self.labels[sel].astype(np.int64)).to(self.device)
            p = _probs(self.probs[sel]).to(self.device)
            if self.recipe[0] != NONE:
                x, y, p = self._augment(x, y, p, g, self.part)
            xu = pu = None
            if self.n_unl and cfg.alpha > 0:
                xu, pu = self._unlabeled(uorder, step + b, g)
            yield x, y, p, xu, pu

    def _unlabeled(self, uorder, step: int, g: torch.Generator):
        ub, u = self.cfg.unlabeled_batch, self.unlabeled
        us = np.sort(uorder[(step * ub) % self.n_unl:][:ub])
        if len(us) < ub:
            us = np.sort(uorder[:ub])
        us = us[self.ufirst:self.ufirst + self.uper]
        xu = to_input(u.read("images", us), u.read("heatmaps", us) if self.heat is not None else None).to(self.device)
        pu = _probs(u.read("probs", us)).to(self.device)
        if self.recipe[0] != NONE:
            xu, _, pu = self._augment(xu, None, pu, g, self.upart)
        return xu, pu

    def _augment(self, x, y, p, g, part):
        aug_cfg, bank, aug_ids = self.recipe
        return augment(x, y, self.flip_perm, aug_cfg, g, soft=p, part=part, bank=bank, ids=aug_ids)

    def close(self) -> None:
        if self.unlabeled is not None:
            self.unlabeled.close()


def _loss(net, batch, cfg: DistillConfig, amp: Amp, d: Dist | None):
    """CE on the labelled batch + alpha x KD on the labelled (unless --no-kd-labeled) and unlabelled ones."""
    scale = 1 if d is None else d.world  # logged parts are shares: loss / world
    x, y, p, xu, pu = batch
    thr = max(cfg.confidence, 1e-3)
    with amp.autocast():
        logits = net(channels_last(x)).float()
    ce = ce_loss(logits, y, d)
    loss, parts = ce, {"ce": ce.item() / scale}
    if cfg.kd_labeled and cfg.alpha > 0:
        kd_l = kd_loss(logits, p, cfg.temperature, (p.max(1).values >= thr).float(), d)
        loss = loss + cfg.alpha * kd_l
        parts["kd_labeled"] = kd_l.item() / scale
    if xu is not None:
        valid = (pu.max(1).values >= thr).float()
        with amp.autocast():
            logits_u = net(channels_last(xu)).float()
        kd_u = kd_loss(logits_u, pu, cfg.temperature, valid, d)
        loss = loss + cfg.alpha * kd_u
        parts["kd_unlabeled"] = kd_u.item() / scale
    parts["total"] = loss.item() / scale
    return loss, parts


def _probs(stored: np.ndarray) -> torch.Tensor:
    a = torch.from_numpy(np.asarray(stored)).float()
    # uint8 quantisation leaves sums slightly off 1: renormalise (all-zero pixels stay zero = invalid).
    return a / a.sum(1, keepdim=True).clamp_min(1e-6)
