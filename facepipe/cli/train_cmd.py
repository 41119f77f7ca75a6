import click

from facepipe.cli.options import (
    BATCH,
    CONTEXT,
    EPOCHS,
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    THREADS,
    WORKERS,
    amp_option,
    augment_options,
    build_model_kwargs,
    config_from,
    dilation_rates,
    dilations_for_rnorm,
    field_option,
    init_model,
    force_option,
    outside_photo_option,
    quiet_option,
    reporter,
    rnorm_option,
    run_summary,
)
from facepipe.data.face_cache import read_cache_manifest
from facepipe.learn.train import TrainConfig, train


@click.command("train", context_settings=CONTEXT)
@click.argument("cache", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder, e.g. runs/t1.")
@field_option(TrainConfig, "arch", "--arch", help="Registered model (see `facepipe models`).")
@click.option("--dilations", callback=dilation_rates, default=None,
              help="Dilation rates of the higher layers, e.g. 2,4,8,1 (sets the receptive field).")
@rnorm_option
@click.option("--width", type=click.IntRange(min=1), default=None, help="Base channel width of the model.")
@click.option("--model-kwargs", default=None, help="Extra model kwargs as JSON.")
@field_option(TrainConfig, "loss", "--loss", type=click.Choice(["ce", "center", "sc", "sc-all"]),
              help="Cross entropy alone, + center loss, + statistical contextual loss (closest pair / all pairs).")
@field_option(TrainConfig, "loss_weight", "--loss-weight", type=NON_NEGATIVE, help="Weight of the center/sc term.")
@field_option(TrainConfig, "loss_warmup", "--loss-warmup", type=click.IntRange(min=0),
              help="Iterations before it applies.")
@field_option(TrainConfig, "heatmap", "--heatmap/--no-heatmap", help="Landmark heatmap input channel.")
@field_option(TrainConfig, "epochs", "--epochs", type=EPOCHS)
@field_option(TrainConfig, "batch_size", "--batch-size", type=BATCH)
@field_option(TrainConfig, "lr", "--lr", type=POSITIVE)
@field_option(TrainConfig, "val_split", "--val-split",
              help="Split for model selection: a name, none, or auto (val when present).")
@outside_photo_option(TrainConfig)
@augment_options(TrainConfig)
@click.option("--no-augment", is_flag=True, help="Same as --augment none.")
@field_option(TrainConfig, "init", "--init", metavar="MODEL", callback=init_model,
              help="Start from these weights (a run, checkpoint file or bundled name such as accurate) "
                   "instead of random ones; same --arch. A narrower network is widened so that it starts computing "
                   "the same function; a wider one gives its leading channels, and training takes it from there. "
                   "The schedule starts afresh.")
@field_option(TrainConfig, "seed", "--seed", type=SEED)
@field_option(TrainConfig, "device", "--device", help="cpu, cuda, cuda:N or auto.")
@field_option(TrainConfig, "threads", "--threads", type=THREADS, show_default="all cores")
@field_option(TrainConfig, "workers", "--workers", type=WORKERS, help="DataLoader workers for big caches.")
@amp_option(TrainConfig)
@force_option
@quiet_option
def train_cmd(dilations, rnorm_target, width, model_kwargs, no_augment, quiet, **kw):
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
      facepipe train mine.h5 --out runs/mine --init accurate --epochs 30 --lr 0.0005
      facepipe train data/fasseg.h5 --out runs/t-edge --init accurate --outside-photo edge --epochs 60 --lr 0.001
      torchrun --nproc-per-node 2 -m facepipe train data/fasseg.h5 --out runs/t2
    """
    if rnorm_target is not None:
        size = int(read_cache_manifest(kw["cache"])["size"])
        dilations = dilations_for_rnorm(kw["arch"], size, rnorm_target, dilations)
    cfg = config_from(TrainConfig, kw, model_kwargs=build_model_kwargs(dilations, width, model_kwargs),
                      augment="none" if no_augment else kw["augment"])
    rep = reporter(quiet)
    m = train(cfg, rep)
    rep.table(f"train {cfg.arch} -> {cfg.out}", run_summary(m), ("", "value"))


COMMANDS = [train_cmd]
