"""`facepipe rnorm sweep`: the paper's normalized-receptive-field experiment (method.md 3, figure 2).

An orchestrator, like facepipe/demo.py: every cell is a whole `train` run (its resumable run folder,
its final eval), so the sweep drives the train stage rather than being a stage beside it.

One model per (input size s, dilation rate d) cell, same seed, same training budget, each scored on the
cache's test split in photo coordinates. The knob: every dilated layer of the model's context block gets
rate d, so r grows with d while s stays fixed; r is measured exactly (receptive_field.py).

runs/NAME/
  caches/s128.h5 ...      the input cache resampled to each size (resample.py)
  plans/s128-d2.json      epochs chosen for the cell's budget (timed once, so a resumed cell keeps them)
  cells/s128-d2/          a `train` run folder per cell (resumable on its own)
  sweep.json, table.md    every cell: s, d, r, r/s, epochs, seconds, F1s; the fits below
  sweep.png               F1 over r (x) and s (y), lines of constant r/s through the origin
  manifest.json           written last

Is r/s the variable that matters? F1 is fitted as a quadratic in log(r/s), in log(r) and in log(s); the
R^2 of each says how much of the spread each explains. The optimum is the vertex of the log(r/s) fit when
it is a maximum inside the measured range, else the best cell's r/s. "Spread along" the constant-r/s
lines is the residual standard deviation of that fit; "spread across" them is the standard deviation of
the fitted values.
"""
from __future__ import annotations

import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from facepipe.analysis.receptive_field import rnorm
from facepipe.data.face_cache import FaceCache, read_cache_manifest
from facepipe.data.resample import check_size, resample_cache
from facepipe.learn.losses import build_criterion
from facepipe.learn.train import TrainConfig, train
from facepipe.models import create_model
from facepipe.util.atomic import atomic_path, write_json, write_text
from facepipe.util.device import pick_device, set_threads
from facepipe.util.errors import FacepipeError
from facepipe.util.interrupt import stop_pool
from facepipe.util.manifest import StageOutput, config_dict
from facepipe.util.progress import SILENT, Reporter


@dataclass(frozen=True)
class SweepConfig:
    cache: str
    out: str = field(metadata={"identity": False})
    sizes: tuple = (128, 192, 256)
    dilations: tuple = (1, 2, 4, 8)
    arch: str = "teacher"
    budget: float = 300.0  # seconds of training per cell
    epochs: int = 0  # > 0: this many epochs per cell instead of a time budget
    loss: str = "sc"
    heatmap: bool = True
    seed: int = 0
    jobs: int = field(default=1, metadata={"identity": False})
    threads: int = field(default=0, metadata={"identity": False})
    device: str = field(default="auto", metadata={"identity": False})
    force: bool = field(default=False, metadata={"identity": False})


def cell_name(size: int, d: int) -> str:
    return f"s{size}-d{d}"


def cell_dilations(arch: str, d: int) -> tuple[int, ...]:
    default = create_model(arch, num_classes=2).config.get("dilations")
    if default is None:
        raise FacepipeError(f"model {arch!r} has no `dilations` to sweep; try teacher, teacher-small or student.")
    return (int(d),) * len(default)


