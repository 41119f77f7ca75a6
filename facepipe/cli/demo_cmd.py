import click

from facepipe.cli.options import (
    CONTEXT,
    COUNT,
    EPOCHS,
    FINITE,
    SIZE,
    config_from,
    field_default,
    field_option,
    quiet_option,
    reporter,
)
from facepipe.demo import DemoConfig, run_demo


@click.command("demo", context_settings=CONTEXT)
@click.argument("out", type=click.Path(file_okay=False), default=field_default(DemoConfig, "out"))
# A quarter of them (rounded) are the test split: 4 leaves one to test and three to train.
@field_option(DemoConfig, "faces", "--faces", type=click.IntRange(min=4),
              help="Labelled cartoon faces to draw.")
@field_option(DemoConfig, "unlabelled", "--unlabelled", type=COUNT,
              help="Unlabelled cartoon faces (pseudo-labelled by the teacher for the student).")
@field_option(DemoConfig, "size", "--size", type=SIZE, help="Aligned crop side of the smoke run.")
@field_option(DemoConfig, "teacher_epochs", "--epochs", type=EPOCHS, help="Teacher epochs (batches of 4 faces).")
@field_option(DemoConfig, "student_epochs", "--student-epochs", type=EPOCHS, help="Student epochs.")
@field_option(DemoConfig, "min_score", "--min-score", type=FINITE,
              help="Lowest dlib detector score counted as a face (landmarks and parse).")
@click.option("--no-bench", is_flag=True, help="Skip the speed step.")
@click.option("--no-export", is_flag=True, help="Skip the ONNX export step.")
@quiet_option
def demo_cmd(epochs, no_bench, no_export, quiet, **kw):
    """Every stage once on embedded data (no download), ending with a parsed real photo.

    \b
    1. A smoke run on drawn cartoon faces: import -> align -> cache -> train a small teacher ->
       pseudolabel unlabelled cartoons -> distill a student -> eval -> bench -> export. About a
       minute of training: its scores show the chain runs; the models are not for use.
    2. scikit-image's astronaut photo: landmarks (faces scoring under --min-score dropped) -> align ->
       parse with the bundled model (facepipe/assets/default.pt). Its overlay is printed last.
    Every stage writes the folders a real run writes; rerunning skips finished stages.

    \b
    Example:
      facepipe demo runs/demo
    """
    rep = reporter(quiet)
    cfg = config_from(DemoConfig, kw, teacher_epochs=epochs, bench=not no_bench, export=not no_export)
    r = run_demo(cfg, rep)
    rows = r["rows"] + [("total", r["seconds"], "")]
    rep.table(f"facepipe demo -> {cfg.out}", rows, ("stage", "seconds", "result"))
    rep.log("[yellow]Cartoon scores above: a smoke run (about a minute of training on drawn faces). They show "
            "that every stage runs; these models are not for use.[/] The photo was parsed by the bundled model.")
    if r["overlay"]:
        click.echo(f"parsed photo: {r['overlay']}")
    else:
        click.echo(f"no face was parsed in the photo; see {cfg.out}/photo-parsed/summary.json")


COMMANDS = [demo_cmd]
