"""`facepipe parse`: photos in, label maps out, in each photo's own coordinates.

A pipeline over three kinds of work, so the network is not left waiting on dlib or on PNG encoding:
  workers (processes): decode, detect, landmarks, warp each face to a crop   -> parse_work.align_photo
  this process:        the network on batches of faces from several photos
  workers:             warp probabilities back over each face's footprint, one label map per photo
                       (where faces overlap, the face more confident that the pixel is not background
                       wins), overlay, encode, write                         -> parse_work.write_photo
`--detector cnn` finds faces with dlib's CNN instead of its HOG detector (profiles too, ~20x slower);
a CNN face whose landmarks are not trusted (face_detector.landmarks_trusted) is cut from its box
(geometry.box_matrix) with an empty heatmap. Crops are cut the model's own way (its AlignSpec: size,
eye distance, letterbox), by the same align_face that made its training crops; a letterbox model gets
each photo fitted whole into the crop once. Photos go through a bounded window, so memory stays flat on
100,000 photos. Per photo:
<stem>.labels.png (palette PNG: pixel values are class ids, viewers show class colours),
<stem>.overlay.png (with a legend) and <stem>.json (faces, boxes, landmarks, matrices, per-class pixel
counts, schema, model), the json written last: it marks the photo done, so a rerun skips it (`--force`
redoes it). summary.json and manifest.json (config, counts, the command; the output protocol of
util/manifest.py) are written at the end; while a run works, .inprogress.json holds its config.

Under torchrun each rank parses a contiguous share of the photos (cuda:LOCAL_RANK on GPUs) and writes
summary.part<rank>of<world>.json; rank 0 merges the parts. Output names are given over the whole list up
front, so ranks never pick the same name for two photos.
"""
from __future__ import annotations

import json
import os
import re
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from facepipe import __version__
from facepipe.data.face_cache import to_input
from facepipe.data.face_detector import (CONFIRM_BELOW, PARSE_DETECTOR, box_cut, check_detector, detector_args,
                                         turned_upright)
from facepipe.infer.beyond_crop import FAR_ZOOM, ZOOM, far_seed, hair_beyond, outer_heatmap, reaches_edge
from facepipe.infer.checkpoint import bundled_checkpoint
from facepipe.infer.edges import EPS as EDGE_EPS
from facepipe.infer.edges import RADIUS as EDGE_RADIUS
from facepipe.infer.edges import coarse_head, snap_to_edges
from facepipe.infer.face_colours import BETA as COLOUR_BETA
from facepipe.infer.face_colours import STRAY_MARGIN
from facepipe.infer.face_colours import TAU as COLOUR_TAU
from facepipe.infer.face_colours import FaceColours, drop_unlike_hair, hair_samples
from facepipe.infer.label_warp import pack_scores
from facepipe.infer.landmark_prior import REACH_IOD, LandmarkPrior
from facepipe.infer.model import LoadedModel
from facepipe.infer.neck import MAX_DISTANCE as NECK_DISTANCE
from facepipe.infer.neck import WIDEN as NECK_WIDEN
from facepipe.infer.neck import applies, neck_below, neck_in_crop
from facepipe.infer.parse_work import OUTPUTS, align_photo, gray_branch_faces, init_worker, write_photo
from facepipe.infer.photo_fill import RING as FILL_RING
from facepipe.infer.photo_fill import network_crops
from facepipe.infer.photo_fill import resolve as resolve_fill
from facepipe.util.align_spec import AlignSpec
from facepipe.util.atomic import write_json
from facepipe.util.distributed import setup, split_range
from facepipe.util.errors import FacepipeError
from facepipe.util.geometry import crop_face, inside_or_none
from facepipe.util.images import UNREADABLE_PHOTO_SUFFIXES, ImageList, list_images, unreadable_note
from facepipe.util.interrupt import check, deferred_sigint, sigint_blocked, stop_pool
from facepipe.util.manifest import INPROGRESS, MANIFEST, SCHEMA_VERSION, command_line, lock_folder
from facepipe.util.progress import SILENT, Reporter

DEFAULT_MODEL = bundled_checkpoint("default")
DETECTOR = PARSE_DETECTOR  # dlib upsampling auto, photos shrunk to 1600 px for detection, no threshold
# Settings per --detector (face_detector.detector_args): HOG's is DETECTOR itself, so HOG runs keep their config.
DETECTORS = {"hog": DETECTOR, "cnn": detector_args("cnn", *DETECTOR), "hog+cnn": detector_args("hog+cnn", *DETECTOR)}
RESERVED = {"summary", "manifest", ".inprogress"}  # the run's own files: no photo may take these names
MAX_BATCH_PIXELS = 64_000_000  # photos held for one network batch: ~200 MB of RGB at most


