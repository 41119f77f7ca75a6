import click

from facepipe.cli import CONTEXT
from facepipe.commands.options import COUNT, SEED


@click.command("show", context_settings=CONTEXT)
@click.argument("cache", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="PNG to write.")
@click.option("-n", "count", type=COUNT, default=12, show_default=True, help="Faces to show.")
@click.option("--split", default=None, help="Only faces of this split.")
@click.option("--seed", type=SEED, default=0, show_default=True)
def show_cmd(cache, out, count, split, seed):
    """Contact sheet of a cache: each face, its label overlay and its heatmap.

    \b
    Example:
      facepipe show data/fasseg.h5 --out sheet.png -n 18
    """
    from facepipe.atomic import save_image
    from facepipe.sheets import cache_sheet

    save_image(out, cache_sheet(cache, n=count, seed=seed, split=split))
    click.echo(f"wrote {out}")


COMMANDS = [show_cmd]
