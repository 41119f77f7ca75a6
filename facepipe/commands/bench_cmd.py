import click

from facepipe.cli import CONTEXT, quiet_option, reporter
from facepipe.commands.options import BATCH, POSITIVE, SIZE, THREADS, WORKERS, int_list


@click.command("bench", context_settings=CONTEXT)
@click.argument("run", required=False)
@click.argument("cache", required=False, type=click.Path(dir_okay=False))
@click.option("--fps", is_flag=True, help="Measure speed (the default when no RUN CACHE is given).")
@click.option("--model", "models", multiple=True, help="Trained run folder or checkpoint (repeatable).")
@click.option("--arch", "archs", multiple=True, help="Registered architecture, untrained (repeatable).")
@click.option("--size", "sizes", multiple=True, callback=int_list(SIZE, "256,512"),
              help="Input side(s), e.g. --size 256 --size 512.")
@click.option("--batch", "batches", multiple=True, callback=int_list(BATCH, "1,8"), help="Batch size(s).")
@click.option("--threads", type=THREADS, default=2, show_default=True, help="CPU threads (0 = all cores).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--backend", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True)
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True)
@click.option("--seconds", type=POSITIVE, default=2.0, show_default=True, help="Timing window per row.")
@click.option("--no-baseline", is_flag=True, help="Do not add bisenet-r18 automatically.")
@click.option("--no-fold-bn", is_flag=True, help="Time models as trained, without folding BatchNorm into convs.")
@click.option("--channels-last/--contiguous", "channels_last", default=True, show_default=True,
              help="Memory format of every model and input, the baseline included (torch backend); "
                   "`parse` runs channels_last.")
@click.option("--split", default="test", show_default=True, help="Split scored with RUN CACHE.")
@click.option("--parse", "parse_photos", multiple=True, metavar="PHOTOS",
              help="Profile `facepipe parse` on these photos or folders instead (repeatable): photos/s, "
                   "faces/s, each step's share. --model picks the parser (default: the bundled one).")
@click.option("--workers", type=WORKERS, default=0, show_default="all cores", help="Parse workers (with --parse).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write rows as JSON.")
@quiet_option
def bench_cmd(run, cache, fps, models, archs, sizes, batches, threads, device, backend, dtype, seconds,
              no_baseline, no_fold_bn, channels_last, split, parse_photos, workers, json_path, quiet):
    """Frames per second and latency of several models side by side (and accuracy with RUN CACHE).

    \b
    With no models named, benchmarks the registered teacher, student and bisenet-r18 (the baseline
    face-parsing.PyTorch and facexlib ship) at 256x256, batch 1. FPS counts frames (batch x iters /
    time) of the network forward after warm-up, BatchNorm folded into convs for every model (the
    baseline too; --no-fold-bn to time them as trained), models and inputs in channels_last as `parse`
    runs them (every model; --contiguous for NCHW); MACs and parameters are counted from the real layers;
    ratio_to_baseline is FPS / bisenet-r18's FPS at the same size and batch, in this same run.
    spread is how much the throughput of five slices of a row's timing window differs, cpu_wait the
    share of it spent waiting for a CPU another process held; a yellow line says when these or the
    load average make the figures unrepeatable.

    \b
    Examples:
      facepipe bench --fps
      facepipe bench --fps --arch bisenet-r18 --model runs/t1 --model runs/s1 --size 256 --size 512
      facepipe bench --fps --model runs/s1 --backend onnxruntime
      facepipe bench runs/s1 data/fasseg.h5          # speed + accuracy in one table
      facepipe bench --parse ~/album/                # where parse's seconds go, end to end
    """
    if parse_photos:
        if run or cache:
            raise click.UsageError("--parse takes one photo or folder each: repeat it (--parse a/ --parse b/); "
                                   "pick the model with --model.")
        return _bench_parse(parse_photos, (models or (run,))[0], device, workers, batches, json_path, quiet)
    from facepipe.atomic import write_json
    from facepipe.bench import BASELINE, DEFAULT_ARCHS, BenchConfig, arch_entry, bench_speed, run_entry, warning

    rep = reporter(quiet)
    models = list(models) + ([run] if run else [])
    entries = [run_entry(m) for m in models]
    names = list(archs) if (archs or models) else list(DEFAULT_ARCHS)
    if not no_baseline and BASELINE not in names:
        names.append(BASELINE)
    nc = entries[0].schema.num_classes if entries else 6
    entries += [arch_entry(a, nc) for a in names]
    cfg = BenchConfig(sizes=sizes or (256,), batches=batches or (1,), threads=threads, device=device,
                      backend=backend, dtype=dtype, seconds=seconds, fold_bn=not no_fold_bn,
                      channels_last=channels_last)
    rows = bench_speed(entries, cfg, rep)
    acc = {}
    if run and cache:
        from facepipe.checkpoint import load_checkpoint, run_checkpoint
        from facepipe.evaluate import evaluate

        e = entries[len(models) - 1]
        r = evaluate(e.model.cpu(), cache, e.schema, split=split, heatmap=e.heatmap, reporter=rep)
        acc = {e.name: {"overall_f1": r["overall_f1"], "mean_f1": r["mean_f1"], "pixel_acc": r["pixel_acc"],
                        "coords": r["coords"], "split": split}}
        for row in rows:
            if row["model"] in acc:
                row.update(acc[row["model"]])
    cols = ("model", "size", "batch", "fps", "latency_ms_p50", "latency_ms_p95", "params", "macs",
            "ratio_to_baseline", "spread", "cpu_wait") + (("overall_f1", "pixel_acc") if acc else ())
    pct = ("spread", "cpu_wait")
    table = [tuple(f"{r[c]:.0%}" if c in pct and r.get(c) is not None else _fmt(r.get(c)) for c in cols)
             for r in rows]
    env = rows[0]
    load = "unknown" if env["load"] is None else f"{env['load']:.1f}"
    rep.table(f"facepipe bench: device {env['device']}, {env['threads']} threads, {env['dtype']}, "
              f"backend {env['backend']}, BatchNorm folded: {env['bn_folded']}, "
              f"channels_last: {env['channels_last']}, load {load} on {env['cores']} cores", table, cols)
    if quiet:
        for t in table:
            click.echo("  ".join(t))
    msg = warning(rows)
    if msg:
        # stderr, and even with -q: the figures are printed either way, so is why not to trust them.
        click.secho(msg, fg="yellow", err=True)
    if json_path:
        from facepipe.bench import environment  # noqa: F401

        write_json(json_path, {"rows": rows})


def _bench_parse(photos, model, device, workers, batches, json_path, quiet):
    from facepipe.atomic import write_json
    from facepipe.device import set_threads
    from facepipe.parse_profile import profile_parse, profile_rows

    rep = reporter(quiet)
    set_threads(0)
    row = profile_parse(photos, model, device, workers, (batches or (16,))[0], reporter=rep)
    rep.table(f"facepipe bench --parse: {row['photos']} photos, {row['faces']} faces, model {row['model']}, "
              f"device {row['device']}", profile_rows(row), ("step", "seconds", "share of work"))
    if quiet:
        click.echo(f"photos_per_s={row['photos_per_s']} faces_per_s={row['faces_per_s']} wall_s={row['wall_s']}")
    if json_path:
        write_json(json_path, {"rows": [row]})


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    if isinstance(v, int) and v > 100000:
        return f"{v / 1e6:.2f}M"
    return str(v)


COMMANDS = [bench_cmd]
