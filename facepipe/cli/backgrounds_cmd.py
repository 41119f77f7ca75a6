import click

from facepipe.cli.options import CONTEXT, config_from, field_option, force_option, quiet_option, reporter
from facepipe.data.backgrounds import BackgroundsConfig, run_backgrounds


@click.command("backgrounds", context_settings=CONTEXT)
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Leave out files whose full path matches (repeatable), e.g. '*/mate/*'.")
@field_option(BackgroundsConfig, "short_side", "--short-side", type=click.IntRange(64, 4096),
              help="Photos are shrunk to at most this many pixels on their short side.")
@field_option(BackgroundsConfig, "procedural", "--procedural", type=click.IntRange(0, 100000), metavar="N",
              help="Add N drawings of clutter (grass, foliage, out-of-focus lights; facepipe/data/clutter.py), "
                   "which wallpapers lack.")
@force_option
@quiet_option
def backgrounds_cmd(quiet, **kw):
    """Gather photos without faces for training faces on real backgrounds (train/distill --backgrounds).

    \b
    SOURCES are folders (walked recursively) or image files. Photos where dlib finds a face are left
    out, as are scikit-image's sample images and dlib-faces (kept for measuring) and --exclude matches.
    OUT gets images/, sources.jsonl (where each photo came from) and manifest.json.

    \b
    Examples (Debian's wallpaper packages; mate-backgrounds is kept for `facepipe paste`, the benchmark):
      apt-get install -y ukui-wallpapers plasma-workspace-wallpapers lomiri-wallpapers
      facepipe backgrounds /usr/share/wallpapers /usr/share/backgrounds data/backgrounds --exclude '*/mate/*'
      facepipe backgrounds /usr/share/wallpapers /usr/share/backgrounds data/backgrounds-pc --exclude '*/mate/*' \\
          --procedural 64
      facepipe train data/fasseg.h5 --out runs/t1 --backgrounds data/backgrounds
    """
    rep = reporter(quiet)
    m = run_backgrounds(config_from(BackgroundsConfig, kw), rep)
    rows = [(k, v) for k, v in m["counts"].items()] + [("seconds", m["seconds"])]
    rep.table(f"backgrounds -> {kw['out']}", rows, ("", "count"))
    rep.skipped(m["skipped"], key="source")


COMMANDS = [backgrounds_cmd]
