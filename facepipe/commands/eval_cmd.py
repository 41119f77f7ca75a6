import click

from facepipe.cli import CONTEXT, quiet_option, reporter


@click.command("eval", context_settings=CONTEXT)
@click.argument("run")
@click.argument("cache", type=click.Path(dir_okay=False))
@click.option("--split", default="test", show_default=True)
@click.option("--coords", type=click.Choice(["original", "aligned"]), default="original", show_default=True,
              help="Score in the original photo (predictions warped back) or in the aligned crop.")
@click.option("--checkpoint", "which", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--tta-flip", is_flag=True, help="Average with the mirrored prediction.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write scores as JSON.")
@click.option("--sheet", type=click.Path(dir_okay=False), default=None,
              help="PNG of the worst and best faces (default: RUN/eval-<split>.png).")
@click.option("--device", default="auto", show_default=True)
@quiet_option
def eval_cmd(run, cache, split, coords, which, tta_flip, json_path, sheet, device, quiet):
    """Score a trained run (or checkpoint file) on a cache split.

    \b
    Per-class F1, merged groups and the dataset's overall F1 from one confusion matrix accumulated
    over the split, plus pixel accuracy and mean F1 (non-background classes).

    \b
    Examples:
      facepipe eval runs/t1 data/fasseg.h5
      facepipe eval runs/t1 data/fasseg.h5 --coords aligned --json t1-aligned.json
    """
    from pathlib import Path

    from facepipe.atomic import save_image, write_json
    from facepipe.checkpoint import build_from_checkpoint, load_checkpoint, run_checkpoint
    from facepipe.device import pick_device
    from facepipe.evaluate import best_worst_sheet, evaluate

    ck_path = run_checkpoint(run, which)
    ck = load_checkpoint(ck_path)
    model, schema = build_from_checkpoint(ck)
    dev = pick_device(device)
    rep = reporter(quiet)
    r = evaluate(model.to(dev), cache, schema, split=split, coords=coords, heatmap=ck["heatmap"], device=str(dev),
                 tta_flip=tta_flip, reporter=rep, keep_images=True)
    rows = [(f"F1 {k}", v) for k, v in r["per_class_f1"].items()]
    rows += [(f"F1 {k} (merged)", v) for k, v in r["group_f1"].items()]
    rows += [("overall F1 " + "+".join(schema.overall) if len(schema.overall) <= 4 else "overall F1", r["overall_f1"]),
             ("mean F1", r["mean_f1"]), ("pixel accuracy", r["pixel_acc"]), ("faces", r["faces"])]
    rep.table(f"{ck_path} on {split} ({coords} coordinates)", rows, ("", "score"))
    sheet = sheet or (str(Path(run) / f"eval-{split}.png") if Path(run).is_dir() else None)
    if sheet:
        save_image(sheet, best_worst_sheet(r, cache, schema))
        rep.log(f"worst/best faces: {sheet}")
    if json_path:
        write_json(json_path, {"per_class_f1": r["per_class_f1"], "group_f1": r["group_f1"],
                               "overall_f1": r["overall_f1"], "mean_f1": r["mean_f1"], "pixel_acc": r["pixel_acc"],
                               "coords": coords, "split": split, "faces": r["faces"], "checkpoint": str(ck_path),
                               "tta_flip": tta_flip})


COMMANDS = [eval_cmd]
