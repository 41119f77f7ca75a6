import click

from facepipe.cli import CONTEXT, quiet_option, reporter


@click.command("parse", context_settings=CONTEXT)
@click.argument("photos", nargs=-1, required=True)
@click.option("--model", default=None, help="Run folder or checkpoint (default: the model shipped with facepipe).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for label maps and overlays.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Faces per network batch.")
@click.option("--min-score", type=float, default=0.2, show_default=True,
              help="Ignore dlib detections scoring below this (lower finds more faces and more false ones).")
@click.option("--device", default="auto", show_default=True)
@quiet_option
def parse_cmd(photos, model, out, batch_size, min_score, device, quiet):
    """Parse every face in photos of any size: label maps in each photo's own coordinates.

    \b
    Writes <photo>.labels.png (uint8 class ids, one map for all faces), <photo>.overlay.png and
    <photo>.json (faces, boxes, landmarks, matrices, per-class pixel counts), plus summary.json with
    alignment and network time reported apart. Photos without a face are listed, not fatal.

    \b
    Examples:
      facepipe parse photo.jpg --out parsed/
      facepipe parse ~/album/ --model runs/s1 --out parsed/
    """
    from facepipe.parse import Parser, collect_photos, parse_photos

    rep = reporter(quiet)
    parser = Parser.load(model, device)
    s = parse_photos(parser, collect_photos(photos), out, batch_size, rep, min_score=min_score)
    rows = [(k, v if not isinstance(v, list) else len(v)) for k, v in s.items()]
    rep.table(f"parse -> {out}", rows, ("", "value"))
    for p in s["no_face"][:20]:
        rep.log(f"[yellow]no face[/] {p}")


COMMANDS = [parse_cmd]
