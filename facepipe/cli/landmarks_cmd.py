import click

from facepipe.cli.options import (
    CONTEXT,
    FINITE,
    config_from,
    field_option,
    force_option,
    max_side_option,
    quiet_option,
    reporter,
    shard_option,
    upsample_option,
    workers_option,
)
from facepipe.data.face_detector import DETECTORS
from facepipe.data.landmarks import LandmarksConfig, run_landmarks
from facepipe.util.manifest import parse_shard
from facepipe.util.pool import NO_FACE


@click.command("landmarks", context_settings=CONTEXT)
@click.argument("src", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@field_option(LandmarksConfig, "detector", "--detector", type=click.Choice(DETECTORS),
              help="dlib face detector: hog (frontal faces, fast), cnn (profiles too, ~20x slower on a CPU) or "
                   "hog+cnn (the CNN only on photos where HOG finds no face). A CNN face whose landmarks cannot "
                   "be trusted is marked \"lm_trusted\": false, and align cuts it from its box; a CNN face on its "
                   "side gets its landmarks from the quarter turn that makes it upright (\"roll\": 90 or 270), and "
                   "a photo where neither finds a face scoring 0.2 is searched upside down too (\"roll\": 180).")
@upsample_option(LandmarksConfig)
@max_side_option(LandmarksConfig)
@field_option(LandmarksConfig, "threshold", "--threshold", type=FINITE,
              help="Detector score threshold (cnn: detections scoring below it are dropped; it reports none below 0).")
@workers_option(LandmarksConfig)
@shard_option
@force_option
@quiet_option
def landmarks_cmd(shard, quiet, **kw):
    """Detect faces and 5- and 68-point landmarks (dlib) in every photo of SRC.

    \b
    SRC is an imported dataset (facepipe import) or any folder of photos. OUT gets faces/<id>.json
    with every face's box, score and landmarks.

    \b
    Examples:
      facepipe landmarks data/fasseg data/fasseg-lm
      facepipe landmarks ~/photos data/photos-lm --upsample 1
      facepipe landmarks data/fasseg data/fasseg-lm-cnn --detector cnn   # profiles too
      facepipe landmarks data/fasseg data/fasseg-lm-hc --detector hog+cnn   # CNN where HOG finds none
      facepipe landmarks photos/ lm/ --shard 0/2   # machine A (machine B: --shard 1/2), one shared folder
      facepipe landmarks photos/ lm/               # afterwards: collects both halves, writes the manifest
    """
    rep = reporter(quiet)
    m = run_landmarks(config_from(LandmarksConfig, kw, shard=parse_shard(shard)), rep)
    rep.table(f"landmarks -> {kw['out']}", list(m["counts"].items()) + [("seconds", m["seconds"])], ("", "count"))
    rep.skipped([s for s in m["skipped"] if s["reason"] != NO_FACE])  # no face: counted in the table


COMMANDS = [landmarks_cmd]
