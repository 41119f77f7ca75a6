import click

from facepipe.cli.options import CONTEXT, config_from, field_option, quiet_option, reporter
from facepipe.infer.checkpoint import model_inputs
from facepipe.infer.eval_report import (
    SCORE_COLUMNS,
    EvalConfig,
    default_sheet,
    run_eval,
    score_json,
    score_rows,
    write_sheet,
)
from facepipe.infer.photo_fill import FILLS
from facepipe.util.atomic import IMAGE_SUFFIXES, write_json
from facepipe.util.manifest import refuse_overwriting_input, require_suffix


@click.command("eval", context_settings=CONTEXT)
@click.argument("run")
@click.argument("cache", type=click.Path(dir_okay=False))
@field_option(EvalConfig, "split", "--split")
@field_option(EvalConfig, "coords", "--coords", type=click.Choice(["original", "aligned"]),
              help="Score in the original photo (predictions warped back) or in the aligned crop.")
@field_option(EvalConfig, "which", "--checkpoint", "which", type=click.Choice(["best", "last"]))
@click.option("--tta-flip", is_flag=True, help="Average with the mirrored prediction.")
@click.option("--beyond-crop", is_flag=True,
              help="Also label the hair that runs beyond each face's crop, as `parse` does by default: a "
                   "zoomed-out second pass over the cache's source photos, and a third where that hair runs on "
                   "(needs --coords original).")
@click.option("--landmark-prior", is_flag=True,
              help="Lay each face's landmarks over the network's answer, as `parse` does by default: inside the "
                   "inner lip contour is mouth, a stray second blob of a part far from its landmarks is not it, "
                   "skin far from the face and ringed by background is background.")
@click.option("--face-colours", is_flag=True,
              help="Move background, hair and skin onto each crop's own edges (students such as the default; "
                   "not the teacher), re-split them where the network hesitates by each face's own colours, "
                   "and drop hair blobs apart from the face that look like the backdrop, as `parse` does by "
                   "default.")
@click.option("--int8", is_flag=True,
              help="Score the networks as int8 ONNX graphs under onnxruntime (CPU), as `export --int8` writes them.")
@click.option("--calibrate", type=click.Path(), default=None,
              help="With --int8: the faces that set the int8 ranges, a folder of photos or a cache (its training "
                   "faces), as `export --calibrate` takes them (default: the run's own cache).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write scores as JSON.")
@click.option("--sheet", type=click.Path(dir_okay=False), default=None,
              help="PNG of the worst and best faces (default: RUN/eval-<split>.png; .jpg or .jpeg writes JPEG).")
@field_option(EvalConfig, "fill", "--fill-beyond-photo", "fill", type=click.Choice(FILLS),
              help="What the network sees where a crop reaches past its photo: as the model's file asks "
                   "(`model`), the photo's colour along that edge (`edge`, colour faces) or `black`, as parse "
                   "takes it.")
@field_option(EvalConfig, "device", "--device")
@quiet_option
def eval_cmd(json_path, sheet, quiet, **kw):
    """Score a trained run (or checkpoint file) on a cache split.

    \b
    Per-class F1, merged groups and the dataset's overall F1 from one confusion matrix accumulated
    over the split, plus pixel accuracy and mean F1 (non-background classes).

    \b
    Examples:
      facepipe eval runs/t1 data/fasseg.h5
      facepipe eval runs/t1 data/fasseg.h5 --coords aligned --json t1-aligned.json
      facepipe eval default data/fasseg.h5 --beyond-crop       # as parse labels long hair
      facepipe eval default data/fasseg.h5 --face-colours --landmark-prior   # as parse answers
      facepipe eval default data/fasseg.h5 --int8 --calibrate data/fasseg.h5  # the int8 export's networks
      facepipe eval default data/celeba.h5     # another dataset's classes: scored in those both share

    \b
    A cache labelled with other classes than the model's (a FASSEG model on CelebAMask-HQ, Helen, LaPa or
    LFW-PL) is scored in the classes both share; a note says what was renamed, folded or left out.
    """
    cfg = config_from(EvalConfig, kw)
    sheet = sheet or default_sheet(cfg)
    # Before the work: a sheet or JSON named like the model, the cache or a file of the run would replace it.
    inputs = [cfg.cache, cfg.calibrate, *model_inputs(cfg.run)]
    for out in (json_path, sheet):
        refuse_overwriting_input(out, inputs)
    require_suffix(sheet, IMAGE_SUFFIXES, "--sheet")
    rep = reporter(quiet)
    report = run_eval(cfg, rep)
    rep.table(report.title, score_rows(report), SCORE_COLUMNS)
    for note in (report.crop_note, report.result["renamed"] and "note: " + report.result["renamed"]):
        if note:
            click.echo(note, err=True)  # even with -q: the numbers mean something else
    if sheet:
        write_sheet(report, sheet)
        rep.log(f"worst/best faces: {sheet}")
    else:
        rep.log(f"worst/best faces: not drawn ({cfg.run} is not a run folder to put them in); --sheet FILE.png")
    if json_path:
        write_json(json_path, score_json(report))


COMMANDS = [eval_cmd]
