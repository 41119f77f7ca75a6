import click

from facepipe.cache import CacheConfig, run_cache
from facepipe.cli import CONTEXT, force_option, quiet_option, reporter


@click.command("cache", context_settings=CONTEXT)
@click.argument("src", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--no-photo-labels", is_flag=True,
              help="Do not keep original-resolution labels (then `eval` can only score aligned crops).")
@click.option("--compression", type=click.IntRange(0, 9), default=4, show_default=True, help="gzip level.")
@force_option
@quiet_option
def cache_cmd(src, out, no_photo_labels, compression, force, quiet):
    """Pack an aligned set into one HDF5 file with the landmark heatmap channel.

    \b
    The file holds crops, labels, heatmaps, landmarks, matrices, ids, splits and the schema
    (layout: facepipe/cache.py). It is written as OUT.partial and renamed when complete.

    \b
    Example:
      facepipe cache data/fasseg-aligned data/fasseg.h5
    """
    rep = reporter(quiet)
    m = run_cache(CacheConfig(src=src, out=out, photo_labels=not no_photo_labels, compression=compression,
                              force=force), rep)
    rep.table(f"cache -> {out}", list(m["counts"].items()) + [("seconds", m["seconds"])], ("", "count"))


COMMANDS = [cache_cmd]
