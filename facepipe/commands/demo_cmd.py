import click

from facepipe.cli import CONTEXT, quiet_option, reporter
from facepipe.commands.options import COUNT, EPOCHS, FINITE, SIZE


@click.command("demo", context_settings=CONTEXT)
@click.argument("out", type=click.Path(file_okay=False), default="runs/demo")
# A quarter of them (rounded) are the test split: 4 leaves one to test and three to train.
@click.option("--faces", type=click.IntRange(min=4), default=48, show_default=True,
              help="Labelled cartoon faces to draw.")
@click.option("--unlabelled", type=COUNT, default=24, show_default=True,
              help="Unlabelled cartoon faces (pseudo-labelled by the teacher for the student).")
@click.option("--size", type=SIZE, default=64, show_default=True, help="Aligned crop side of the smoke run.")
@click.option("--epochs", type=EPOCHS, default=30, show_default=True, help="Teacher epochs (batches of 4 faces).")
@click.option("--student-epochs", type=EPOCHS, default=8, show_default=True, help="Student epochs.")
@click.option("--min-score", type=FINITE, default=0.2, show_default=True,
              help="Lowest dlib detector score counted as a face (landmarks and parse).")
@click.option("--no-bench", is_flag=True, help="Skip the speed step.")
@click.option("--no-export", is_flag=True, help="Skip the ONNX export step.")
@quiet_option
def demo_cmd(out, faces, unlabelled, size, epochs, student_epochs, min_score, no_bench, no_export, quiet):
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
    from facepipe.demo import DemoConfig, run_demo

    rep = reporter(quiet)
    cfg = DemoConfig(out=out, faces=faces, unlabelled=unlabelled, size=size, teacher_epochs=epochs,
                     student_epochs=student_epochs, min_score=min_score, bench=not no_bench, export=not no_export)
    r = run_demo(cfg, rep)
    rows = r["rows"] + [("total", r["seconds"], "")]
    rep.table(f"facepipe demo -> {out}", rows, ("stage", "seconds", "result"))
    rep.log("[yellow]Cartoon scores above: a smoke run (about a minute of training on drawn faces). They show "
            "that every stage runs; these models are not for use.[/] The photo was parsed by the bundled model.")
    if r["overlay"]:
        click.echo(f"parsed photo: {r['overlay']}")
    else:
        click.echo(f"no face was parsed in the photo; see {out}/photo-parsed/summary.json")


COMMANDS = [demo_cmd]
