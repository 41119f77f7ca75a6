"""`facepipe parse`: photos in, label maps out, in each photo's own coordinates.

detect (dlib) -> align every face -> parse all faces of a batch of photos together -> warp each face's
probabilities back into the photo -> one label map per photo (where faces overlap, the face more
confident that the pixel is not background wins). Per photo: <stem>.labels.png (uint8 ids),
<stem>.overlay.png and <stem>.json (faces, boxes, landmarks, matrices, per-class pixel counts, timings).
Photos without a face are listed, not fatal.

Under torchrun each rank parses a contiguous share of the photos (whole photo groups, cuda:LOCAL_RANK on
GPUs) and writes summary.part<rank>of<world>.json when its share is done; rank 0 merges the parts into
summary.json. A rerun after a rank died redoes only the shares without a part. Output names are given
over the whole list up front, so ranks never pick the same name for two photos.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facepipe.atomic import save_image, write_json
from facepipe.distributed import setup, split_range
from facepipe.errors import BadImage, FacepipeError
from facepipe.geometry import apply, five_from, fit_similarity, template, warp_image, warp_to_photo
from facepipe.heatmap import draw_heatmap
from facepipe.images import IMAGE_SUFFIXES, list_images, load_rgb
from facepipe.progress import SILENT, Reporter

DEFAULT_MODEL = Path(__file__).parent / "assets" / "default.pt"


@dataclass
class Parser:
    model: torch.nn.Module
    schema: object
    size: int
    iod: float
    heatmap: bool
    device: torch.device

    @classmethod
    def load(cls, run: str | None, device: str = "auto") -> "Parser":
        from facepipe.checkpoint import build_from_checkpoint, load_checkpoint, run_checkpoint
        from facepipe.device import pick_device

        if run is None:
            if not DEFAULT_MODEL.exists():
                raise FacepipeError("no default model is installed with this package; pass --model RUN.")
            path = DEFAULT_MODEL
        else:
            path = run_checkpoint(run)
        ck = load_checkpoint(path)
        model, schema = build_from_checkpoint(ck)
        from facepipe.models.fold import fold_batchnorm

        model = fold_batchnorm(model)  # same function, one memory pass less per conv
        dev = pick_device(device)
        align = ck.get("align") or {}
        return cls(model.to(dev).eval(), schema, int(ck["size"]), float(align.get("iod", 0.22)), bool(ck["heatmap"]),
                   dev)


def collect_photos(paths) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += list_images(p)
        elif p.is_file() or p.is_symlink():
            out.append(p)
        else:
            raise FacepipeError(f"{p} does not exist.")
    if not out:
        raise FacepipeError("no photos given (files or folders of .jpg/.png/...).")
    return out


def _out_stem(photo: Path, taken: set) -> str:
    """A name for one photo's outputs that no other photo of this run uses (a/x.png and b/x.png both
    exist), short enough in bytes for the ".overlay.png" suffix; odd bytes are kept as they are."""
    base = os.fsdecode(os.fsencode(photo.stem)[:200])
    stem, k = base, 1
    while stem in taken:
        stem, k = f"{base}_{k}", k + 1
    taken.add(stem)
    return stem


def _footprint(matrix: np.ndarray, size: int, shape) -> tuple[int, int, int, int]:
    """Photo-pixel bounding box (y0, y1, x0, x1) of the crop's area, clipped to the photo."""
    inv = np.linalg.inv(matrix)
    c = apply(inv, np.array([[0, 0], [size, 0], [0, size], [size, size]], float))
    h, w = shape
    x0, y0 = np.floor(c.min(0)).astype(int)
    x1, y1 = np.ceil(c.max(0)).astype(int) + 1
    return max(0, y0), min(h, y1), max(0, x0), min(w, x1)


