import click

from facepipe.align import AlignConfig, run_align
from facepipe.cli import CONTEXT, force_option, quiet_option, reporter, shard_option, workers_option
from facepipe.commands.options import LABEL_ID, OPEN_FRACTION, SIZE
from facepipe.manifest import parse_shard


@click.command("align", context_settings=CONTEXT)
@click.argument("src", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--size", type=SIZE, default=256, show_default=True, help="Side of the square aligned crop.")
@click.option("--iod", type=OPEN_FRACTION, default=0.22, show_default=True,
              help="Eye distance as a fraction of the crop side (smaller = more hair and background).")
@click.option("--landmarks", "landmarks", default=None,
              help="A `facepipe landmarks` output, or 'dataset' for the dataset's own landmarks; "
                   "default: detect here.")
@click.option("--min-face", type=click.IntRange(min=0), default=20, show_default=True,
              help="Skip unlabelled faces whose box is smaller than this (px).")
@click.option("--no-face", type=click.Choice(["auto", "fit", "skip"]), default="auto", show_default=True,
              help="Photos without a face: fit the whole photo into the crop, or skip it "
                   "(auto: fit labelled photos, skip unlabelled ones).")
@click.option("--letterbox", is_flag=True,
              help="Baseline without alignment: fit each whole photo into the crop (landmarks kept for the heatmap).")
@click.option("--outside-label", type=LABEL_ID, default=0, show_default=True,
              help="Label for crop pixels outside the photo: 0 = background, 255 = ignore.")
@workers_option
@shard_option
@force_option
@quiet_option
def align_cmd(src, out, size, iod, landmarks, min_face, no_face, letterbox, outside_label, workers, shard, force,
              quiet):
    """Align every face onto a 5-point template (similarity transform) in SIZE x SIZE crops.

    \b
    Labels are warped with nearest neighbour; each face keeps its 3x3 photo->crop matrix so
    predictions can be warped back onto the photo. Labelled photos without a detectable face
    (profiles) are fitted whole into the crop and counted.

    \b
    Examples:
      facepipe align data/fasseg data/fasseg-aligned --landmarks data/fasseg-lm
      facepipe align raw/ data/aligned
      facepipe align data/lapa data/lapa-aligned --landmarks dataset --size 512
      facepipe align photos/ al/ --landmarks lm/ --shard 1/2   # half of it; then once without --shard
    """
    rep = reporter(quiet)
    cfg = AlignConfig(src=src, out=out, size=size, iod=iod, landmarks=landmarks, min_face=min_face,
                      no_face=no_face, letterbox=letterbox, outside_label=outside_label, workers=workers,
                      force=force, shard=parse_shard(shard))
    m = run_align(cfg, rep)
    rep.table(f"align -> {out}", list(m["counts"].items()) + [("seconds", m["seconds"])], ("", "count"))


COMMANDS = [align_cmd]
