import click

from facepipe.cli.options import (
    BATCH,
    CONTEXT,
    FINITE,
    WORKERS,
    comma,
    config_kwargs,
    field_option,
    force_option,
    max_side_option,
    quiet_option,
    reporter,
    upsample_option,
)
from facepipe.infer.parse import DETECTORS, Parser, collect_photos, parse_photos
from facepipe.infer.parse_work import OUTPUTS
from facepipe.infer.photo_fill import FILLS
from facepipe.util.errors import FacepipeError
from facepipe.util.images import unreadable_note


def _outputs(ctx, param, value):
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [n for n in names if n not in OUTPUTS]
    if bad or not names:
        raise click.BadParameter(f"{value!r}: a comma list of {', '.join(OUTPUTS)}.")
    return names


@click.command("parse", context_settings=CONTEXT)
@click.argument("photos", nargs=-1, required=True)
@click.option("--model", default=None,
              help="Run folder, checkpoint file or bundled model name: default (= fast), accurate "
                   "(`facepipe models` lists them).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for label maps and overlays.")
@field_option(parse_photos, "batch_size", "--batch-size", type=BATCH, help="Faces per network batch.")
@field_option(parse_photos, "min_score", "--min-score", type=FINITE,
              help="Ignore dlib detections scoring below this (lower finds more faces and more false ones).")
@field_option(parse_photos, "confirm_below", "--confirm-below", type=FINITE,
              help="HOG hits scoring under this are kept only where dlib's CNN also finds a face (a look at the "
                   "region around each, about 0.5 s): HOG's weak hits are mostly small or dim faces, but clutter "
                   "scores there too. 0 keeps every hit down to --min-score.")
@field_option(parse_photos, "detector", "--detector", type=click.Choice(list(DETECTORS)),
              help="dlib face detector: hog (frontal faces, fast), cnn (profiles too, ~20x slower on a CPU) or "
                   "hog+cnn (the CNN only on photos where HOG finds no face); a face whose landmarks cannot be "
                   "trusted (a profile) is cut from its box, a face on its side (a photo turned without an "
                   "EXIF tag) gets its landmarks from the quarter turn that makes it upright, and a photo with no face "
                   "scoring 0.2 either way is searched upside down too.")
@upsample_option(parse_photos)
@max_side_option(parse_photos)
# The CLI's default is 0 (every core); parse_photos' own is 1 (everything in the calling process).
@field_option(parse_photos, "workers", "--workers", type=WORKERS, default=0, show_default="all cores",
              help="Processes for detection and writing (1: everything in this process).")
@field_option(parse_photos, "outputs", "--outputs", render=comma, callback=_outputs,
              help="What to write per photo: any of labels, overlay, json.")
@field_option(parse_photos, "tta_flip", "--tta-flip", is_flag=True,
              help="Average each face's prediction with its mirror's: twice the network's time, a little more "
                   "accurate (+0.8 points of overall F1 for the bundled model on FASSEG V2 test).")
@field_option(parse_photos, "beyond_crop", "--beyond-crop/--crop-only",
              help="Follow hair that runs beyond the face's crop (long hair, the back of a turned head) with a "
                   "second pass of the network over a crop 1.5 times as wide, below and beside the crop, and "
                   "where that hair runs on down (long hair to the waist) a third over a crop 2.25 times as wide; "
                   "only hair that continues the face's own hair is added. The neck below the crop is followed "
                   "too, by the face's own skin colour (no network pass). --crop-only labels the crop alone "
                   "(half the network's time).")
@field_option(parse_photos, "face_colours", "--face-colours/--no-face-colours",
              help="Move the boundaries between background, hair and skin onto the photo's own edges (a "
                   "guided filter; for the students, the default among them, not for `accurate`); where the "
                   "network hesitates between them, let the face's own colours "
                   "(learned from the pixels it is sure of) settle it: light, grey and red hair, gray photos, "
                   "backdrops; a hair blob apart from the face that looks more like the backdrop than like "
                   "the face's hair is not hair (fur, foliage, a painting), nor is a piece of the hair beyond the "
                   "crop that does (a dress below long hair); and background below the chin "
                   "that the face's skin colour explains is the neck.")
@field_option(parse_photos, "landmark_prior", "--landmark-prior/--no-landmark-prior",
              help="Lay the face's 68 landmarks over the network's answer: inside the inner lip contour is mouth "
                   "(the teeth of a smile are not skin), a second blob of eyes, nose or mouth far from its "
                   "landmarks is not that part, and skin far from the face and ringed by background (a lamp, "
                   "a hand) is background. Faces without trusted landmarks (profiles cut from their box) "
                   "are left as the network says.")
@field_option(parse_photos, "fill", "--fill-beyond-photo", "fill", type=click.Choice(FILLS),
              help="What the network sees where a face's crop reaches past the photo's edge: `edge`, the mean "
                   "colour of the photo along that edge (a plain backdrop), or `black`, the crop as cut; `model` "
                   "takes what the model's file asks for (the bundled default: edge, for colour faces; accurate: "
                   "black). Black above a head made a strip of backdrop along a photo's top edge hair, and white "
                   "hair skin, for the default.")
