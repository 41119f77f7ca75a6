import click

from facepipe.cli import CONTEXT, quiet_option, reporter


@click.command("demo", context_settings=CONTEXT)
@click.argument("out", type=click.Path(file_okay=False), default="runs/demo")
@click.option("--faces", type=int, default=48, show_default=True, help="Procedural labelled faces to draw.")
@click.option("--size", type=int, default=128, show_default=True, help="Aligned crop size.")
@click.option("--epochs", type=int, default=80, show_default=True, help="Teacher and student epochs.")
@quiet_option
def demo_cmd(out, faces, size, epochs, quiet):
    """Run the whole pipeline on the embedded default data (no download).

    \b
    Draws labelled cartoon faces that carry their own landmarks and uses scikit-image's astronaut
    photo for dlib detection, then import -> align -> cache -> train a small teacher -> pseudo-label
    the photo -> distil a student -> parse the photo. Every stage writes the same folders a real run
    does; rerunning skips finished stages.

    \b
    Example:
      facepipe demo runs/demo
    """
    from facepipe.demo import run_demo

    rep = reporter(quiet)
    rows = run_demo(out, n_faces=faces, size=size, epochs=epochs, reporter=rep)
    rep.table(f"demo -> {out}", rows, ("stage", "seconds", "result"))


COMMANDS = [demo_cmd]