def step_seconds(arch: str, size: int, batch: int, num_classes: int, heatmap: bool, loss: str,
                 dilations, device, steps: int = 3) -> float:
    """Seconds per training step (forward, loss, backward, update) on random data, after one warm-up."""
    torch.manual_seed(0)
    cin = 4 if heatmap else 3
    model = create_model(arch, num_classes=num_classes, in_channels=cin, dilations=dilations).to(device).train()
    x = torch.randn(batch, cin, size, size, device=device)
    y = torch.randint(0, num_classes, (batch, size, size), device=device)
    _, feat = model(x[:1], return_features=True)
    crit = build_criterion(loss, num_classes, feat.shape[1], warmup=0)
    if isinstance(crit, torch.nn.Module):
        crit.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        logits, feats = model(x, return_features=True)
        loss_v, _ = crit(logits, feats, y)
        opt.zero_grad()
        loss_v.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def plan_cell(cfg: SweepConfig, size: int, d: int, cache_s: Path, device) -> dict:
    """Epochs for the cell: fixed, or what the budget buys at the measured step time (+10% for data and
    augmentation). Written once, so a resumed sweep trains each cell to the same schedule."""
    path = Path(cfg.out) / "plans" / f"{cell_name(size, d)}.json"
    if path.exists():
        return json.loads(path.read_text())
    dil = cell_dilations(cfg.arch, d)
    bs = TrainConfig.batch_size
    ds = FaceCache(cache_s, split="train", heatmap=cfg.heatmap)
    steps_per_epoch = max(1, len(ds) // bs)
    plan = {"size": size, "d": d, "dilations": list(dil), "steps_per_epoch": steps_per_epoch}
    if cfg.epochs > 0:
        plan["epochs"] = cfg.epochs
    else:
        t = step_seconds(cfg.arch, size, bs, ds.schema.num_classes, cfg.heatmap, cfg.loss, dil, device)
        epoch_s = t * steps_per_epoch * 1.1
        plan.update(step_seconds=round(t, 4), epochs=max(1, int(cfg.budget // epoch_s)))
    write_json(path, plan)
    return plan


def run_cell(cfg_dict: dict, size: int, d: int, threads: int) -> dict:
    """One cell, in its own process: plan, train (resumable), read the test scores."""
    cfg = SweepConfig(**cfg_dict)
    set_threads(threads)
    device = pick_device(cfg.device)
    out = Path(cfg.out)
    cache_s = out / "caches" / f"s{size}.h5"
    plan = plan_cell(cfg, size, d, cache_s, device)
    dil = tuple(plan["dilations"])
    run = out / "cells" / cell_name(size, d)
    tcfg = TrainConfig(cache=str(cache_s), out=str(run), arch=cfg.arch, model_kwargs={"dilations": list(dil)},
                       heatmap=cfg.heatmap, loss=cfg.loss, epochs=plan["epochs"], seed=cfg.seed,
                       loss_warmup=min(TrainConfig.loss_warmup, plan["epochs"] * plan["steps_per_epoch"] // 4),
                       val_split="none", device=cfg.device, threads=threads)
    t0 = time.time()
    train(tcfg)
    ev = json.loads((run / "eval.json").read_text())
    secs = sum(json.loads(l)["seconds"] for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip())
    r = rnorm(cfg.arch, size, dilations=dil)["r"]
    return {"cell": cell_name(size, d), "s": size, "d": d, "dilations": list(dil), "r": r, "r_norm": r / size,
            "epochs": plan["epochs"], "train_seconds": round(secs, 1), "wall_seconds": round(time.time() - t0, 1),
            "overall_f1": ev["overall_f1"], "pixel_acc": ev["pixel_acc"], "mean_f1": ev["mean_f1"],
            "per_class_f1": ev["per_class_f1"], "coords": ev["coords"]}


def _quad_fit(x: np.ndarray, y: np.ndarray) -> dict:
    """y ~ a x^2 + b x + c; R^2, residual std and the vertex."""
    if len(set(np.round(x, 9))) < 3:
        return {"r2": float("nan"), "resid_std": float("nan"), "fitted_std": float("nan"), "coef": None}
    coef = np.polyfit(x, y, 2)
    fit = np.polyval(coef, x)
    ss_res, ss_tot = float(((y - fit) ** 2).sum()), float(((y - y.mean()) ** 2).sum())
    return {"coef": coef.tolist(), "r2": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
            "resid_std": float(np.std(y - fit)), "fitted_std": float(np.std(fit))}


SAME_F1 = "none measured: every cell scored the same overall F1 (train the cells longer)"


def analyse(cells: list[dict]) -> dict:
    f1 = np.array([c["overall_f1"] for c in cells])
    lr = np.log([c["r_norm"] for c in cells])
    fits = {"log_rnorm": _quad_fit(lr, f1), "log_r": _quad_fit(np.log([c["r"] for c in cells]), f1),
            "log_s": _quad_fit(np.log([c["s"] for c in cells]), f1)}
    best = max(cells, key=lambda c: c["overall_f1"])
    opt, how = best["r_norm"], "best cell"
    coef = fits["log_rnorm"]["coef"]
    # Every cell alike (untrained cells all score 0): the numbers say nothing of r/s.
    if len(cells) > 1 and np.ptp(f1) == 0:
        how = SAME_F1
    elif coef is not None and coef[0] < 0:
        v = -coef[1] / (2 * coef[0])
        if lr.min() <= v <= lr.max():
            opt, how = float(math.exp(v)), "vertex of the quadratic fit in log(r/s)"
    per_size = {}
    for c in cells:
        if c["s"] not in per_size or c["overall_f1"] > per_size[c["s"]]["overall_f1"]:
            per_size[c["s"]] = c
    return {"best_cell": best["cell"], "best_f1": best["overall_f1"], "optimum_rnorm": opt, "optimum_from": how,
            "fits": fits, "spread_along": fits["log_rnorm"]["resid_std"],
            "spread_across": fits["log_rnorm"]["fitted_std"],
            "best_rnorm_per_size": {str(s): round(c["r_norm"], 4) for s, c in sorted(per_size.items())}}


def table_md(cells: list[dict], a: dict) -> str:
    rows = ["| s | d | r | r/s | epochs | train s | overall F1 | pixel acc | eyes | nose | mouth |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in sorted(cells, key=lambda c: (c["s"], c["d"])):
        p = c["per_class_f1"]
        rows.append(f"| {c['s']} | {c['d']} | {c['r']} | {c['r_norm']:.2f} | {c['epochs']} | {c['train_seconds']:.0f} | "
                    f"{c['overall_f1']:.4f} | {c['pixel_acc']:.4f} | {p.get('eyes', float('nan')):.3f} | "
                    f"{p.get('nose', float('nan')):.3f} | {p.get('mouth', float('nan')):.3f} |")
    f = a["fits"]
    opt = "none" if a["optimum_from"] == SAME_F1 else f"{a['optimum_rnorm']:.3f}"
    rows += ["", f"Optimum r/s: {opt} ({a['optimum_from']}); best cell {a['best_cell']} "
                 f"(F1 {a['best_f1']:.4f}).",
             f"R^2 of a quadratic fit of F1 in log(r/s): {f['log_rnorm']['r2']:.3f}; in log(r): "
             f"{f['log_r']['r2']:.3f}; in log(s): {f['log_s']['r2']:.3f}.",
             f"Spread of F1 along constant-r/s lines (residual std) {a['spread_along']:.4f} vs across them "
             f"(std of the fit) {a['spread_across']:.4f}.",
             "Best r/s per size: " + ", ".join(f"s={k}: {v}" for k, v in a["best_rnorm_per_size"].items()) + "."]
    return "\n".join(rows) + "\n"


def figure(cells: list[dict], a: dict, path: Path, title: str) -> None:
    import matplotlib  # heavy, and only the sweep's figure needs it

    matplotlib.use("Agg")  # no display; must come before pyplot's import
    import matplotlib.pyplot as plt  # after use("Agg")

    r = np.array([c["r"] for c in cells], float)
    s = np.array([c["s"] for c in cells], float)
    f1 = np.array([c["overall_f1"] for c in cells])
    fig, ax = plt.subplots(figsize=(7, 5))
    xmax, ymax = r.max() * 1.1, s.max() * 1.2
    for k in (0.5, 1, 2, 4):
        ax.plot([0, xmax], [0, xmax / k], color="0.8", lw=0.8, ls="--", zorder=0)
        # label each line inside the axes, where it leaves the plot's right or top edge
        y = min(xmax / k, ymax) * 0.96
        ax.text(y * k, y, f"r/s={k:g} ", color="0.45", fontsize=8, ha="right", va="top")
    o = a["optimum_rnorm"]
    ax.plot([0, xmax], [0, xmax / o], color="tab:red", lw=1.2, label=f"optimum r/s = {o:.2f}")
    sc = ax.scatter(r, s, c=f1, s=260, cmap="viridis", edgecolor="k", zorder=3)
    for x, y, v in zip(r, s, f1):
        ax.annotate(f"{v:.3f}", (x, y), textcoords="offset points", xytext=(0, 12), ha="center", fontsize=8)
    fig.colorbar(sc, ax=ax, label="overall F1 (eyes+nose+mouth, photo coords)")
    ax.set_xlim(0, xmax), ax.set_ylim(0, ymax)
    ax.set_xlabel("receptive field r (px)"), ax.set_ylabel("input size s (px)")
    ax.set_title(title, fontsize=10), ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def run_sweep(cfg: SweepConfig, reporter: Reporter = SILENT) -> dict:
    man = read_cache_manifest(cfg.cache)
    for s in cfg.sizes:
        check_size(s)
    cell_dilations(cfg.arch, 1)  # fails early for a model without dilations
    out = Path(cfg.out)
    config = config_dict(cfg)
    with StageOutput(out, "rnorm-sweep", config, force=cfg.force) as so:
        if so.state == "done":
            return so.manifest
        write_json(out / "config.json", asdict(cfg))
        with reporter.task("resample cache", len(cfg.sizes)) as advance:
            for s in cfg.sizes:
                resample_cache(cfg.cache, out / "caches" / f"s{s}.h5", s)
                advance()
        jobs = max(1, cfg.jobs)
        cores = set_threads(cfg.threads)
        threads = max(1, cores // jobs)
        todo = [(s, d) for s in sorted(cfg.sizes, reverse=True) for d in cfg.dilations]
        cells = []
        cfg_dict = asdict(cfg)
        with reporter.task(f"sweep {len(todo)} cells ({jobs} at a time, {threads} thread(s) each)", len(todo)) as adv:
            if jobs == 1:
                for s, d in todo:
                    cells.append(run_cell(cfg_dict, s, d, threads))
                    adv(1, last=f"{cells[-1]['cell']} F1 {cells[-1]['overall_f1']:.3f}")
            else:
                ex = ProcessPoolExecutor(jobs, mp_context=get_context("spawn"))
                try:  # not `with`: its exit would wait for every cell not yet started after a Ctrl-C
                    futs = [ex.submit(run_cell, cfg_dict, s, d, threads) for s, d in todo]
                    for fu in futs:
                        cells.append(fu.result())
                        adv(1, last=f"{cells[-1]['cell']} F1 {cells[-1]['overall_f1']:.3f}")
                finally:
                    stop_pool(ex)
        a = analyse(cells)
        result = {"arch": cfg.arch, "budget_s": cfg.budget if cfg.epochs <= 0 else None, "cells": cells, **a}
        write_json(out / "sweep.json", result)
        write_text(out / "table.md", table_md(cells, a))
        budget = f"{cfg.epochs} epochs" if cfg.epochs > 0 else f"{cfg.budget:g} s"
        figure(cells, a, out / "sweep.png", f"{cfg.arch}, {budget} per cell, seed {cfg.seed}: "
                                            f"{Path(cfg.cache).name}")
        return so.finish(inputs={"cache": {"path": str(Path(cfg.cache).resolve()), "finished": man.get("finished")}},
                         counts={"cells": len(cells)},
                         extra={"optimum_rnorm": a["optimum_rnorm"], "best_cell": a["best_cell"],
                                "best_f1": a["best_f1"]})
