import click

from facepipe.cli import CONTEXT, force_option, quiet_option, reporter, shard_option, workers_option
from facepipe.commands.options import DETECT_SIDE, FINITE, UPSAMPLE
from facepipe.manifest import parse_shard
from facepipe.landmarks import LandmarksConfig, run_landmarks


@click.command("landmarks", context_settings=CONTEXT)
@click.argument("src", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--detector", type=click.Choice(["hog", "cnn"]), default="hog", show_default=True,
              help="dlib face detector: hog (frontal faces, fast) or cnn (profiles too, ~20x slower on a CPU; "
                   "a face whose landmarks cannot be trusted is marked \"lm_trusted\": false, and align cuts it "
                   "from its box).")
@click.option("--upsample", type=UPSAMPLE, default=-1, show_default="auto",
              help="dlib detector upsampling (finds smaller faces, slower); -1 picks by photo size "
                   "(hog: 1 under 1200 px; cnn: 1 under 400 px, each step costs the CNN ~4x).")
@click.option("--max-side", type=DETECT_SIDE, default=1600, show_default=True,
              help="Photos are shrunk to this longest side for detection.")
@click.option("--threshold", type=FINITE, default=0.0, show_default=True,
              help="Detector score threshold (cnn: detections scoring below it are dropped; it reports none below 0).")
@workers_option
@shard_option
@force_option
@quiet_option
def landmarks_cmd(src, out, detector, upsample, max_side, threshold, workers, shard, force, quiet):
    """Detect faces and 5- and 68-point landmarks (dlib) in every photo of SRC.

    \b
    SRC is an imported dataset (facepipe import) or any folder of photos. OUT gets faces/<id>.json
    with every face's box, score and landmarks.

    \b
    Examples:
      facepipe landmarks data/fasseg data/fasseg-lm
      facepipe landmarks ~/photos data/photos-lm --upsample 1
      facepipe landmarks data/fasseg data/fasseg-lm-cnn --detector cnn   # profiles too
      facepipe landmarks photos/ lm/ --shard 0/2   # machine A (machine B: --shard 1/2), one shared folder
      facepipe landmarks photos/ lm/               # afterwards: collects both halves, writes the manifest
    """
    rep = reporter(quiet)
    cfg = LandmarksConfig(src=src, out=out, upsample=upsample, max_side=max_side, threshold=threshold,
                          detector=detector, workers=workers, force=force, shard=parse_shard(shard))
    m = run_landmarks(cfg, rep)
    rep.table(f"landmarks -> {out}", list(m["counts"].items()) + [("seconds", m["seconds"])], ("", "count"))


COMMANDS = [landmarks_cmd]
