import json
from pathlib import Path

import click

from facepipe.cli import CONTEXT, force_option, quiet_option, reporter
from facepipe.commands.options import POSITIVE, SEED, SIZE, THREADS, dilation_rates, int_list, rnorm_target


@click.group("rnorm", context_settings=CONTEXT, invoke_without_command=True)
@click.option("--arch", default="teacher", show_default=True, help="Registered architecture.")
@click.option("--size", type=SIZE, default=256, show_default=True, help="Input side s.")
@click.option("--dilations", default=None, callback=dilation_rates,
              help="Dilation rates to measure instead of the default, e.g. 1,2,4,8.")
@click.option("--target", default="optimum", show_default=True, callback=rnorm_target,
              help="Find the dilation setting whose r/s is closest to this r_norm; `optimum` is the one our "
                   "sweep measured for --arch (facepipe/assets/rnorm_optimum.json).")
@click.pass_context
def rnorm_cmd(ctx, arch, size, dilations, target):
    """Receptive field r and normalised receptive field r/s of a model, exactly, from its real layers.

    \b
    r is the support of the centre output's gradient in a linearised copy of the network (every path,
    skip and branch included); the per-stage table is the analytic r = 1 + sum (k_eff - 1) * jump
    along registration order. --target searches the model's dilation rates for that r/s.

    \b
    Examples:
      facepipe rnorm --arch teacher --size 256
      facepipe rnorm --arch student --size 256 --target 1.0
    """
    if ctx.invoked_subcommand is not None:
        return
    from facepipe.progress import Reporter
    from facepipe.receptive_field import layer_table, rnorm
    from facepipe.models import create_model

    rep = Reporter(quiet=False)
    kw = {}
    if dilations:
        kw["dilations"] = dilations
    model = create_model(arch, num_classes=2, **kw)
    stages = {}
    for row in layer_table(model):
        stage = row["name"].split(".")[0]
        s = stages.setdefault(stage, {"layers": 0, "k/s/d": [], "jump": row["jump"], "r": 0})
        s["layers"] += 1
        s["k/s/d"].append(f"{row['k']}/{row['stride']}/{row['dilation']}")
        s["r"] = row["r"]
    rep.table(f"{arch}: layers by stage (analytic, registration order)",
              [(k, v["layers"], " ".join(v["k/s/d"][:6]) + (" ..." if len(v["k/s/d"]) > 6 else ""), v["jump"], v["r"])
               for k, v in stages.items()], ("stage", "convs", "k/stride/dilation", "jump in", "r after"))
    r = rnorm(model, size)
    rows = [("r (exact, all paths)", r["r"]), ("s", size), ("r_norm = r/s", round(r["r_norm"], 4)),
            ("dilations", str(model.config.get("dilations")))]
    if r.get("global_context"):
        rows.append(("global pooling", "yes: sees the whole image; r is the local part"))
    rep.table(f"{arch} at {size}x{size}", rows, ("", "value"))
    from facepipe.errors import FacepipeError
    from facepipe.receptive_field import dilations_for

    try:
        dil, b = dilations_for(arch, size, target)
    except FacepipeError as e:
        if target != "optimum":
            raise
        rep.log(str(e))
        return
    what = f"measured optimum {b['target']:.3f} ({b['source']})" \
        if target == "optimum" else f"{b['target']:g}"
    rep.table(f"dilations for r_norm {what} at s={size}",
              [("best dilations", ",".join(map(str, dil))), ("r", b["r"]),
               ("r_norm", round(b["r_norm"], 4))], ("", "value"))


COMMANDS = [rnorm_cmd]


@rnorm_cmd.command("sweep", context_settings=CONTEXT)
@click.argument("cache", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Sweep folder, e.g. runs/rn1.")
@click.option("--sizes", default="128,192,256", show_default=True,
              callback=int_list(SIZE, "128,192,256", multiple_of=8),
              help="Input sizes s (the cache is resampled to each).")
@click.option("--dilations", default="1,2,4,8", show_default=True, callback=dilation_rates,
              help="Rate d given to every dilated context layer: sets r.")
@click.option("--arch", default="teacher", show_default=True, help="Registered model with a `dilations` setting.")
@click.option("--budget", type=POSITIVE, default=300, show_default=True,
              help="Training seconds per cell (epochs = what the budget buys at the timed step speed).")
@click.option("--epochs", type=click.IntRange(min=0), default=0, help="Fixed epochs per cell instead of --budget.")
@click.option("--loss", type=click.Choice(["ce", "center", "sc", "sc-all"]), default="sc", show_default=True)
@click.option("--heatmap/--no-heatmap", default=True, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Cells trained at once (threads are split between them).")
@click.option("--threads", type=THREADS, default=0, show_default="all cores")
@click.option("--device", default="auto", show_default=True)
@force_option
@quiet_option
def sweep_cmd(cache, out, sizes, dilations, arch, budget, epochs, loss, heatmap, seed, jobs, threads, device, force,
              quiet):
    """Train one model per (size, receptive field) cell and find the best r_norm = r/s.

    \b
    Every cell: same seed and training budget, scored on the cache's test split in photo coordinates.
    Writes sweep.json, table.md and sweep.png (F1 over r and s, lines of constant r/s). Cells are
    resumable: rerun the same command after an interrupt.

    \b
    Examples:
      facepipe rnorm sweep data/fasseg.h5 --out runs/rn-teacher --arch teacher-small --budget 120 --jobs 2
      facepipe rnorm sweep data/fasseg.h5 --out runs/rn-student --arch student --epochs 30
    """
    from facepipe.rnorm_sweep import SweepConfig, run_sweep

    cfg = SweepConfig(cache=cache, out=out, sizes=sizes, dilations=dilations, arch=arch, budget=budget,
                      epochs=epochs, loss=loss, heatmap=heatmap, seed=seed, jobs=jobs, threads=threads,
                      device=device, force=force)
    rep = reporter(quiet)
    m = run_sweep(cfg, rep)
    res = json.loads((Path(out) / "sweep.json").read_text())
    rows = [(c["s"], c["d"], c["r"], f"{c['r_norm']:.2f}", c["epochs"], f"{c['overall_f1']:.4f}",
             f"{c['pixel_acc']:.4f}") for c in sorted(res["cells"], key=lambda c: (c["s"], c["d"]))]
    rep.table(f"rnorm sweep {arch} -> {out}", rows, ("s", "d", "r", "r/s", "epochs", "overall F1", "pixel acc"))
    rep.table("optimum", [("r/s", f"{m['optimum_rnorm']:.3f} ({res['optimum_from']})"),
                          ("best cell", f"{m['best_cell']} F1 {m['best_f1']:.4f}"),
                          ("figure", str(Path(out) / "sweep.png"))], ("", "value"))
