import click

from facepipe.cli import CONTEXT, force_option, quiet_option, reporter
from facepipe.commands.options import BATCH, FINITE, WORKERS
from facepipe.errors import FacepipeError


def _outputs(ctx, param, value):
    from facepipe.parse_work import OUTPUTS

    names = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [n for n in names if n not in OUTPUTS]
    if bad or not names:
        raise click.BadParameter(f"{value!r}: a comma list of {', '.join(OUTPUTS)}.")
    return names


@click.command("parse", context_settings=CONTEXT)
@click.argument("photos", nargs=-1, required=True)
@click.option("--model", default=None,
              help="Run folder, checkpoint file or bundled model name: default (= fast), accurate (`facepipe models` lists them).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for label maps and overlays.")
@click.option("--batch-size", type=BATCH, default=16, show_default=True, help="Faces per network batch.")
@click.option("--min-score", type=FINITE, default=0.2, show_default=True,
              help="Ignore dlib detections scoring below this (lower finds more faces and more false ones).")
@click.option("--detector", type=click.Choice(["hog", "cnn"]), default="hog", show_default=True,
              help="dlib face detector: hog (frontal faces, fast) or cnn (profiles too, ~20x slower on a CPU); "
                   "a face whose landmarks cannot be trusted (a profile) is cut from its box.")
@click.option("--workers", type=WORKERS, default=0, show_default="all cores",
              help="Processes for detection and writing (1: everything in this process).")
@click.option("--outputs", default="labels,overlay,json", show_default=True, callback=_outputs,
              help="What to write per photo: any of labels, overlay, json.")
@click.option("--device", default="auto", show_default=True)
@force_option
@quiet_option
def parse_cmd(photos, model, out, batch_size, min_score, detector, workers, outputs, device, force, quiet):
    """Parse every face in photos of any size: label maps in each photo's own coordinates.

    \b
    Works out of the box with the model shipped with facepipe. Writes per photo:
      <photo>.labels.png   palette PNG: pixel value = class id, viewers show the class colours
      <photo>.overlay.png  the labels over the photo, with a legend
      <photo>.json         faces, boxes, landmarks, matrices, per-class pixel counts, schema, model
    plus summary.json (counts, failures, seconds per step) and manifest.json. A rerun skips the photos
    already parsed with the same model (--force redoes them). Photos without a face or that cannot be
    read are named on the terminal; the exit code is 1 when no photo at all was parsed.

    \b
    Examples:
      facepipe parse photo.jpg --out parsed/
      facepipe parse ~/album/ --model runs/s1 --out parsed/ --outputs labels,json
      facepipe parse ~/album/ --detector cnn --out parsed-cnn/   # also faces in profile; slower
    """
    from facepipe.parse import Parser, collect_photos, parse_photos

    rep = reporter(quiet)
    parser = Parser.load(model, device)
    files = collect_photos(photos)
    if getattr(files, "dangling", None):
        rep.log(f"[yellow]skipped {len(files.dangling)} link(s) that lead nowhere[/], e.g. {files.dangling[0]}")
    s = parse_photos(parser, files, out, batch_size, rep, min_score=min_score, workers=workers,
                     outputs=outputs, force=force, detector=detector)
    sec = s["stage_seconds"]
    total = sum(sec.values()) or 1.0
    rows = [("photos", s["photos"]), ("parsed (a face or more)", s["parsed"]), ("faces", s["faces"]),
            ("already done, skipped", s["resumed"]), ("no face", len(s["no_face"])),
            ("unreadable", len(s["unreadable"])), ("grayscale", len(s["grayscale"])),
            ("photos/s", s["photos_per_second"]), ("wall seconds", s["wall_seconds"])]
    rows += [(f"{k} (share of work)", f"{v:.2f} s  {100 * v / total:.0f}%") for k, v in sec.items()]
    rep.table(f"parse -> {out}", rows, ("", "value"))
    for p in s["no_face"][:20]:
        rep.log(f"[yellow]no face[/] {p}")
    if len(s["no_face"]) > 20:
        rep.log(f"... and {len(s['no_face']) - 20} more without a face (summary.json lists them)")
    if s["photos"] and not s["parsed"]:
        raise FacepipeError(f"no face parsed in {s['photos']} photo(s): {len(s['no_face'])} without a face, "
                            f"{len(s['unreadable'])} unreadable (see above and {out}/summary.json).")


COMMANDS = [parse_cmd]
