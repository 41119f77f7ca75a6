from pathlib import Path

import click

from facepipe.cli.options import (
    BATCH,
    CONTEXT,
    THREADS,
    config_from,
    field_option,
    force_option,
    quiet_option,
    reporter,
)
from facepipe.data.pseudo_file import default_output
from facepipe.infer.checkpoint import bundled_checkpoint
from facepipe.learn.pseudolabel import PseudoConfig, pseudo_sheet, run_pseudolabel
from facepipe.util.atomic import save_image
from facepipe.util.distributed import is_main
from facepipe.util.errors import FacepipeError


@click.command("pseudolabel", context_settings=CONTEXT)
@click.option("--teacher", required=True, help="Teacher run folder (facepipe train) or checkpoint.")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("out", required=False, type=click.Path(dir_okay=False))
@field_option(PseudoConfig, "tta_flip", "--tta-flip/--no-tta-flip",
              help="Average the teacher's prediction with its mirrored one.")
@field_option(PseudoConfig, "storage", "--storage", type=click.Choice(["uint8", "float16"]),
              help="Probabilities stored as uint8 (x255) or float16.")
@field_option(PseudoConfig, "outside_photo", "--outside-photo", type=click.Choice(["ignore", "teacher"]),
              help="Crop pixels outside the photo a face was cut from (the black fill around a tight photo): "
                   "ignore (no probabilities there: distill leaves them out of its loss) or what the teacher "
                   "says of the fill (background).")
@field_option(PseudoConfig, "batch_size", "--batch-size", type=BATCH)
@field_option(PseudoConfig, "device", "--device")
@field_option(PseudoConfig, "threads", "--threads", type=THREADS,
              show_default="all cores, shared among torchrun's ranks")
@click.option("--sheet", type=click.Path(dir_okay=False), default=None, help="Sample sheet PNG (default: OUT.png).")
@force_option
@quiet_option
def pseudolabel_cmd(out, sheet, quiet, **kw):
    """Label unlabelled aligned faces with a teacher's soft predictions (for `distill`).

    \b
    SRC is a cache of unlabelled faces (landmarks -> align -> cache on your photos). OUT defaults to
    TEACHER/pseudo/unlabeled.h5, where `facepipe distill --teacher TEACHER` looks for it; a teacher
    that is a checkpoint file or a bundled model (accurate) needs OUT.
    Resumable: rerun after an interrupt to continue. The labels keep SRC's crop side; a teacher
    trained at another (the bundled accurate: 384 px) labels the faces resampled to its own.

    \b
    Examples:
      facepipe landmarks ~/datasets/utkface data/utk-lm
      facepipe align ~/datasets/utkface data/utk-aligned --landmarks data/utk-lm
      facepipe cache data/utk-aligned data/utk.h5
      facepipe pseudolabel --teacher runs/t1 data/utk.h5
      torchrun --standalone --nproc-per-node 2 -m facepipe pseudolabel --teacher runs/t1 data/utk.h5
    """
    t = Path(kw["teacher"])
    if out is None and (t.is_file() or (not t.exists() and bundled_checkpoint(kw["teacher"]) is not None)):
        # A checkpoint file or a bundled name has no run folder; a folder named after a bundled model in the
        # working directory would hide it from then on. (A path that does not exist is named by the loader.)
        raise FacepipeError(f"--teacher {kw['teacher']} is not a run folder to keep the pseudo-labels in: name "
                            f"OUT, e.g. `facepipe pseudolabel --teacher {kw['teacher']} {kw['src']} "
                            "data/pseudo.h5`.")
    out = out or str(default_output(kw["teacher"]))
    rep = reporter(quiet)
    m = run_pseudolabel(config_from(PseudoConfig, kw, out=out), rep)
    if not is_main():
        return  # rank 0 draws the sheet and prints the table
    sheet = sheet or str(Path(out).with_suffix(".png"))
    save_image(sheet, pseudo_sheet(out))
    side = [("teacher's crop side", f"{m['teacher_size']}px")] if "teacher_size" in m else []  # older files lack it
    rep.table(f"pseudolabel -> {out}", list(m["counts"].items()) + side + [("seconds", m["seconds"]), ("sheet", sheet)],
              ("", "value"))


COMMANDS = [pseudolabel_cmd]
