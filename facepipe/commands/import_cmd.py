import click

from facepipe.cli import CONTEXT, force_option, quiet_option, reporter, workers_option
from facepipe.commands.options import FRACTION
from facepipe.importers import FORMATS, import_dataset


@click.command("import", context_settings=CONTEXT)
@click.argument("format", type=click.Choice(list(FORMATS)))
@click.argument("src", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--max-bad", type=FRACTION, default=0.1, show_default=True,
              help="Fail if more than this fraction of images are unreadable (the rest are listed).")
@workers_option
@force_option
@quiet_option
def import_cmd(format, src, out, max_bad, workers, force, quiet):
    """Convert a dataset's release layout into facepipe's common layout.

    \b
    SRC is the dataset as released (layouts, splits, scoring and where to get each dataset:
    docs/datasets.md in the facepipe repository); OUT gets images/, labels/ (uint8 ids),
    splits.json, schema.json and manifest.json. Rerunning continues an interrupted import.

    \b
    Examples:
      facepipe import fasseg ~/datasets/fasseg data/fasseg
      facepipe import helen ~/datasets/helen data/helen
      facepipe import folder my_faces/ data/mine     # images/ labels/ schema.json
    """
    rep = reporter(quiet)
    m = import_dataset(format, src, out, reporter=rep, max_bad=max_bad, workers=workers, force=force)
    rows = [(k, v) for k, v in m["counts"].items()] + [("seconds", m["seconds"])]
    rep.table(f"import {format} -> {out}", rows, ("", "count"))
    for s in m["skipped"][:10]:
        rep.log(f"[yellow]skipped[/] {s['id']}: {s['reason']}")


COMMANDS = [import_cmd]
