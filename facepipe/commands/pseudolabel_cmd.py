import click

from facepipe.cli import CONTEXT, force_option, quiet_option, reporter
from facepipe.commands.options import BATCH, THREADS


@click.command("pseudolabel", context_settings=CONTEXT)
@click.option("--teacher", required=True, help="Teacher run folder (facepipe train) or checkpoint.")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("out", required=False, type=click.Path(dir_okay=False))
@click.option("--tta-flip/--no-tta-flip", default=True, show_default=True,
              help="Average the teacher's prediction with its mirrored one.")
@click.option("--storage", type=click.Choice(["uint8", "float16"]), default="uint8", show_default=True,
              help="Probabilities stored as uint8 (x255) or float16.")
@click.option("--batch-size", type=BATCH, default=16, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=THREADS, default=0, show_default="all cores, shared among torchrun's ranks")
@click.option("--sheet", type=click.Path(dir_okay=False), default=None, help="Sample sheet PNG (default: OUT.png).")
@force_option
@quiet_option
def pseudolabel_cmd(teacher, src, out, tta_flip, storage, batch_size, device, threads, sheet, force, quiet):
    """Label unlabelled aligned faces with a teacher's soft predictions (for `distill`).

    \b
    SRC is a cache of unlabelled faces (landmarks -> align -> cache on your photos). OUT defaults to
    TEACHER/pseudo/unlabeled.h5, where `facepipe distill --teacher TEACHER` looks for it.
    Resumable: rerun after an interrupt to continue.

    \b
    Examples:
      facepipe landmarks ~/datasets/utkface data/utk-lm
      facepipe align ~/datasets/utkface data/utk-aligned --landmarks data/utk-lm
      facepipe cache data/utk-aligned data/utk.h5
      facepipe pseudolabel --teacher runs/t1 data/utk.h5
      torchrun --standalone --nproc-per-node 2 -m facepipe pseudolabel --teacher runs/t1 data/utk.h5
    """
    from pathlib import Path

    from facepipe.atomic import save_image
    from facepipe.distributed import is_main
    from facepipe.pseudolabel import PseudoConfig, default_output, pseudo_sheet, run_pseudolabel

    out = out or str(default_output(teacher))
    rep = reporter(quiet)
    m = run_pseudolabel(PseudoConfig(teacher=teacher, src=src, out=out, tta_flip=tta_flip, storage=storage,
                                     batch_size=batch_size, device=device, threads=threads, force=force), rep)
    if not is_main():
        return  # rank 0 draws the sheet and prints the table
    sheet = sheet or str(Path(out).with_suffix(".png"))
    save_image(sheet, pseudo_sheet(out))
    rep.table(f"pseudolabel -> {out}", list(m["counts"].items()) + [("seconds", m["seconds"]), ("sheet", sheet)],
              ("", "value"))


COMMANDS = [pseudolabel_cmd]