@dataclass
class Parser:
    """The model as parse uses it (LoadedModel, BatchNorm folded) and the name and sha256 it is known
    by in the outputs."""
    model: LoadedModel
    name: str = "default"
    sha256: str = ""

    @classmethod
    def load(cls, run: str | None, device: str = "auto") -> "Parser":
        if run is None:  # the bundled model, even where a folder called "default" exists here
            if not DEFAULT_MODEL.exists():
                raise FacepipeError("no default model is installed with this package; pass --model RUN.")
            run_or_file = DEFAULT_MODEL
        else:
            run_or_file = run  # a run, a checkpoint file or a bundled name (checkpoint.BUNDLED)
        # BatchNorm folded: the same function, one memory pass less per conv.
        model = LoadedModel.load(run_or_file, device=device, fold=True)
        return cls(model, "default" if run is None else str(run), model.sha256())

    @property
    def schema(self):
        return self.model.schema

    @property
    def size(self) -> int:
        return self.model.size

    @property
    def align(self) -> AlignSpec:
        return self.model.align

    @property
    def heatmap(self) -> bool:
        return self.model.heatmap

    @property
    def device(self) -> torch.device:
        return self.model.device

    def to(self, device: torch.device) -> None:
        self.model.net.to(device)
        self.model.device = device

    def identity(self) -> dict:
        return {"name": self.name, "sha256": self.sha256}

    def schema_dict(self) -> dict:
        return {"name": self.schema.name, "classes": list(self.schema.classes),
                "colors": [list(c) for c in self.schema.colors]}


OWN_SUFFIXES = (".labels.png", ".overlay.png")  # what parse writes per photo that a folder search would find


def collect_photos(paths, own: str | Path | None = None) -> ImageList:
    """The photos given (files, or folders searched by list_images), with the folders' links that lead
    nowhere (`.dangling`) and photos skipped for their format (`.unreadable`: HEIC, camera raw). own:
    parse's output folder; the label maps and overlays a folder search finds in it (parse's own outputs,
    when --out is or lies inside a folder parsed) are left out and counted in `.own`."""
    out = ImageList()
    skip = Path(own).resolve() if own is not None else None
    out.own = 0
    for p in map(Path, paths):
        if p.is_dir():
            found = list_images(p)
            if skip is not None:
                mine = {f for f in found if f.name.endswith(OWN_SUFFIXES) and skip in f.resolve().parents}
                out.own += len(mine)
                found[:] = [f for f in found if f not in mine]
            out += found
            out.dangling += found.dangling
            out.unreadable += found.unreadable
        elif p.is_file() or p.is_symlink():
            if p.suffix.lower() in UNREADABLE_PHOTO_SUFFIXES:  # named, as a folder's listing names them
                out.unreadable.append(p)
            else:
                out.append(p)
        else:
            raise FacepipeError(f"{p} does not exist.")
    if not out:
        formats = unreadable_note(out.unreadable)
        mine = f"; {out.own} image(s) in the output folder {own} left out" if out.own else ""
        raise FacepipeError(f"no photos given (files or folders of .jpg/.png/...){'; ' + formats if formats else ''}"
                            f"{mine}.")
    return out


@dataclass
class Tally:
    """What a run did, kept small: counts and the names of the photos that need a word."""
    photos: int = 0
    parsed: int = 0
    faces: int = 0
    box_cut: int = 0  # faces cut from their detector box (CNN faces whose landmarks are not trusted)
    turned: int = 0  # faces found on their side or upside down and turned upright for their landmarks
    gray_branch: int = 0  # faces a two-branch model ran on its grayscale branch (models.gray_route)
    unconfirmed: int = 0  # weak HOG hits dropped: no CNN face there (FaceDetector.kept)
    resumed: int = 0
    uncounted: int = 0  # resumed photos whose faces are not known: no .json record (--outputs without json)
    no_face: list = field(default_factory=list)
    unreadable: list = field(default_factory=list)
    skipped_format: list = field(default_factory=list)  # photos never read: HEIC, camera raw (collect_photos)
    grayscale: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    network_threads: int = 0  # torch threads the network ran on (1 beside worker processes)
    network_cpu: float = 0.0  # CPU seconds of the network step (a second clock on it, not a step)

    def add_seconds(self, sec: dict) -> None:
        for k, v in sec.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + v

    def done(self, path: str, faces: int, grayscale: bool, box_cut: int = 0, gray_branch: int = 0,
             turned: int = 0, unconfirmed: int = 0) -> None:
        self.faces += faces
        self.unconfirmed += unconfirmed
        self.box_cut += box_cut
        self.turned += turned
        self.gray_branch += gray_branch
        if faces:
            self.parsed += 1
        else:
            self.no_face.append(path)
        if grayscale:
            self.grayscale.append(path)


def _base_stem(photo: Path) -> str:
    """Short enough in bytes for the ".overlay.png" suffix; odd bytes are kept as they are."""
    return os.fsdecode(os.fsencode(photo.stem)[:200])


def _record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _same_photo(rec: dict, photo: Path) -> bool:
    """A record is this photo's: the same path as given, or the same file as the absolute path it recorded
    (a photo given by a relative name once and found by its folder's search the next time). A relative
    name alone is not matched against the working directory: it was written from another one perhaps."""
    if rec.get("photo") == str(photo):
        return True
    try:
        return "photo_abs" in rec and os.path.samefile(rec["photo_abs"], photo)
    except OSError:
        return False