def parse_photos(parser: Parser, photos: list[Path], out, batch_size: int = 16, reporter: Reporter = SILENT,
                 min_score: float = 0.2) -> dict:
    out = Path(out)
    d = setup(parser.device)
    if d is None:
        summary = _parse(parser, photos, out, batch_size, reporter, min_score)
        write_json(out / "summary.json", summary)
        return summary
    if parser.device.type == "cuda":
        parser.device = d.device
        parser.model.to(d.device)
    lo, hi = split_range(len(photos), d, max(1, batch_size // 2))  # whole photo groups
    part = out / f"summary.part{d.rank}of{d.world}.json"
    mine = [str(p) for p in photos[lo:hi]]
    old = json.loads(part.read_text()) if part.exists() else {}
    if old.get("part_photos") != mine:
        taken = {"summary"}
        names = [_out_stem(p, taken) for p in photos]
        s = _parse(parser, photos[lo:hi], out, batch_size, reporter, min_score, names[lo:hi])
        write_json(part, {**s, "part_photos": mine})
    d.barrier()
    summary = None
    if d.is_main:
        parts = [out / f"summary.part{r}of{d.world}.json" for r in range(d.world)]
        summary = _merge_summaries([json.loads(p.read_text()) for p in parts])
        write_json(out / "summary.json", summary)
        for p in parts:
            p.unlink()
    return d.share(summary)


def _merge_summaries(parts: list[dict]) -> dict:
    """Per-rank summaries -> the one-process summary (seconds are summed over ranks), plus `ranks`."""
    m = {k: sum(p[k] for p in parts) for k in ("photos", "parsed", "faces")}
    m["no_face"] = [x for p in parts for x in p["no_face"]]
    m["unreadable"] = [x for p in parts for x in p["unreadable"]]
    for k in ("seconds_align", "seconds_network", "seconds_write"):
        m[k] = round(sum(p[k] for p in parts), 3)
    m["ms_align_per_photo"] = round(1000 * m["seconds_align"] / max(1, m["photos"]), 1)
    m["ms_network_per_face"] = round(1000 * m["seconds_network"] / max(1, m["faces"]), 1)
    return {**m, "model_size": parts[0]["model_size"], "device": parts[0]["device"], "ranks": len(parts)}


def _parse(parser: Parser, photos: list[Path], out: Path, batch_size: int, reporter: Reporter, min_score: float,
           names: list[str] | None = None) -> dict:
    from facepipe.dataset import to_input
    from facepipe.landmarks import _detector
    from facepipe.predict import predict_probs
    from facepipe.sheets import overlay

    out.mkdir(parents=True, exist_ok=True)
    names = dict(zip(photos, names)) if names is not None else None
    tmpl = template(parser.size, parser.iod)
    results, no_face, bad = [], [], []
    t_align = t_net = t_write = 0.0
    n_faces = 0
    stems = {"summary"}  # summary.json is written last: no photo may take that name
    with reporter.task("parse", len(photos)) as advance:
        for start in range(0, len(photos), max(1, batch_size // 2)):
            group = photos[start:start + max(1, batch_size // 2)]
            t0 = time.perf_counter()
            items = []  # (photo idx in group, rgb, faces, crops, heatmaps, matrices)
            for gi, p in enumerate(group):
                try:
                    rgb = load_rgb(p)
                except BadImage as e:
                    bad.append({"photo": str(p), "reason": str(e)})
                    continue
                # dlib HOG scores below ~0.2 were mostly false positives on our photos (a badge on the
                # astronaut); every annotated face of dlib's own test photos scored above 0.22.
                faces = [f for f in _detector((-1, 1600, 0.0))(rgb) if f["score"] >= min_score]
                crops, hms, mats = [], [], []
                for f in faces:
                    pts = np.asarray(f["lm68"], float)
                    m = fit_similarity(five_from(pts), tmpl)
                    crops.append(warp_image(rgb, m, parser.size))
                    hms.append(draw_heatmap(apply(m, pts), parser.size))
                    mats.append(m)
                items.append((p, rgb, faces, crops, hms, mats))
            t1 = time.perf_counter()
            t_align += t1 - t0
            allc = [c for it in items for c in it[3]]
            probs = []
            if allc:
                allh = [h for it in items for h in it[4]]
                for a in range(0, len(allc), batch_size):
                    x = to_input(np.stack(allc[a:a + batch_size]),
                                 np.stack(allh[a:a + batch_size]) if parser.heatmap else None).to(parser.device)
                    probs.append(predict_probs(parser.model, x).cpu().numpy())
                probs = np.concatenate(probs)
            t2 = time.perf_counter()
            t_net += t2 - t1
            k = 0
            for p, rgb, faces, crops, hms, mats in items:
                stem = names[p] if names else _out_stem(p, stems)
                h, w = rgb.shape[:2]
                labels = np.zeros((h, w), np.uint8)
                best_fg = np.zeros((h, w), np.float32)
                for m in mats:
                    y0, y1, x0, x1 = _footprint(m, parser.size, (h, w))
                    if y1 <= y0 or x1 <= x0:
                        k += 1
                        continue
                    shift = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], float)
                    hwc = np.ascontiguousarray(np.transpose(probs[k], (1, 2, 0)))
                    pr = warp_to_photo(hwc, m @ shift, (y1 - y0, x1 - x0), order=1, fill=0.0)
                    fg = 1.0 - pr[..., 0] - (pr.sum(-1) < 1e-6)  # uncovered pixels: not foreground
                    win = fg > best_fg[y0:y1, x0:x1]
                    labels[y0:y1, x0:x1][win] = pr.argmax(-1)[win]
                    best_fg[y0:y1, x0:x1][win] = fg[win]
                    k += 1
                n_faces += len(faces)
                rec = {"photo": str(p), "width": w, "height": h, "faces": [
                    {"box": f["box"], "score": f["score"], "landmarks68": f["lm68"], "matrix": m.tolist()}
                    for f, m in zip(faces, mats)]}
                if faces:
                    counts = np.bincount(labels.ravel(), minlength=parser.schema.num_classes)
                    rec["pixel_counts"] = {c: int(counts[i]) for i, c in enumerate(parser.schema.classes)}
                    save_image(out / f"{stem}.labels.png", labels)
                    save_image(out / f"{stem}.overlay.png", overlay(rgb, labels, parser.schema, 0.5))
                    rec["labels"], rec["overlay"] = f"{stem}.labels.png", f"{stem}.overlay.png"
                else:
                    no_face.append(str(p))
                write_json(out / f"{stem}.json", rec)
                results.append(rec)
                advance()
            for _ in range(len(group) - len(items)):
                advance()
            t_write += time.perf_counter() - t2
    summary = {"photos": len(photos), "parsed": len(results) - len(no_face), "faces": n_faces,
               "no_face": no_face, "unreadable": bad, "seconds_align": round(t_align, 3),
               "seconds_network": round(t_net, 3), "seconds_write": round(t_write, 3),
               "ms_align_per_photo": round(1000 * t_align / max(1, len(photos)), 1),
               "ms_network_per_face": round(1000 * t_net / max(1, n_faces), 1),
               "model_size": parser.size, "device": str(parser.device)}
    return summary
