from pathlib import Path

import click

from facepipe.cli.options import (
    BATCH,
    CONTEXT,
    POSITIVE,
    SIZE,
    THREADS,
    WORKERS,
    config_from,
    field_default,
    field_option,
    int_list,
    quiet_option,
    reporter,
)
from facepipe.infer.bench import BenchConfig, warning
from facepipe.infer.bench_report import bench_table, bench_title, run_bench
from facepipe.infer.checkpoint import model_inputs
from facepipe.infer.evaluate import evaluate
from facepipe.infer.parse_profile import profile_parse, profile_rows
from facepipe.util.atomic import write_json
from facepipe.util.device import set_threads
from facepipe.util.errors import FacepipeError
from facepipe.util.manifest import refuse_overwriting_input


@click.command("bench", context_settings=CONTEXT)
@click.argument("run", required=False)
@click.argument("cache", required=False, type=click.Path(dir_okay=False))
@click.option("--fps", is_flag=True, help="Measure speed (the default when no RUN CACHE is given).")
@click.option("--model", "models", multiple=True, help="Trained run folder or checkpoint (repeatable).")
@click.option("--arch", "archs", multiple=True, help="Registered architecture, untrained (repeatable).")
@click.option("--size", "sizes", multiple=True, callback=int_list(SIZE, "256,512"),
              help="Input side(s), e.g. --size 256 --size 512. Not given: 256, and each trained model also "
                   "at the crop side parse cuts for it (accurate: 384), with the baseline there too.")
@click.option("--batch", "batches", multiple=True, callback=int_list(BATCH, "1,8"), help="Batch size(s).")
@field_option(BenchConfig, "threads", "--threads", type=THREADS, help="CPU threads (0 = all cores).")
@field_option(BenchConfig, "device", "--device", help="cpu or cuda.")
@field_option(BenchConfig, "backend", "--backend", type=click.Choice(["torch", "onnxruntime"]),
              help="torch, or onnxruntime on each model's graph as `export --fixed-size` writes it (one per --size).")
@field_option(BenchConfig, "dtype", "--dtype", type=click.Choice(["fp32", "fp16", "bf16", "int8"]),
              help="int8: each model's graph quantized as `export --int8` does (with --backend onnxruntime); the "
                   "baseline is timed in int8 and in fp32, and each row gets both ratios.")
@field_option(BenchConfig, "seconds", "--seconds", type=POSITIVE, help="Timing window per row.")
@click.option("--no-baseline", is_flag=True, help="Do not add bisenet-r18 automatically.")
@click.option("--no-fold-bn", is_flag=True, help="Time models as trained, without folding BatchNorm into convs.")
@field_option(BenchConfig, "channels_last", "--channels-last/--contiguous", "channels_last",
              help="Memory format of every model and input, the baseline included (torch backend); "
                   "`parse` runs channels_last.")
@field_option(evaluate, "split", "--split", help="Split scored with RUN CACHE.")
@click.option("--parse", "parse_photos", multiple=True, metavar="PHOTOS",
              help="Profile `facepipe parse` on these photos or folders instead (repeatable): photos/s, "
                   "faces/s, each step's share. --model picks the parser (default: the bundled one).")
@field_option(profile_parse, "workers", "--workers", type=WORKERS, show_default="all cores",
              help="Parse workers (with --parse).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write rows as JSON.")