def _whole(path: Path) -> bool:
    """Present and not empty (outputs are not fsynced: a power cut can leave an empty file)."""
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def plan_photos(photos: list[Path], out: Path, outputs: tuple, model_sha: str, force: bool) -> list[tuple]:
    """(photo, stem, record-if-done) for every photo. Names are given over the whole list, so a/x.png and
    b/x.png get x and x_1 on every rerun and on every rank; a name whose record belongs to a photo not in
    this position is passed over, so an earlier run's outputs are never overwritten by another photo's."""
    taken, plan = set(RESERVED), []
    for p in photos:
        base, k = _base_stem(p), 0
        while True:
            stem = base if k == 0 else f"{base}_{k}"
            k += 1
            if stem in taken:
                continue
            rec = _record(out / f"{stem}.json") if "json" in outputs else None
            if rec is not None and not (isinstance(rec, dict) and _same_photo(rec, p)):
                continue  # another photo's record, or JSON that is no record: not ours to overwrite
            break
        taken.add(stem)
        done = None
        if force:
            pass
        elif "json" in outputs:  # written last: a record of this model means every output is there
            if (rec is not None and (rec.get("model") or {}).get("sha256") == model_sha
                    and all(_whole(out / rec[o]) for o in ("labels", "overlay") if o in rec)):
                done = rec
        elif all(_whole(out / f"{stem}.{o}.png") for o in ("labels", "overlay") if o in outputs):
            done = {"_nojson": True}  # files without a record: done, face count unknown
        plan.append((p, stem, done))
    return plan


class _Inline:
    """The executor interface, run in this process: small jobs don't pay for starting workers."""

    def submit(self, fn, *args):
        f = Future()
        f.set_result(fn(*args))
        return f

    def shutdown(self, **kw):
        pass


def _executor(workers: int, n_photos: int, det_args: tuple = DETECTOR):
    # Starting a worker costs ~1 s (dlib's 100 MB landmark model is loaded in each), so a few photos
    # run here. "spawn": forking a process that has started torch's thread pools can deadlock.
    if workers > 1 and n_photos >= 2 * workers:
        return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=init_worker,
                                   initargs=(det_args, True))
    init_worker(det_args)
    return _Inline()


@dataclass(frozen=True)
class Settings:
    """What a parse run is asked to do, besides the model and the photos (parse_photos holds the defaults)."""
    batch_size: int
    min_score: float
    workers: int
    outputs: tuple
    force: bool
    det_args: tuple
    tta_flip: bool = False
    beyond_crop: bool = True
    landmark_prior: bool = True
    face_colours: bool = True
    confirm_below: float = CONFIRM_BELOW
    fill: str = "black"  # beyond the photo: "edge" or "black" (infer.photo_fill), resolved from the model


def _run_network(parser: Parser, crops: list, hms: list, batch_size: int, tta_flip: bool, insides=None,
                 fill: str = "black"):
    """(probabilities N x C x S x S, whether each crop took the gray branch or None) for `crops`.
    insides: each crop's pixels within its photo (None where all are): with fill "edge", the network sees
    the crops filled beyond the photo (infer.photo_fill) and the router reads them as cut."""
    probs, gray = [], []
    shown = network_crops(crops, insides, fill)
    for a in range(0, len(crops), batch_size):
        hm = np.stack(hms[a:a + batch_size]) if parser.heatmap else None
        x = to_input(np.stack((shown or crops)[a:a + batch_size]), hm)
        raw = None if shown is None else to_input(np.stack(crops[a:a + batch_size]), hm)
        p, g = parser.model.predict_routed(x, tta_flip=tta_flip, routes_from=raw)  # g: None for one branch
        probs.append(p.cpu().numpy())
        gray.append(g)
    return np.concatenate(probs), None if gray[0] is None else np.concatenate(gray)


def _network(parser: Parser, batch: list[dict], batch_size: int, tta_flip: bool = False,
             colours: FaceColours | None = None, prior: LandmarkPrior | None = None,
             edges: bool = False, fill: str = "black") -> tuple[float, float]:
    """Probabilities for every face of the photos in `batch`, stored on each photo's job, moved onto the
    crop's edges between background, hair and skin when `edges` (infer.edges), re-split between them by
    the face's own colours (the neck below the chin too: infer.neck) and with the landmark prior laid
    over them (how many crop pixels each changed, per face); with zoomed-out second crops
    (infer.beyond_crop), each face's masks of hair and of skin (the neck) beyond its crop too. Returns
    the wall and CPU seconds of the rules (parse's "face rules" step, so that the network step stays
    the network's). fill: what the network sees beyond the photo (infer.photo_fill)."""
    crops = [c for r in batch for c in r["crops"]]
    if not crops:
        return 0.0, 0.0
    inside = _inside(batch, crops) if colours is not None or fill == "edge" else None
    probs, gray = _run_network(parser, crops, [h for r in batch for h in r["heatmaps"]], batch_size, tta_flip,
                               inside if fill == "edge" else None, fill)
    # One argmax per face for all that follows: the two rules keep it up to date, the hair beyond the crop
    # and the warp back (label_warp.pack_scores) read it.
    labels = probs.argmax(1)
    t0, c0 = time.perf_counter(), time.thread_time()
    points = [q for r in batch for q in r["crop_points"]]
    if colours is not None:
        # Onto the crop's edges first (infer.edges), then the colours' re-split: one count for both.
        recoloured = [(snap_to_edges(p, c, colours.classes, lab) if edges else 0) + colours.apply(p, c, lab, ins)
                      for p, c, lab, ins in zip(probs, crops, labels, inside)]
        if applies(parser.schema.classes):  # the neck below the chin, by the same colours
            recoloured = [n + neck_in_crop(p, lab, c, pts, parser.schema.classes)
                          for n, p, c, lab, pts in zip(recoloured, probs, crops, labels, points)]
    if prior is not None:
        changed = [prior.apply(p, pts, lab) for p, pts, lab in zip(probs, points, labels)]
    necks = _neck_below(parser, batch, probs, labels, crops)
    rules = (time.perf_counter() - t0, time.thread_time() - c0)
    judge = (probs, crops, colours.stray, inside) if colours is not None and colours.stray is not None else None
    beyond = _hair_beyond(parser, batch, labels, batch_size, tta_flip, judge, fill)
    k = 0
    for r in batch:
        n = len(r["crops"])
        r["probs"], r["labels"] = probs[k:k + n], labels[k:k + n]
        if gray is not None:  # which branch took each face: the photo's record says so
            r["branches"] = ["gray" if g else "color" for g in gray[k:k + n]]
        if beyond is not None:
            r["beyond"], r["beyond_far"] = beyond[0][k:k + n], beyond[1][k:k + n]
        if necks is not None:
            r["skin_beyond"] = necks[k:k + n]
        if colours is not None:
            r["colour_pixels"] = recoloured[k:k + n]
        if prior is not None:
            r["prior_pixels"] = changed[k:k + n]
        k += n
    return rules


