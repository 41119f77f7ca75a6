import click

from facepipe.cli.options import CONTEXT, config_from, field_option, force_option, quiet_option, reporter
from facepipe.data.cache import CacheConfig, run_cache


@click.command("cache", context_settings=CONTEXT)
@click.argument("src", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--no-photo-labels", is_flag=True,
              help="Do not keep original-resolution labels (then `eval` can only score aligned crops).")
@field_option(CacheConfig, "compression", "--compression", type=click.IntRange(0, 9), help="gzip level.")
@force_option
@quiet_option
def cache_cmd(no_photo_labels, quiet, **kw):
    """Pack an aligned set into one HDF5 file with the landmark heatmap channel.

    \b
    The file holds crops, labels, heatmaps, landmarks, matrices, ids, splits and the schema
    (layout: facepipe/data/cache.py). It is written as OUT.partial and renamed when complete.

    \b
    Example:
      facepipe cache data/fasseg-aligned data/fasseg.h5
    """
    rep = reporter(quiet)
    m = run_cache(config_from(CacheConfig, kw, photo_labels=not no_photo_labels), rep)
    rep.table(f"cache -> {kw['out']}", list(m["counts"].items()) + [("seconds", m["seconds"])], ("", "count"))


COMMANDS = [cache_cmd]