@quiet_option
def bench_cmd(run, cache, fps, models, archs, sizes, batches, no_baseline, no_fold_bn, split, parse_photos, workers,
              json_path, quiet, **kw):
    """Frames per second and latency of several models side by side (and accuracy with RUN CACHE).

    \b
    With no models named, benchmarks the bundled models (`default`, the parser `parse` uses, and
    `accurate`) against bisenet-r18 (the baseline face-parsing.PyTorch and facexlib ship) at 256x256,
    batch 1. FPS counts frames (batch x iters / time) of the network forward after warm-up, BatchNorm
    folded into convs for every model (the baseline too; --no-fold-bn to time them as trained), models
    and inputs in channels_last as `parse` runs them (every model; --contiguous for NCHW); MACs and
    parameters are counted from the real layers; ratio_to_baseline is FPS / bisenet-r18's FPS at the
    same size and batch, in this same run. Without --size, a trained model whose crops are not 256 px
    (`accurate`: 384) gets a second row at its own side, as parse runs it, and the baseline one there;
    the size column marks each model's own side with *.
    The rows are timed in turns: each row's window (--seconds) is cut into five slices, taken one
    row after another, so that a model and its baseline meet the same machine. spread is how much the
    throughput of a row's slices differs, cpu_wait the share of them spent waiting for a CPU another
    process held; a yellow line says when these or the load average make the figures unrepeatable.

    \b
    Examples:
      facepipe bench --fps
      facepipe bench --fps --arch bisenet-r18 --model runs/t1 --model runs/s1 --size 256 --size 512
      facepipe bench --fps --model runs/s1 --backend onnxruntime
      facepipe bench --fps --model default --backend onnxruntime --dtype int8
      facepipe bench runs/s1 data/fasseg.h5          # speed + accuracy in one table
      facepipe bench --parse ~/album/                # where parse's seconds go, end to end
    """
    # Before the work: the JSON must not replace a model, cache or photo it reads.
    # Photos named one by one, not their folders: a report beside the photos harms none of them.
    read = [cache, *(p for p in parse_photos if not Path(p).is_dir()),
            *(p for m in (*models, run) if m for p in model_inputs(m))]
    refuse_overwriting_input(json_path, read)
    if parse_photos:
        if run or cache:
            raise click.UsageError("--parse takes one photo or folder each: repeat it (--parse a/ --parse b/); "
                                   "pick the model with --model.")
        return _bench_parse(parse_photos, (models or (run,))[0], kw["device"], workers, batches, json_path, quiet)
    rep = reporter(quiet)
    cfg = config_from(BenchConfig, kw, sizes=sizes or field_default(BenchConfig, "sizes"),
                      batches=batches or field_default(BenchConfig, "batches"), fold_bn=not no_fold_bn,
                      own_sides=not sizes)
    models = list(models) + ([run] if run else [])
    rows = run_bench(models, archs, cfg, baseline=not no_baseline, cache=cache if run else None, split=split,
                     reporter=rep)
    cols, table = bench_table(rows)
    rep.table(bench_title(rows), table, cols)
    if quiet:
        for t in table:
            click.echo("  ".join(t))
    msg = warning(rows)
    if msg:
        # stderr, and even with -q: the figures are printed either way, so is why not to trust them.
        click.secho(msg, fg="yellow", err=True)
    if json_path:
        write_json(json_path, {"rows": rows})


def _bench_parse(photos, model, device, workers, batches, json_path, quiet):
    rep = reporter(quiet)
    set_threads(0)
    batch = (batches or (field_default(profile_parse, "batch_size"),))[0]
    row = profile_parse(photos, model, device, workers, batch, reporter=rep)
    if not row["faces"]:  # shares of nothing would read as a profile; `parse` fails on the same photos too
        raise FacepipeError(f"no face parsed in {row['photos']} photo(s) ({row['no_face']} without a face, "
                            f"{row['unreadable']} unreadable): nothing to profile; `facepipe parse` names each.")
    rep.table(f"facepipe bench --parse: {row['photos']} photos, {row['faces']} faces, model {row['model']}, "
              f"device {row['device']}", profile_rows(row), ("step", "seconds", "share of work"))
    if quiet:
        click.echo(f"photos_per_s={row['photos_per_s']} faces_per_s={row['faces_per_s']} wall_s={row['wall_s']}")
    if json_path:
        write_json(json_path, {"rows": [row]})


COMMANDS = [bench_cmd]
