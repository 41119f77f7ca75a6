import click

from facepipe.cli.options import (
    CONTEXT,
    LABEL_ID,
    OPEN_FRACTION,
    SIZE,
    FiniteRange,
    config_from,
    field_option,
    force_option,
    quiet_option,
    reporter,
    shard_option,
    workers_option,
)
from facepipe.data.align import AlignConfig, run_align
from facepipe.util.manifest import parse_shard
from facepipe.util.pool import NO_FACE


@click.command("align", context_settings=CONTEXT)
@click.argument("src", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@field_option(AlignConfig, "size", "--size", type=SIZE, help="Side of the square aligned crop.")
@field_option(AlignConfig, "iod", "--iod", type=OPEN_FRACTION,
              help="Eye distance as a fraction of the crop side (smaller = more hair and background).")
@field_option(AlignConfig, "landmarks", "--landmarks", "landmarks",
              help="A `facepipe landmarks` output, or 'dataset' for the dataset's own landmarks; "
                   "default: detect here.")
@field_option(AlignConfig, "min_face", "--min-face", type=click.IntRange(min=0),
              help="Skip unlabelled faces whose box is smaller than this (px).")
@field_option(AlignConfig, "no_face", "--no-face", type=click.Choice(["auto", "fit", "skip"]),
              help="Photos without a face: fit the whole photo into the crop, or skip it "
                   "(auto: fit labelled photos, skip unlabelled ones).")
@field_option(AlignConfig, "box_width", "--box-width", type=FiniteRange(0.5, 10),
              help="Faces cut from their detector box (profiles on --detector cnn or hog+cnn landmarks): the box's width "
                   "in template eye distances; smaller = more of the head in the crop. `parse` reads it from "
                   "the model.")
@field_option(AlignConfig, "turn_shift", "--turn-shift", type=FiniteRange(0, 10),
              help="Turned faces aligned from landmarks: move the crop toward the back of the head by this gain "
                   "times the nose's sideways offset (0 = centred on the face; 4 = measured best). `parse` "
                   "reads it from the model.")
@click.option("--letterbox", is_flag=True,
              help="Baseline without alignment: fit each whole photo into the crop (landmarks kept for the heatmap).")
@field_option(AlignConfig, "outside_label", "--outside-label", type=LABEL_ID,
              help="Label for crop pixels outside the photo: 0 = background, 255 = ignore.")
@workers_option(AlignConfig)
@shard_option
@force_option
@quiet_option
def align_cmd(shard, quiet, **kw):
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
      facepipe align data/fasseg data/fasseg-cnn --landmarks data/fasseg-lm-cnn --box-width 1.8
      facepipe align data/fasseg data/fasseg-turn --landmarks data/fasseg-lm --turn-shift 4
      facepipe align photos/ al/ --landmarks lm/ --shard 1/2   # half of it; then once without --shard
    """
    rep = reporter(quiet)
    m = run_align(config_from(AlignConfig, kw, shard=parse_shard(shard)), rep)
    rep.table(f"align -> {kw['out']}", list(m["counts"].items()) + [("seconds", m["seconds"])], ("", "count"))
    rep.skipped([s for s in m.get("skipped", []) if s["reason"] != NO_FACE])  # no face: counted in the table


COMMANDS = [align_cmd]