def _inside(batch: list[dict], crops: list) -> list:
    """Per crop, its pixels within the photo (None where the whole crop is): the face's colours take their
    samples there only (infer.face_colours)."""
    return [inside_or_none(m, c.shape[0], r["rgb"].shape[:2]) for r in batch for m, c in zip(r["matrices"], r["crops"])]


def _inside_of(job: dict, matrix: np.ndarray, fill: str) -> np.ndarray | None:
    """A second or third crop's pixels within its photo, when the network is to see them filled (else None)."""
    return inside_or_none(matrix, job["crops"][0].shape[0], job["rgb"].shape[:2]) if fill == "edge" else None


def _neck_below(parser: Parser, batch: list[dict], probs: np.ndarray, labels: np.ndarray, crops: list):
    """Each face's mask of skin below its crop (infer.neck: the neck, by the face's own colours,
    in the zoomed-out crop), None where there is none; None without second crops or for a schema with a
    neck class or without skin."""
    if not any(r.get("outer_crops") for r in batch) or not applies(parser.schema.classes):
        return None
    outer = [c for r in batch for c in r["outer_crops"]]
    return [neck_below(p, lab, c, o, parser.schema.classes) for p, lab, c, o in zip(probs, labels, crops, outer)]


def _hair_beyond(parser: Parser, batch: list[dict], first: np.ndarray, batch_size: int, tta_flip: bool,
                 judge: tuple | None = None, fill: str = "black"):
    """Each face's masks of hair beyond its crop, (second crop's, third crop's) with None where there is
    nothing to add, or None without second crops. The second pass runs only on faces whose hair reaches
    the crop's bottom or side edges (most do not), the third only on faces whose added hair reaches the
    second crop's (long hair). first: the first pass's labels (N x S x S). judge: (the first pass's probs,
    its crops' RGB, (background id, hair id)) when the faces' colours have a say: each pass's added pieces
    that look more like the face's backdrop than like its hair are dropped (face_colours.drop_unlike_hair),
    before the third pass is seeded. fill: what the network sees beyond the photo (infer.photo_fill)."""
    if not any(r.get("outer_crops") for r in batch):
        return None
    hair = parser.schema.index("hair")
    outer = [(c, h, _inside_of(r, m, fill)) for r in batch
             for c, h, m in zip(r["outer_crops"], r["outer_heatmaps"], r["outer_matrices"])]
    faces = [(r, k) for r in batch for k in range(len(r["outer_crops"]))]
    todo = [i for i in range(len(first)) if reaches_edge(first[i], hair)]
    masks, far_masks = [None] * len(first), [None] * len(first)
    samples = ({i: hair_samples(judge[0][i], judge[1][i], first[i], *judge[2], judge[3][i]) for i in todo}
               if judge else {})
    if todo:
        second, _ = _run_network(parser, [outer[i][0] for i in todo], [outer[i][1] for i in todo], batch_size,
                                 tta_flip, [outer[i][2] for i in todo], fill)
        for i, q in zip(todo, second):
            masks[i] = drop_unlike_hair(hair_beyond(first[i], q.argmax(0), hair), outer[i][0], samples.get(i))
    seeds = {i: far_seed(first[i], masks[i], hair) for i in todo}
    todo = [i for i in todo if seeds[i] is not None]
    if todo:
        size = parser.align.size
        crops = [crop_face(faces[i][0]["rgb"], faces[i][0]["far_matrices"][faces[i][1]], size) for i in todo]
        heat = [outer_heatmap(faces[i][0]["heatmaps"][faces[i][1]], FAR_ZOOM) for i in todo]
        insides = [_inside_of(faces[i][0], faces[i][0]["far_matrices"][faces[i][1]], fill) for i in todo]
        third, _ = _run_network(parser, crops, heat, batch_size, tta_flip, insides, fill)
        for i, c, q in zip(todo, crops, third):  # relative to the second crop, the third is ZOOM times as wide
            far_masks[i] = drop_unlike_hair(hair_beyond(None, q.argmax(0), hair, FAR_ZOOM / ZOOM, seed=seeds[i]), c,
                                            samples.get(i))
    return masks, far_masks