@field_option(Parser.load, "device", "--device")
@force_option
@quiet_option
def parse_cmd(photos, model, out, device, quiet, **kw):
    """Parse every face in photos of any size: label maps in each photo's own coordinates.

    \b
    Works out of the box with the model shipped with facepipe. Writes per photo:
      <photo>.labels.png   palette PNG: pixel value = class id, viewers show the class colours
      <photo>.overlay.png  the labels over the photo, the legend in the corner hiding least of them
      <photo>.json         faces, boxes, landmarks, matrices, per-class pixel counts, schema, model
                           (and each face's branch, color or gray, for a model with a gray branch;
                           colour_pixels and prior_pixels: crop pixels the two face rules changed;
                           roll: 90, 180 or 270 for a face found on its side or upside down
                           and turned upright;
                           hair_beyond_crop_pixels, skin_beyond_crop_pixels: what the passes
                           beyond the crop added)
    plus summary.json (counts, failures, seconds per step) and manifest.json. A rerun skips the photos
    already parsed with the same model (--force redoes them). Photos without a face or that cannot be
    read are named on the terminal; the exit code is 1 when no photo at all was parsed.

    \b
    Examples:
      facepipe parse photo.jpg --out parsed/
      facepipe parse ~/album/ --model runs/s1 --out parsed/ --outputs labels,json
      facepipe parse ~/album/ --detector cnn --out parsed-cnn/   # also faces in profile; slower
      facepipe parse ~/album/ --detector hog+cnn --out parsed/    # the CNN only where HOG finds no face
      facepipe parse group.jpg --upsample 1 --out parsed/         # small faces: ~90 px in a 4000x3000 photo
      facepipe parse ~/album/ --tta-flip --out parsed-tta/       # mirror-averaged: a little more accurate
      facepipe parse ~/album/ --crop-only --out parsed/           # no hair or neck beyond the crop
      facepipe parse ~/album/ --no-landmark-prior --no-face-colours --out raw/   # the network alone
    """
    rep = reporter(quiet)
    parser = Parser.load(model, device)
    files = collect_photos(photos, own=out)
    if files.own:
        rep.log(f"left out {files.own} image(s) in the output folder {out} (parse's own outputs are not photos)")
    if getattr(files, "dangling", None):
        rep.log(f"[yellow]skipped {len(files.dangling)} link(s) that lead nowhere[/], e.g. {files.dangling[0]}")
    if files.unreadable:
        rep.log(f"[yellow]{unreadable_note(files.unreadable)}[/]")
    s = parse_photos(parser, files, out, reporter=rep, **config_kwargs(parse_photos, kw))
    rows = _summary_rows(s, kw, parser.model.gray_branch)
    rep.table(f"parse -> {out}", rows, ("", "value"))
    for p in s["no_face"][:20]:
        rep.log(f"[yellow]no face[/] {p}")
    if len(s["no_face"]) > 20:
        rep.log(f"... and {len(s['no_face']) - 20} more without a face (summary.json lists them)")
    if s["no_face"] and kw.get("detector", "hog") == "hog":
        rep.log("HOG finds upright frontal faces only: --detector hog+cnn also finds profiles and faces on their "
                "side or upside down, as in a photo turned without an EXIF tag (dlib's CNN, on the photos HOG "
                "finds no face in).")
    if s["no_face"] and kw.get("upsample", -1) < 1:
        where = "" if kw.get("upsample", -1) == 0 else ", and from 1200 px on searched without upsampling"
        rep.log(f"Small faces: photos are shrunk to {kw.get('max_side', 1600)} px for detection{where}, where a "
                "face must be about 80 px wide; --upsample 1 finds faces half that size (about 3x the detection "
                "time).")
    if s["photos"] and not s["parsed"]:
        raise FacepipeError(_nothing_parsed(s, out))


COMMANDS = [parse_cmd]


def _nothing_parsed(s: dict, out) -> str:
    """The one line for a run that parsed no face, naming a photo of each kind (with -q the lines that named
    them are not printed)."""
    no_face = f" (e.g. {s['no_face'][0]})" if s["no_face"] else ""
    bad = f" (e.g. {s['unreadable'][0]['photo']})" if s["unreadable"] else ""
    return (f"no face parsed in {s['photos']} photo(s): {len(s['no_face'])} without a face{no_face}, "
            f"{len(s['unreadable'])} unreadable{bad}; {out}/summary.json lists them.")


def _summary_rows(s: dict, kw: dict, gray_branch: bool) -> list[tuple]:
    """The end-of-run table's rows from parse's summary."""
    sec = s["stage_seconds"]
    total = sum(sec.values()) or 1.0
    faces = s["faces"]
    if s.get("faces_uncounted_photos"):  # resumed photos without a .json record: their faces are not known
        faces = f"{faces} + those of {s['faces_uncounted_photos']} photo(s) resumed without .json"
    rows = [("photos", s["photos"]), ("parsed (a face or more)", s["parsed"]), ("faces", faces)]
    if kw.get("detector", "hog") != "hog":  # profiles: no heatmap, so their eyes, nose and mouth are weaker
        rows.append(("faces cut from their box (profiles)", s["box_cut"]))
        rows.append(("faces turned upright (on their side, upside down)", s["turned"]))
    if gray_branch:  # two-branch model: how many faces its grayscale weights took
        rows.append(("faces on the gray branch", s["gray_branch"]))
    if s.get("unconfirmed"):
        rows.append(("weak hits dropped (no CNN face there)", s["unconfirmed"]))
    rows += [("already done, skipped", s["resumed"]), ("no face", len(s["no_face"])),
             ("unreadable", len(s["unreadable"])), ("grayscale", len(s["grayscale"])),
             ("photos/s (the whole run, start-up included)", s["photos_per_second"]),
             ("wall seconds", s["wall_seconds"])]
    return rows + [(f"{k} (share of work)", f"{v:.2f} s  {100 * v / total:.0f}%") for k, v in sec.items()]
