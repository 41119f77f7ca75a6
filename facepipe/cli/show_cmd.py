import click

from facepipe.cli.options import CONTEXT, COUNT, SEED, field_option
from facepipe.data.cache_sheet import cache_sheet
from facepipe.util.atomic import IMAGE_SUFFIXES, save_image
from facepipe.util.manifest import refuse_overwriting_input, require_suffix


@click.command("show", context_settings=CONTEXT)
@click.argument("cache", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="PNG to write (a name ending in .jpg or .jpeg writes JPEG; other suffixes are refused).")
@field_option(cache_sheet, "n", "-n", "count", type=COUNT, help="Faces to show.")
@field_option(cache_sheet, "split", "--split", help="Only faces of this split.")
@field_option(cache_sheet, "seed", "--seed", type=SEED)
def show_cmd(cache, out, count, split, seed):
    """Contact sheet of a cache: each face, its label overlay and its heatmap.

    \b
    Example:
      facepipe show data/fasseg.h5 --out sheet.png -n 18
    """
    refuse_overwriting_input(out, [cache])  # before the work: a sheet named like its cache would replace it
    require_suffix(out, IMAGE_SUFFIXES, "--out")
    save_image(out, cache_sheet(cache, n=count, seed=seed, split=split))
    click.echo(f"wrote {out}")


COMMANDS = [show_cmd]
