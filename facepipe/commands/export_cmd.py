import click

from facepipe.cli import CONTEXT


@click.command("export", context_settings=CONTEXT)
@click.argument("run")
@click.option("--onnx", "onnx_path", required=True, type=click.Path(dir_okay=False), help="ONNX file to write.")
@click.option("--cache", default=None, help="Faces to check the export on (default: the run's cache).")
def export_cmd(run, onnx_path, cache):
    """Export a trained run to ONNX (dynamic batch) and check it against torch on real faces.

    \b
    Example:
      facepipe export runs/s1 --onnx s1.onnx
    """
    from facepipe.export import export_run
    from facepipe.progress import Reporter

    r = export_run(run, onnx_path, cache)
    Reporter(quiet=False).table(f"export -> {onnx_path}", list(r.items()), ("", "value"))


COMMANDS = [export_cmd]
