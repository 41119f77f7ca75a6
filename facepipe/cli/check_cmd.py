import click

from facepipe.cli.options import CONTEXT, POSITIVE_FRACTION, field_option
from facepipe.data.landmark_eval import evaluate
from facepipe.util.atomic import write_json
from facepipe.util.manifest import refuse_overwriting_input
from facepipe.util.progress import Reporter


@click.command("check-landmarks", context_settings=CONTEXT)
@click.argument("landmarks_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("xml", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@field_option(evaluate, "min_iou", "--min-iou", type=POSITIVE_FRACTION,
              help="Box IoU to match a detection.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write JSON here.")
def check_cmd(landmarks_dir, xml, min_iou, json_path):
    """Score a `facepipe landmarks` output against dlib imglab XML ground truth (68 points).

    \b
    Reports faces found vs annotated and the mean landmark error normalised by the inter-ocular
    (outer eye corner) distance.

    \b
    Example:
      facepipe landmarks ~/datasets/dlib-faces data/dlib-lm
      facepipe check-landmarks data/dlib-lm ~/datasets/dlib-faces/*_with_face_landmarks.xml
    """
    refuse_overwriting_input(json_path, [landmarks_dir, *xml])  # before the work: not over the ground truth
    r = evaluate(landmarks_dir, xml, min_iou)
    rep = Reporter(quiet=False)
    rep.table("landmarks vs ground truth", [(k, "-" if v is None else v) for k, v in r.items()], ("", "value"))
    if not r["scored_faces"]:
        rep.log("[yellow]no face found has 68 annotated points in the XML (boxes only?): detection is scored, "
                "landmark error is not[/]")
    if json_path:
        write_json(json_path, r)


COMMANDS = [check_cmd]
