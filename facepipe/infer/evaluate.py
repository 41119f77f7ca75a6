"""Scoring a parser on a cache: in the original photo's coordinates (default) or in the aligned crop.

Photo coordinates: each face's probabilities are warped back over the whole photo with its matrix;
photo pixels the crop does not cover count as predicted background. The ground truth is the
original-resolution label kept in the cache (`photo_labels`). Crop coordinates are labelled as such.
"""
from __future__ import annotations

import numpy as np

from facepipe.data.face_cache import FaceCache, to_input
from facepipe.infer.beyond_crop import ZOOM, far_seed, hair_beyond, outer_heatmap, outer_matrix, paint_beyond
from facepipe.infer.edges import coarse_head, snap_to_edges
from facepipe.infer.face_colours import FaceColours, drop_unlike_hair, hair_samples
from facepipe.infer.landmark_prior import LandmarkPrior
from facepipe.infer.model import LoadedModel
from facepipe.infer.neck import applies, neck_below, neck_in_crop
from facepipe.infer.photo_fill import network_crops
from facepipe.infer.photo_fill import resolve as resolve_fill
from facepipe.infer.predict import AtSide, predict_probs, probs_to_photo, resample_batch
from facepipe.models.gray_route import GrayRoute
from facepipe.util.errors import BadImage, FacepipeError
from facepipe.util.geometry import crop_face, inside_or_none
from facepipe.util.images import load_rgb
from facepipe.util.metrics import confusion, scores
from facepipe.util.progress import SILENT, Reporter
from facepipe.util.schema import LabelSchema
from facepipe.util.schema_bridge import Bridge, bridge
from facepipe.util.sheets import grid, overlay


def evaluate(model, cache_path, schema, *, split: str = "test", coords: str = "original", heatmap: bool = True,
             device: str = "cpu", batch_size: int = 8, tta_flip: bool = False, reporter: Reporter = SILENT,
             keep_images: bool = False, beyond_crop: bool = False, beyond_zoom: float = ZOOM,
             beyond_above: bool = False, landmark_prior: bool = False, face_colours: bool = False,
             fill: str = "black") -> dict:
    """Returns scores (metrics.scores) + coords + per_image [(id, pixel_acc, overall F1)] + the schema the
    scores are in (a cache labelled with other classes than the model's: the classes both share, renamed
    as `renamed` says; util.schema_bridge).

    beyond_crop: add the hair that runs beyond each face's crop, as `parse --beyond-crop` does
    (infer.beyond_crop: a zoomed-out second pass over the cache's source photo; original coords only),
    and the skin below it (infer.neck: the neck, by the face's colours);
    beyond_zoom and beyond_above vary it (tools/beyond_crop_select.py).
    landmark_prior: lay infer.landmark_prior over each face's probabilities from the cache's landmarks,
    as parse does; face_colours: first, as parse does, infer.edges (coarse heads), infer.face_colours's
    re-split of background, hair and skin and the neck below the chin by those colours (infer.neck); with
    beyond_crop, they judge the hair beyond the crop too (face_colours.drop_unlike_hair).
    fill: "edge" shows the network colour crops filled beyond their photo, as parse does for a model
    whose file asks for it (infer.photo_fill; evaluate_model resolves "model"); "black": as cut."""
    _check(coords, beyond_crop, schema)
    ds = FaceCache(cache_path, split=split, heatmap=heatmap)
    rename, scored = scoring_schema(schema, ds.schema)
    n = scored.num_classes
    cm_total = np.zeros((n, n), np.int64)
    per_image, kept, f = [], [], ds.file
    _check_labels(coords, f, cache_path)
    flip_perm = schema.flip_permutation()
    prior = LandmarkPrior(schema) if landmark_prior else None
    colours = FaceColours(schema) if face_colours else None
    model.eval()
    with reporter.task(f"eval {split} ({coords})", len(ds)) as advance:
        for start in range(0, len(ds), batch_size):
            idx = ds.indices[start: start + batch_size]
            imgs = f.read("images", idx)
            hms = f.read("heatmaps", idx) if heatmap else None
            probs = _probs(model, hms, fill, flip_perm, tta_flip, device, f, idx, imgs, colours, prior)
            if beyond_crop:
                outer, mats, outer_rgb = _outer_pass(f, idx, hms, model, flip_perm, tta_flip, device, beyond_zoom, fill)
            for k, j in enumerate(idx):
                pred, target, image = _answer(probs[k], imgs[k], f, j, coords)
                if beyond_crop:  # photo coordinates only (_check)
                    _paint_beyond(pred, probs[k].argmax(0), outer[k].argmax(0), mats[k], schema.index("hair"),
                                  beyond_zoom, beyond_above, f, j, hms[k:k + 1] if hms is not None else None,
                                  (model, flip_perm, tta_flip, device, fill),
                                  (probs[k], imgs[k], outer_rgb[k], schema),
                                  colours.stray if colours is not None else None)
                pred, target, cm = _confusion(pred, target, rename, n)
                cm_total += cm
                s = scores(cm, scored)
                per_image.append((ds.ids[j], s["pixel_acc"], s["overall_f1"]))  # ids cover the whole file
                if keep_images:
                    kept.append((ds.ids[j], int(j), pred, target, image))
                advance()
    out = scores(cm_total, scored)
    out.update({"coords": coords, "split": split, "faces": len(ds), "tta_flip": tta_flip,
                "per_image": per_image, "confusion": cm_total.tolist(), "classes": list(scored.classes),
                "renamed": rename.note if rename is not None else None})
    if keep_images:  # with the schema they are drawn in
        out["_images"], out["_schema"] = kept, scored
    return out


