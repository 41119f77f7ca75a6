import click

from facepipe.cli import CONTEXT


@click.group("rnorm", context_settings=CONTEXT, invoke_without_command=True)
@click.option("--arch", default="teacher", show_default=True, help="Registered architecture.")
@click.option("--size", type=int, default=256, show_default=True, help="Input side s.")
@click.option("--dilations", default=None, help="Dilation rates to measure instead of the default, e.g. 1,2,4,8.")
@click.option("--target", type=float, default=None,
              help="Find the dilation setting whose r/s is closest to this r_norm.")
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
    from facepipe.receptive_field import best_dilations, layer_table, rnorm
    from facepipe.models import create_model

    rep = Reporter(quiet=False)
    kw = {}
    if dilations:
        kw["dilations"] = tuple(int(v) for v in dilations.split(","))
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
    if target is not None:
        b = best_dilations(arch, size, target)
        rep.table(f"dilations for r_norm {target} at s={size}",
                  [("best dilations", ",".join(map(str, b["dilations"]))), ("r", b["r"]),
                   ("r_norm", round(b["r_norm"], 4))], ("", "value"))


COMMANDS = [rnorm_cmd]
