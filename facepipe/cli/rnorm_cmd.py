import json
from pathlib import Path

import click

from facepipe.analysis.rnorm_sweep import SAME_F1, SweepConfig, run_sweep
from facepipe.analysis.rnorm_table import rnorm_tables, sweep_tables
from facepipe.cli.options import (
    CONTEXT,
    POSITIVE,
    SEED,
    SIZE,
    THREADS,
    comma,
    config_from,
    dilation_rates,
    field_option,
    force_option,
    int_list,
    quiet_option,
    reporter,
    rnorm_target,
)
from facepipe.util.progress import Reporter


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
    rep = Reporter(quiet=False)
    for t in rnorm_tables(arch, size, dilations, target):
        if isinstance(t, str):  # no measured optimum for this architecture: why, instead of the table
            rep.log(t)
        else:
            rep.table(*t)


COMMANDS = [rnorm_cmd]


@rnorm_cmd.command("sweep", context_settings=CONTEXT)
@click.argument("cache", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Sweep folder, e.g. runs/rn1.")
@field_option(SweepConfig, "sizes", "--sizes", render=comma, callback=int_list(SIZE, "128,192,256", multiple_of=8),
              help="Input sizes s (the cache is resampled to each).")
@field_option(SweepConfig, "dilations", "--dilations", render=comma, callback=dilation_rates,
              help="Rate d given to every dilated context layer: sets r.")
@field_option(SweepConfig, "arch", "--arch", help="Registered model with a `dilations` setting.")
# --help has shown 300 since the option exists; SweepConfig's 300.0 is the same number once click converts it.
@field_option(SweepConfig, "budget", "--budget", type=POSITIVE, default=300,
              help="Training seconds per cell (epochs = what the budget buys at the timed step speed).")
@field_option(SweepConfig, "epochs", "--epochs", type=click.IntRange(min=1), default=None,
              help="Fixed epochs per cell instead of --budget.")
@field_option(SweepConfig, "loss", "--loss", type=click.Choice(["ce", "center", "sc", "sc-all"]))
@field_option(SweepConfig, "heatmap", "--heatmap/--no-heatmap")
@field_option(SweepConfig, "seed", "--seed", type=SEED)
@field_option(SweepConfig, "jobs", "--jobs", type=click.IntRange(min=1),
              help="Cells trained at once (threads are split between them).")
@field_option(SweepConfig, "threads", "--threads", type=THREADS, show_default="all cores")
@field_option(SweepConfig, "device", "--device")
@force_option
@quiet_option
def sweep_cmd(quiet, **kw):
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
    kw["epochs"] = kw["epochs"] or 0  # 0: --budget decides
    cfg = config_from(SweepConfig, kw)
    rep = reporter(quiet)
    m = run_sweep(cfg, rep)
    for t in sweep_tables(cfg.out, m, cfg.arch):
        rep.table(*t)
    if json.loads((Path(cfg.out) / "sweep.json").read_text()).get("optimum_from") == SAME_F1:
        rep.log(f"[yellow]no optimum r/s: {SAME_F1.split(': ', 1)[1]}; --epochs or --budget[/]")
