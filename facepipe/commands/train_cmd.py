import json

import click

from facepipe.cli import CONTEXT, force_option, quiet_option, reporter, run_summary
from facepipe.commands.options import (BATCH, EPOCHS, NON_NEGATIVE, POSITIVE, SEED, THREADS, WORKERS, dilation_rates,
                                       rnorm_target)


def rnorm_option(f):
    return click.option("--rnorm", "rnorm_target", default=None, callback=rnorm_target,
                        help="Set the dilations so that r/s is closest to this (a number, or `optimum`: the "
                             "optimum our r_norm sweep measured for this architecture). Not with --dilations.")(f)


def dilations_for_rnorm(arch, size, target, dilations):
    """--rnorm -> dilation rates for `arch` at input `size` (None when --rnorm is not given)."""
    if target is None:
        return dilations
    if dilations:
        raise click.UsageError("give --dilations or --rnorm, not both.")
    from facepipe.receptive_field import dilations_for

    return dilations_for(arch, size, target)[0]


def amp_option(f):
    return click.option("--amp/--no-amp", default=True, show_default=True,
                        help="Mixed precision: fp16 on CUDA, bf16 on CPUs with native bf16 (AVX512-BF16/AMX); "
                             "fp32 elsewhere.")(f)


def augment_options(f):
    """--augment and --backgrounds, shared by train and distill."""
    f = click.option("--backgrounds", type=click.Path(file_okay=False), default=None,
                     help="A `facepipe backgrounds` folder: the wild recipe pastes faces onto its photos.")(f)
    return click.option("--augment", type=click.Choice(["none", "basic", "wild"]), default="wild",
                        show_default=True,
                        help="basic: flips, pose jitter, brightness/contrast. wild: basic with more pose "
                             "and scale, faces on --backgrounds photos, hair recoloured, grayscale, hue, "
                             "shadows, blur, noise, JPEG.")(f)


def build_model_kwargs(dilations, width, extra_json):
    try:
        kw = json.loads(extra_json) if extra_json else {}
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not JSON ({e.msg}); e.g. '{{\"refine\": 8}}'", param_hint="--model-kwargs") from None
    if not isinstance(kw, dict):
        raise click.BadParameter("give a JSON object, e.g. '{\"refine\": 8}'", param_hint="--model-kwargs")
    if dilations:
        kw["dilations"] = list(dilations)
    if width:
        kw["width"] = width
    return kw


@click.command("train", context_settings=CONTEXT)
@click.argument("cache", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder, e.g. runs/t1.")
@click.option("--arch", default="teacher", show_default=True, help="Registered model (see `facepipe models`).")
@click.option("--dilations", callback=dilation_rates, default=None,
              help="Dilation rates of the higher layers, e.g. 2,4,8,1 (sets the receptive field).")
@rnorm_option
@click.option("--width", type=click.IntRange(min=1), default=None, help="Base channel width of the model.")
@click.option("--model-kwargs", default=None, help="Extra model kwargs as JSON.")
@click.option("--loss", type=click.Choice(["ce", "center", "sc", "sc-all"]), default="sc", show_default=True,
              help="Cross entropy alone, + center loss, + statistical contextual loss (closest pair / all pairs).")
@click.option("--loss-weight", type=NON_NEGATIVE, default=0.005, show_default=True, help="Weight of the center/sc term.")
@click.option("--loss-warmup", type=click.IntRange(min=0), default=200, show_default=True, help="Iterations before it applies.")
@click.option("--heatmap/--no-heatmap", default=True, show_default=True, help="Landmark heatmap input channel.")
@click.option("--epochs", type=EPOCHS, default=100, show_default=True)
@click.option("--batch-size", type=BATCH, default=8, show_default=True)
@click.option("--lr", type=POSITIVE, default=2e-3, show_default=True)
@click.option("--val-split", default="auto", show_default=True,
              help="Split for model selection: a name, none, or auto (val when present).")
@augment_options
@click.option("--no-augment", is_flag=True, help="Same as --augment none.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--threads", type=THREADS, default=0, show_default="all cores")
@click.option("--workers", type=WORKERS, default=0, show_default=True, help="DataLoader workers for big caches.")
@amp_option
@force_option
@quiet_option
def train_cmd(cache, out, arch, dilations, rnorm_target, width, model_kwargs: str, loss, loss_weight, loss_warmup, heatmap,
              epochs, batch_size, lr, val_split, augment, backgrounds, no_augment, seed, device, threads, workers, amp, force, quiet):
    """Train a parser on a labelled cache (defaults: the documented teacher recipe).

    \b
    Writes config.json, metrics.jsonl, checkpoints/{last,best}.pt, curves.png and, when the cache has
    a test split, eval.json (scored in photo coordinates). Rerun the same command to continue after
    an interrupt.

    \b
    Examples:
      facepipe train data/fasseg.h5 --out runs/t1 --backgrounds data/backgrounds
      facepipe train data/fasseg.h5 --out runs/ce --loss ce --no-heatmap --epochs 20
      facepipe train data/fasseg.h5 --out runs/t-opt --rnorm optimum
      torchrun --nproc-per-node 2 -m facepipe train data/fasseg.h5 --out runs/t2
    """
    from facepipe.train import TrainConfig, train

    if rnorm_target is not None:
        from facepipe.cache import read_cache_manifest

        dilations = dilations_for_rnorm(arch, int(read_cache_manifest(cache)["size"]), rnorm_target, dilations)
    kw = build_model_kwargs(dilations, width, model_kwargs)
    cfg = TrainConfig(cache=cache, out=out, arch=arch, model_kwargs=kw, heatmap=heatmap, loss=loss,
                      loss_weight=loss_weight, loss_warmup=loss_warmup, epochs=epochs, batch_size=batch_size,
                      lr=lr, val_split=val_split, augment="none" if no_augment else augment,
                      backgrounds=backgrounds, seed=seed, device=device,
                      threads=threads, workers=workers, amp=amp, force=force)
    rep = reporter(quiet)
    m = train(cfg, rep)
    rep.table(f"train {arch} -> {out}", run_summary(m), ("", "value"))


COMMANDS = [train_cmd]