def _answer(probs, crop, f, j, coords: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(prediction, truth, the crop to show or None) of face j: in its crop, or warped back onto its photo."""
    if coords == "aligned":
        return probs.argmax(0).astype(np.uint8), f.read("labels", j), crop
    target = f.photo_label(j)
    return probs_to_photo(probs, f.read("matrices", j), target.shape).argmax(-1).astype(np.uint8), target, None


def scoring_schema(model: LabelSchema, data: LabelSchema | None) -> tuple[Bridge | None, LabelSchema]:
    """(renaming or None, the schema the scores are in). A cache with the model's classes is scored by its
    own schema (its dataset's overall set and groups); one with other classes in the classes both share."""
    if data is None:  # a cache written before caches kept their schema
        return None, model
    rename = bridge(model, data)
    return (rename, rename.schema) if rename is not None else (None, data)


def _check_labels(coords: str, f, cache_path) -> None:
    if coords == "original" and not f.has_photo_labels:
        raise FacepipeError(f"{cache_path} has no photo_labels; score with --coords aligned or rebuild the cache.")


def _check(coords: str, beyond_crop: bool, schema) -> None:
    if coords not in ("original", "aligned"):
        raise FacepipeError("coords must be 'original' or 'aligned'")
    if beyond_crop and coords != "original":
        raise FacepipeError("--beyond-crop scores hair outside the crop: it needs --coords original.")
    if beyond_crop and "hair" not in schema.classes:
        raise FacepipeError(f"--beyond-crop follows hair, and schema {schema.name} has no class called hair.")


def _shown(imgs: np.ndarray, hms, inside, fill: str) -> tuple:
    """(the network's input batch, the batch the router reads or None when it is the same): the crops
    filled beyond their photo for fill "edge" (infer.photo_fill), as cut for the router."""
    shown = network_crops(imgs, inside, fill)
    if shown is None:
        return to_input(imgs, hms), None
    return to_input(np.stack(shown), hms), to_input(imgs, hms)


def _predict(model, xs: tuple, flip_perm, tta_flip: bool, device: str) -> np.ndarray:
    """Probabilities (N x C x S x S) of `_shown`'s batches: a two-branch model's router reads the crops as cut."""
    x, raw = (t if t is None else t.to(device) for t in xs)
    net = model.net if isinstance(model, AtSide) else model
    if raw is not None and isinstance(model, AtSide) and raw.shape[-1] != model.side:
        raw = resample_batch(raw, model.side)  # where the router reads a batch of the model's side, as without fill
    routes = net.routes(raw) if raw is not None and isinstance(net, GrayRoute) else None
    return predict_probs(model, x, flip_perm, tta_flip, autocast=device.startswith("cuda"),
                         routes=routes).cpu().numpy()


def _confusion(pred, target, rename: Bridge | None, n: int) -> tuple:
    """(pred, target, their confusion matrix), both renamed into the classes they share when the cache's
    classes are not the model's (util.schema_bridge)."""
    if rename is not None:
        pred, target = rename.pred[pred], rename.true[target]
    return pred, target, confusion(pred, target, n)


def _probs(model, hms, fill: str, flip_perm, tta_flip: bool, device: str, f, idx, imgs,
           colours: FaceColours | None, prior: LandmarkPrior | None) -> np.ndarray:
    """The network's probabilities for faces `idx` (N x C x S x S; crops `imgs`, heatmaps `hms`, shown filled
    beyond the photo for fill "edge"), re-split by the faces' own colours and with the landmark prior laid
    over them (from the cache's landmarks) when asked, in parse's order."""
    inside = f.inside_photo(idx) if colours is not None or fill == "edge" else None  # colour samples: within
    probs = _predict(model, _shown(imgs, hms, inside, fill), flip_perm, tta_flip, device)
    edges = colours is not None and coarse_head(model)
    for k, j in enumerate(idx if colours is not None or prior is not None else ()):
        labels = probs[k].argmax(0)  # kept up to date by the colours, read by the prior
        points = f.read("landmarks", j)[:int(f.read("n_landmarks", j))]
        if colours is not None:
            if edges:  # onto the crop's edges first (infer.edges)
                snap_to_edges(probs[k], imgs[k], colours.classes, labels)
            colours.apply(probs[k], imgs[k], labels, inside[k])
            if applies(colours.names):  # the neck below the chin, by the same colours (infer.neck)
                neck_in_crop(probs[k], labels, imgs[k], points, colours.names)
        if prior is not None:
            prior.apply(probs[k], points, labels)
    return probs


def _paint_beyond(pred, first, second, outer_mat, hair: int, zoom: float, above: bool, f, j, hm, net,
                  neck, judge: tuple | None = None) -> None:
    """Hair beyond face j's crop painted into pred (photo labels), as parse does: the second pass's, then,
    where that hair runs on out of the second crop, a third pass's over a crop zoom**2 as wide; then the
    skin below the crop (neck: the face's probs, crop and second crop's RGB, and the schema). judge:
    (background id, hair id) when the face's colours have a say: each pass's added pieces that look more
    like its backdrop than like its hair are dropped, as parse drops them."""
    samples = hair_samples(neck[0], neck[1], first, *judge, f.inside_photo(j)[0]) if judge else None
    masks, mats = [drop_unlike_hair(hair_beyond(first, second, hair, zoom, above), neck[2], samples)], [outer_mat]
    seed = far_seed(first, masks[0], hair)
    if seed is not None:
        third, far, rgb = _outer_pass(f, [j], hm, *net[:4], zoom * zoom, net[4])
        masks.append(drop_unlike_hair(hair_beyond(None, third[0].argmax(0), hair, zoom, above, seed=seed), rgb[0],
                                      samples))
        mats.append(far[0])
    paint_beyond(pred, masks, mats, [f.read("matrices", j)], first.shape[0], hair)
    if zoom == ZOOM and applies(neck[3].classes):  # at parse's zoom, where the rule was checked
        _paint_skin(pred, *neck[:3], outer_mat, neck[3].classes)


def _paint_skin(pred, probs, crop, outer, outer_mat, classes) -> None:
    """The skin below a face's crop (infer.neck) painted into pred over background, as parse does
    (a cache's photo holds one face: no other crop to keep out of)."""
    mask = neck_below(probs, probs.argmax(0), crop, outer, classes)
    if mask is not None:
        paint_beyond(pred, [mask], [outer_mat], [], crop.shape[0], list(classes).index("skin"),
                     over=list(classes).index("background"))


def _outer_pass(f, idx, hms, model, flip_perm, tta_flip: bool, device: str, zoom: float = ZOOM,
                fill: str = "black"):
    """The zoomed-out second crops of faces `idx`, cut from their source photos, and their
    probabilities: (probs N x C x S x S, photo -> outer crop matrices, the crops' RGB)."""
    crops, heat, mats, insides = [], [], [], []
    for k, j in enumerate(idx):
        m = outer_matrix(f.read("matrices", j), f.size, zoom)
        path = f.strings("photos", j)
        try:
            rgb = load_rgb(path)
        except BadImage as e:  # the cache keeps paths: its source photos may have moved since
            raise FacepipeError(f"--beyond-crop reads the cache's source photos, and {path} cannot be read "
                                f"({e}); score without it or rebuild the cache where the photos are.") from None
        crops.append(crop_face(rgb, m, f.size))
        insides.append(inside_or_none(m, f.size, rgb.shape[:2]))
        heat.append(outer_heatmap(hms[k], zoom) if hms is not None else None)
        mats.append(m)
    xs = _shown(np.stack(crops), np.stack(heat) if hms is not None else None, insides, fill)
    return _predict(model, xs, flip_perm, tta_flip, device), mats, crops


def evaluate_model(m: LoadedModel, cache_path, fill: str = "model", **kw) -> dict:
    """`evaluate` of a loaded model: its network, run at its own crop side (infer.predict.AtSide: crops of
    another side resampled to it), schema, heatmap channel and device; beyond the photo, what its file asks
    for (fill "model") or `fill` (infer.photo_fill)."""
    return evaluate(AtSide(m.net, m.size), cache_path, m.schema, heatmap=m.heatmap, device=str(m.device),
                    fill=resolve_fill(fill, m.checkpoint), **kw)


def best_worst_sheet(result: dict, cache_path, schema, n: int = 4):
    """PNG rows: worst and best faces by pixel accuracy: photo | truth | prediction (in `schema`: the
    classes scored, result["_schema"])."""
    items = sorted(result["_images"], key=lambda t: dict((a, b) for a, b, _ in result["per_image"])[t[0]])
    pick = items if len(items) <= 2 * n else items[:n] + items[-n:]  # a small split: each face once
    acc = {a: b for a, b, _ in result["per_image"]}
    ds = FaceCache(cache_path, need_labels=False)
    f = ds.file
    rows, caps = [], []
    for iid, j, pred, target, image in pick:
        img = image
        if img is None:  # photo coordinates: show the original photo when it is still there
            path = f.strings("photos", j)
            try:
                img = load_rgb(path)
                if img.shape[:2] != target.shape:
                    img = None
            except Exception:
                img = None
            if img is None:
                img = schema.colorize(target)
        rows.append([img, overlay(img, target, schema, 0.6), overlay(img, pred, schema, 0.6)])
        caps.append(f"{iid} acc {acc[iid]:.3f}")
    return grid(rows, caps, tile=200)