class _Pipeline:
    """Pushes photos through align (workers) -> network (here) -> write (workers) with a bounded window."""

    def __init__(self, parser: Parser, n_todo: int, out: Path, tally: Tally, st: Settings, reporter: Reporter,
                 advance):
        self.parser, self.n_todo, self.tally, self.st = parser, n_todo, tally, st
        self.reporter, self.advance = reporter, advance
        self.base = {"det_args": st.det_args, "min_score": st.min_score, "align": parser.align, "out": str(out),
                     "outputs": st.outputs, "schema": parser.schema_dict(), "model": parser.identity(),
                     "beyond_crop": st.beyond_crop, "confirm_below": st.confirm_below}
        self.ex = _executor(st.workers, n_todo, st.det_args)
        self.pooled = isinstance(self.ex, ProcessPoolExecutor)
        cores = len(os.sched_getaffinity(0))  # each writer deflates its overlay on its share of the cores
        self.base["png_threads"] = max(1, cores // st.workers) if self.pooled else cores
        self.window = 2 * st.workers + 2 if self.pooled else 1
        self.prior = LandmarkPrior(parser.schema) if st.landmark_prior else None
        self.colours = FaceColours(parser.schema) if st.face_colours else None
        self.edges = st.face_colours and coarse_head(parser.model.net)
        self.writing, self.batch = deque(), []
        self.t0, self.finished = time.perf_counter(), 0

    def step(self) -> None:
        check()  # a Ctrl-C is raised here, between photos (run() defers it)
        self.finished += 1
        rate = self.finished / max(time.perf_counter() - self.t0, 1e-9)
        self.advance(photos_per_s=f"{rate:.1f}", eta=f"{(self.n_todo - self.finished) / rate:.0f}s")

    def finish_write(self, f: Future) -> None:
        r = f.result()
        self.tally.add_seconds(r["seconds"])
        self.tally.done(r["path"], r["faces"], r["grayscale"], r.get("box_cut", 0), r.get("gray_branch", 0),
                        r.get("turned", 0), r.get("unconfirmed", 0))
        if r["grayscale"] and not self.parser.model.saw_grayscale:
            seen = self.parser.model.augment
            why = (f"the model was trained without grayscale faces (--augment {seen})"
                   if self.parser.model.saw_grayscale is False else
                   "the model's checkpoint does not say whether it was trained on grayscale faces "
                   "(`--augment wild` does)")
            self.reporter.log(f"[yellow]grayscale[/] {r['path']}: {why}; skin and lips are often missed.")
        self.step()

    def flush(self) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        rules, rules_cpu = _network(self.parser, self.batch, self.st.batch_size, self.st.tta_flip, self.colours,
                                    self.prior, self.edges, self.st.fill)
        t1, cpu = time.perf_counter(), time.thread_time() - c0 - rules_cpu
        for r in self.batch:  # what the warp back needs, a tenth of the scores, goes to the writer (label_warp)
            r["scores"] = pack_scores(r.pop("probs", []), len(r["crops"]), r.pop("labels", None))
        # CPU seconds besides wall: with the workers on every core, the network's wall time is also the
        # time the OS gave the cores to them; its CPU time says what the network itself costs.
        steps = {"network": t1 - t0 - rules}
        if self.colours is not None or self.prior is not None:  # the face's colours and the landmark prior
            steps["face rules"] = rules
        self.tally.add_seconds({**steps, "warp back": time.perf_counter() - t1})
        self.tally.network_cpu += cpu
        for r in self.batch:
            for k in ("crops", "heatmaps", "outer_crops", "outer_heatmaps", "crop_points", "det_args", "min_score",
                      "confirm_below"):
                r.pop(k, None)
            self.writing.append(self.submit(write_photo, r))
            while len(self.writing) > self.window:
                self.finish_write(self.writing.popleft())
        self.batch.clear()

    def aligned(self, r: dict) -> None:
        """One photo back from align: counted as unreadable, or into the network batch."""
        self.tally.add_seconds(r["seconds"])
        if "error" in r:
            self.tally.unreadable.append({"photo": r["path"], "reason": r["error"]})
            self.reporter.log(f"[red]skipped[/] {r['path']}: {r['error']}")
            self.step()
            return
        self.batch.append(r)
        if (sum(len(b["crops"]) for b in self.batch) >= self.st.batch_size
                or sum(b["rgb"].size for b in self.batch) >= 3 * MAX_BATCH_PIXELS):
            self.flush()

    def submit(self, fn, job: dict) -> Future:
        with sigint_blocked():  # a worker this starts is born with Ctrl-C held back until it ignores it
            return self.ex.submit(fn, job)

    def run(self, todo: list[tuple]) -> None:
        """`todo` [(photo, stem)] through the three steps; the pool is shut down whatever happens."""
        threads = torch.get_num_threads()
        if self.pooled and self.parser.device.type == "cpu":
            # The workers keep the cores busy; OpenMP threads that wait at barriers for descheduled siblings
            # made the network 4x slower here than on one thread.
            torch.set_num_threads(1)
        self.tally.network_threads = torch.get_num_threads()
        aligning, jobs = deque(), iter(todo)
        try:
            # Ctrl-C is raised between photos (step), not wherever it lands: inside submit, while a worker
            # starts, it could leave a worker the executor does not know of and so never stops.
            with deferred_sigint():
                while True:
                    while len(aligning) < self.window and (nxt := next(jobs, None)) is not None:
                        aligning.append(self.submit(align_photo, {**self.base, "path": str(nxt[0]),
                                                                  "stem": nxt[1]}))
                    if not aligning:
                        break
                    self.aligned(aligning.popleft().result())
                self.flush()
                while self.writing:
                    self.finish_write(self.writing.popleft())
        finally:
            stop_pool(self.ex)
            torch.set_num_threads(threads)


def _claim(out: Path, config: dict, force: bool, photos=()) -> int:
    """Lock the output folder (one writer at a time), refuse outputs of another model or settings (a
    finished run's manifest, or an interrupted run's .inprogress.json), and mark the folder as being
    worked on: the manifest of an earlier run goes until this one writes its own."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FacepipeError(f"cannot create output folder {out}: {e.strerror}.") from None
    if not out.is_dir():
        raise FacepipeError(f"output {out} exists and is not a folder.")
    fd = lock_folder(out)
    old = _record(out / MANIFEST) or _record(out / INPROGRESS)
    ours = isinstance(old, dict) and old.get("stage") == "parse"
    foreign = None if ours else _foreign(out, old, photos)
    if foreign:  # never overwritten, not even with --force: parse replaces only what it wrote
        os.close(fd)
        raise FacepipeError(f"{out} {foreign}, which parse did not write; parse into an empty folder or one "
                            "that parse made.")
    if ours and not _same_config(old.get("config"), config) and not force:
        os.close(fd)
        raise FacepipeError(f"{out} holds parse outputs made with another model or settings (differing: "
                            f"{_differs(old['config'], config)}); use --force to redo the photos given, or choose "
                            "another folder.")
    write_json(out / INPROGRESS, {"stage": "parse", "config": config, "started": time.time()})
    (out / MANIFEST).unlink(missing_ok=True)
    return fd


def _foreign(out: Path, old, photos) -> str | None:
    """What in a folder parse has not marked as its own this run would overwrite, in words (None: nothing):
    another stage's manifest, summary.json, or a file named as this run names a photo's outputs (a run folder,
    someone's own JSON or overlays; a sidecar such as photo.jpg.json is no such name)."""
    if old is not None:
        return f"holds a `{old.get('stage', '?')}` output (its {MANIFEST})" if isinstance(old, dict) else \
            f"holds a {MANIFEST}"
    bases = {_base_stem(Path(p)) for p in photos}
    ours = re.compile(r"(.*?)(_\d+)?(\.json|\.labels\.png|\.overlay\.png)\Z", re.S)
    names = sorted(p.name for p in out.iterdir() if p.is_file() and (
        p.name in ("summary.json", MANIFEST) or ((m := ours.match(p.name)) is not None and m.group(1) in bases)))
    return f"holds {names[0]}{f' and {len(names) - 1} more' if len(names) > 1 else ''}" if names else None


def _differs(old: dict, new: dict) -> str:
    """The settings in which a folder's parse config differs from this run's, in words."""
    keys = sorted(k for k in set(old) | set(new) if k != "model" and old.get(k) != new.get(k))
    merged = {**{k: v for k, v in old.items() if k not in keys}, **{k: new[k] for k in keys if k in new}}
    if not _same_config(merged, new):  # what is left to differ is the model's file
        was, now = old.get("model") or {}, new.get("model") or {}
        keys.insert(0, f"model: {was.get('name', '?')}, file sha256 {str(was.get('sha256', '?'))[:12]} in the folder, "
                       f"{str(now.get('sha256', '?'))[:12]} now")
    return ", ".join(keys) or "?"


def _same_config(old: dict | None, new: dict) -> bool:
    """Whether a folder's config is this run's, the model judged by its file's sha256: `--model fast` resumes a
    folder parsed with `default` (the same file under another name)."""
    def by_file(c):
        return {**c, "model": {k: v for k, v in (c.get("model") or {}).items() if k != "name"}}
    return isinstance(old, dict) and by_file(old) == by_file(new)


def follows_hair(parser: Parser) -> bool:
    """Whether a second, zoomed-out pass can add hair beyond the crops (infer.beyond_crop): the model has a
    hair class, and its crop is not the whole photo (letterbox) already."""
    return "hair" in parser.schema.classes and not parser.align.letterbox


def lays_prior(parser: Parser) -> bool:
    """Whether the landmark prior (infer.landmark_prior) has something to do: the schema has a mouth or a
    part it knows, and each crop holds one face (a letterbox crop holds the whole photo)."""
    return LandmarkPrior(parser.schema).active and not parser.align.letterbox


def parse_config(parser: Parser, min_score: float, outputs: tuple, det_args: tuple = DETECTOR,
                 tta_flip: bool = False, beyond_crop: bool = False, landmark_prior: bool = False,
                 face_colours: bool = False, confirm_below: float = 0.0, fill: str = "black") -> dict:
    config = {"model": parser.identity(), "detector": list(det_args), "min_score": min_score,
              "outputs": list(outputs), "size": parser.size}
    if confirm_below > min_score:  # weak hits confirmed by the CNN: folders parsed before it are redone
        config["confirm_below"] = confirm_below
    if tta_flip:  # only when on: folders parsed without it keep their config and resume
        config["tta_flip"] = True
    if beyond_crop:
        config["beyond_crop"] = {"zoom": ZOOM, "far_zoom": FAR_ZOOM,
                                 "skin": {"max_distance": NECK_DISTANCE, "widen": NECK_WIDEN}}
    if landmark_prior:  # folders parsed before the prior existed are redone, not mixed (--force)
        config["landmark_prior"] = {"reach_iod": REACH_IOD}
    if face_colours:
        config["face_colours"] = {"beta": COLOUR_BETA, "tau": COLOUR_TAU, "stray_margin": STRAY_MARGIN,
                                  "neck": {"max_distance": NECK_DISTANCE}}
        if coarse_head(parser.model.net):  # only where it runs: the teacher's folders keep their config
            config["face_colours"]["edges"] = {"radius": EDGE_RADIUS, "eps": EDGE_EPS}
        if beyond_crop:  # hair beyond the crop judged by them too: folders parsed before it are redone
            config["face_colours"]["beyond_crop_hair"] = True
    if fill == "edge":  # only then: folders parsed with black beyond the photo keep their config
        config["beyond_photo_fill"] = {"ring": FILL_RING}
    if parser.align.letterbox:  # photos parsed before parse followed the flag were cut wrong: not resumed
        config["letterbox"] = True
    return config


def parse_photos(parser: Parser, photos: list[Path], out, batch_size: int = 16, reporter: Reporter = SILENT,
                 min_score: float = 0.2, workers: int = 1, outputs: tuple = OUTPUTS, force: bool = False,
                 detector: str = "hog", tta_flip: bool = False, beyond_crop: bool = True,
                 landmark_prior: bool = True, face_colours: bool = True, upsample: int = DETECTOR[0],
                 max_side: int = DETECTOR[1], confirm_below: float = CONFIRM_BELOW, fill: str = "model") -> dict:
    """Parse `photos` into `out`; returns the summary (also written to out/summary.json).

    tta_flip: average each face's prediction with its mirror's (twice the network's time; +0.8 points
    of overall F1 for the bundled student on FASSEG V2 test, docs/results.md).
    workers: processes for detection and writing (0 = every core); 1 runs everything here.
    detector: "hog", "cnn" or "hog+cnn" (DETECTORS); CNN faces whose landmarks are not trusted are aligned
    from their box. upsample, max_side: dlib's upsampling (-1: by photo size) and the longest side photos
    are shrunk to for detection; faces narrower than ~80 px after the shrink (~40 at upsample 1) are missed.
    beyond_crop: follow the hair beyond each face's crop with a zoomed-out second pass (infer.beyond_crop;
    twice the network's time) and the neck below it by the face's skin colour (infer.neck); off by
    itself for a model without a hair class or with letterbox crops.
    landmark_prior: inside the inner lip contour is mouth, and a stray second blob of a part far from its
    landmarks is not that part (infer.landmark_prior); faces without trusted landmarks are left alone;
    off by itself for letterbox crops and schemas without those parts.
    face_colours: before the prior, re-split background, hair and skin where the network hesitates by the
    face's own colours (infer.face_colours) and follow the neck below the chin by them (infer.neck); off
    by itself for letterbox crops (a crop holds every face) and schemas with fewer than two of those
    classes.
    confirm_below: HOG hits scoring from min_score up to this are kept only where dlib's CNN also finds a
    face (FaceDetector.kept); 0 keeps every hit as HOG scored it.
    fill: what the network sees beyond the photo, "edge", "black" or "model" (as its file says;
    infer.photo_fill)."""
    out = Path(out)
    if detector not in DETECTORS:
        raise FacepipeError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}.")
    st = Settings(batch_size, min_score, workers or len(os.sched_getaffinity(0)),
                  tuple(o for o in OUTPUTS if o in outputs), force,
                  detector_args(detector, int(upsample), int(max_side), DETECTOR[2]), tta_flip,
                  bool(beyond_crop) and follows_hair(parser), bool(landmark_prior) and lays_prior(parser),
                  bool(face_colours) and FaceColours(parser.schema).active and not parser.align.letterbox,
                  float(confirm_below), resolve_fill(fill, parser.model.checkpoint))
    check_detector(st.det_args)  # before the output folder is claimed
    config = parse_config(parser, min_score, st.outputs, st.det_args, tta_flip, st.beyond_crop, st.landmark_prior,
                          st.face_colours, st.confirm_below, st.fill)
    d = setup(parser.device)
    fd = None
    if d is None or d.is_main:
        fd = _claim(out, config, force, photos)
    try:
        return _parse_claimed(parser, photos, out, reporter, st, config, d)
    finally:
        if fd is not None:
            os.close(fd)


def _resumed(mine: list[tuple]) -> Tally:
    """The tally of the photos already done (their records), before any work."""
    tally = Tally(photos=len(mine))
    for p, _, rec in mine:
        if rec is None:
            continue
        tally.resumed += 1
        if rec.get("_nojson"):
            tally.parsed += 1
            tally.uncounted += 1
        else:
            faces = rec.get("faces", [])
            tally.done(str(p), len(faces), rec.get("grayscale", False), box_cut(faces), gray_branch_faces(faces),
                       turned_upright(faces), rec.get("unconfirmed_hits", 0))
    return tally


def _parse_claimed(parser: Parser, photos, out: Path, reporter: Reporter, st: Settings, config: dict, d) -> dict:
    t0 = time.perf_counter()
    if d is not None:
        d.barrier()  # rank 0 has claimed the folder
        if parser.device.type == "cuda":
            parser.to(d.device)
    plan = plan_photos(photos, out, st.outputs, parser.sha256, st.force)
    lo, hi = split_range(len(plan), d, max(1, st.batch_size // 2))
    mine = plan[lo:hi]
    tally = _resumed(mine)
    if d is None or d.is_main:  # the listing's, once
        tally.skipped_format = [str(p) for p in getattr(photos, "unreadable", [])]
    todo = [(p, stem) for p, stem, rec in mine if rec is None]
    if tally.resumed:
        reporter.log(f"{tally.resumed} of {len(mine)} photos already parsed in {out} (--force redoes them)")
    with reporter.task("parse", len(mine)) as advance:
        advance(tally.resumed)
        if todo:
            _Pipeline(parser, len(todo), out, tally, st, reporter, advance).run(todo)
    s = _summary(tally, parser, time.perf_counter() - t0, st.workers)
    if d is None:
        return _finish(out, s, config, parser)
    part = out / f"summary.part{d.rank}of{d.world}.json"
    write_json(part, s)
    d.barrier()
    summary = None
    if d.is_main:
        parts = [out / f"summary.part{r}of{d.world}.json" for r in range(d.world)]
        summary = _finish(out, merge_summaries([json.loads(p.read_text()) for p in parts]), config, parser)
        for p in parts:
            p.unlink()
    return d.share(summary)


def _summary(t: Tally, parser: Parser, wall: float, workers: int) -> dict:
    sec = {k: round(v, 3) for k, v in t.seconds.items()}
    s = {"photos": t.photos, "parsed": t.parsed, "faces": t.faces, "box_cut": t.box_cut, "turned": t.turned,
         "gray_branch": t.gray_branch, "unconfirmed": t.unconfirmed, "resumed": t.resumed,
         "faces_uncounted_photos": t.uncounted,
         "no_face": t.no_face, "unreadable": t.unreadable, "skipped_format": t.skipped_format,
         "grayscale": t.grayscale,
         "stage_seconds": sec, "wall_seconds": round(wall, 3), "workers": workers,
         "network_threads": t.network_threads, "network_cpu_seconds": round(t.network_cpu, 3),
         "model": parser.identity(),
         "model_size": parser.size, "device": str(parser.device), "schema": parser.schema_dict()}
    return _with_rates(s)


def _with_rates(s: dict) -> dict:
    """The fields computed from counts and step seconds (one process or merged ranks alike)."""
    sec = s["stage_seconds"]
    s["seconds_align"] = round(sum(sec.get(k, 0) for k in ("decode", "detect+landmarks", "warp")), 3)
    s["seconds_network"] = sec.get("network", 0.0)
    s["seconds_write"] = round(sum(sec.get(k, 0) for k in ("warp back", "encode+write")), 3)
    s["ms_face_rules_per_face"] = round(1000 * sec.get("face rules", 0.0) / max(1, s["faces"]), 1)
    done_now = s["photos"] - s["resumed"]
    s["photos_per_second"] = round(done_now / max(s["wall_seconds"], 1e-9), 2)
    s["ms_align_per_photo"] = round(1000 * s["seconds_align"] / max(1, done_now), 1)
    s["ms_network_per_face"] = round(1000 * s["seconds_network"] / max(1, s["faces"]), 1)
    s["ms_network_cpu_per_face"] = round(1000 * s.get("network_cpu_seconds", 0.0) / max(1, s["faces"]), 1)
    return s


def merge_summaries(parts: list[dict]) -> dict:
    """Per-rank summaries -> the one-process summary (seconds summed over ranks, wall the longest)."""
    m = dict(parts[0])
    for k in ("photos", "parsed", "faces", "resumed"):
        m[k] = sum(p[k] for p in parts)
    m["box_cut"] = sum(p.get("box_cut", 0) for p in parts)
    m["turned"] = sum(p.get("turned", 0) for p in parts)
    m["gray_branch"] = sum(p.get("gray_branch", 0) for p in parts)
    m["unconfirmed"] = sum(p.get("unconfirmed", 0) for p in parts)
    m["faces_uncounted_photos"] = sum(p.get("faces_uncounted_photos", 0) for p in parts)
    m["network_cpu_seconds"] = round(sum(p.get("network_cpu_seconds", 0.0) for p in parts), 3)
    for k in ("no_face", "unreadable", "skipped_format", "grayscale"):
        m[k] = [x for p in parts for x in p.get(k, [])]
    m["stage_seconds"] = {k: round(sum(p["stage_seconds"].get(k, 0) for p in parts), 3)
                          for k in {k for p in parts for k in p["stage_seconds"]}}
    m["wall_seconds"] = max(p["wall_seconds"] for p in parts)
    return {**_with_rates(m), "ranks": len(parts)}


def _finish(out: Path, summary: dict, config: dict, parser: Parser) -> dict:
    """summary.json, then manifest.json last (util/manifest.py's fields), then the in-progress mark goes."""
    write_json(out / "summary.json", summary)
    counts = {k: summary[k] for k in ("photos", "parsed", "faces", "resumed")}
    counts.update(no_face=len(summary["no_face"]), unreadable=len(summary["unreadable"]),
                  skipped_format=len(summary.get("skipped_format", [])),
                  box_cut=summary.get("box_cut", 0), turned=summary.get("turned", 0),
                  unconfirmed=summary.get("unconfirmed", 0))
    write_json(out / MANIFEST, {
        "stage": "parse", "schema_version": SCHEMA_VERSION, "facepipe_version": __version__, "config": config,
        "inputs": {"model": {"path": str(parser.model.path.resolve()), **parser.identity()}},
        "counts": counts, "skipped": summary["unreadable"], "seconds": summary["wall_seconds"],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command_line()})
    (out / INPROGRESS).unlink(missing_ok=True)
    return summary
