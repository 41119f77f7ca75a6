import click

from facepipe.cli.options import (
    CONTEXT,
    FRACTION,
    config_kwargs,
    field_option,
    force_option,
    quiet_option,
    reporter,
    workers_option,
)
from facepipe.data.importers import FORMATS, import_dataset
from facepipe.data.importers.common import ImportConfig


@click.command("import", context_settings=CONTEXT)
@click.argument("format", type=click.Choice(list(FORMATS)))
@click.argument("src", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@field_option(ImportConfig, "max_bad", "--max-bad", type=FRACTION,
              help="Fail if more than this fraction of images are unreadable (the rest are listed).")
@workers_option(ImportConfig)
@force_option
@quiet_option
def import_cmd(format, src, out, quiet, **kw):
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
    m = import_dataset(format, src, out, reporter=rep, **config_kwargs(ImportConfig, kw))
    rows = [(k, v) for k, v in m["counts"].items()] + [("seconds", m["seconds"])]
    rep.table(f"import {format} -> {out}", rows, ("", "count"))
    rep.skipped(m["skipped"])


COMMANDS = [import_cmd]
