import click

from facepipe.cli.options import (
    CONTEXT,
    POSITIVE,
    SEED,
    FiniteRange,
    config_from,
    field_option,
    force_option,
    quiet_option,
    reporter,
    workers_option,
)
from facepipe.data.paste import MAX_DEFOCUS, VARIANTS, PasteConfig, run_paste

# A zoom below 1 would leave the crop smaller than the photo; above 8 a wallpaper is a blur of a few pixels.
ZOOM = FiniteRange(1, 8)


@click.command("paste", context_settings=CONTEXT)
@click.argument("dataset", type=click.Path(file_okay=False))
@click.argument("backgrounds", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@field_option(PasteConfig, "variant", "--variant", type=click.Choice(VARIANTS),
              help="plain: the photos copied (the reference); pasted: background class replaced by a "
                   "background photo; gray: pasted, in grayscale; hair: pasted, hair recoloured; "
                   "sepia: pasted, toned brown like an old print; hair-gray: hair, then in grayscale; "
                   "hair-backdrop: pasted onto the background recoloured to the face's own hair; "
                   "bald: pasted, the hair above the brows drawn as a bald scalp (its labels: skin); "
                   "tight: the photo cut to a square around the face, as face-crop datasets cut them "
                   "(nothing pasted; of a pasted set: a face-crop photo of a cluttered scene).")
@field_option(PasteConfig, "split", "--split", help="Which split of DATASET to write.")
@field_option(PasteConfig, "seed", "--seed", type=SEED,
              help="Picks each photo's background, zoom, crop and hair colour (with its id).")
@field_option(PasteConfig, "max_zoom", "--max-zoom", type=ZOOM,
              help="Background crops are 1..this times closer than the crop that just covers the photo.")
@field_option(PasteConfig, "feather", "--feather", type=POSITIVE,
              help="Seam blur sigma as a fraction of the photo's longer side (at least 1 px).")
@field_option(PasteConfig, "margin", "--margin", type=FiniteRange(0, 2),
              help="Widen each photo by this times its height and width on every side, filled with the "
                   "background (labels: background): the face becomes a small part of a cluttered photo.")
@field_option(PasteConfig, "defocus", "--defocus", type=FiniteRange(0, MAX_DEFOCUS),
              help="Blur the background by a Gaussian of this times the photo's longer side before pasting "
                   "(0: sharp): a portrait's backdrop out of focus.")
@workers_option(PasteConfig)
@force_option
@quiet_option
def paste_cmd(dataset, quiet, **kw):
    """Paste an imported set's faces onto other backgrounds: a robustness benchmark.

    \b
    DATASET is an imported set (facepipe import); its label maps' background class marks the pixels
    replaced by a crop of a photo from BACKGROUNDS, with a feathered seam. OUT is an imported set in
    the same layout (same ids, labels, schema; only --split), so the usual chain runs on it. Only
    --variant bald changes labels: the scalp it draws is skin, the hair around it background
    (--variant tight cuts them with the photo).
    BACKGROUNDS are for evaluation only: never train on them.

    \b
    Examples:
      apt-get install mate-backgrounds     # real photos without faces
      facepipe paste data/fasseg /usr/share/backgrounds/mate/nature data/fasseg-pasted
      facepipe paste data/fasseg /usr/share/backgrounds/mate/nature data/fasseg-gray --variant gray
      facepipe paste data/fasseg /usr/share/backgrounds/mate/nature data/fasseg-wide --margin 0.5
      facepipe paste data/fasseg /usr/share/backgrounds/mate/nature data/fasseg-soft --defocus 0.01
      facepipe paste data/fasseg /usr/share/backgrounds/mate/nature data/fasseg-tight --variant tight
      facepipe paste data/fasseg-pasted /usr/share/backgrounds/mate/nature data/fasseg-tight-pasted --variant tight
      facepipe landmarks data/fasseg-pasted lm && facepipe align data/fasseg-pasted al --landmarks lm
    """
    rep = reporter(quiet)
    m = run_paste(config_from(PasteConfig, kw, src=dataset), reporter=rep)
    rows = [(k, v) for k, v in m["counts"].items()] + [("seconds", m["seconds"])]
    rep.table(f"paste {kw['variant']} -> {kw['out']}", rows, ("", "count"))
    for s in m["skipped"][:10]:
        rep.log(f"[yellow]skipped[/] {s['id']}: {s['reason']}")


COMMANDS = [paste_cmd]
