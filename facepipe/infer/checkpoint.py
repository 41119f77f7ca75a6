"""Self-describing checkpoints: architecture name + kwargs + label schema + state dict + metrics.

A checkpoint rebuilds its model from the file alone and loads with torch.load(weights_only=True), so a
file that would run code on load is refused. Written to a temporary name and os.replace'd.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch

from facepipe import __version__
from facepipe.models import create_model
from facepipe.models.narrow import narrow
from facepipe.models.widen import widen
from facepipe.util.atomic import atomic_path
from facepipe.util.errors import FacepipeError
from facepipe.util.manifest import file_sha256
from facepipe.util.schema import LabelSchema

FORMAT = "facepipe-checkpoint"

ASSETS = Path(__file__).parent.parent / "assets"
# Names for the checkpoints shipped in facepipe/assets/. They live here, beside run_checkpoint, so that
# parse, eval, bench and export all mean the same file by `fast`. `default` is what `parse` runs without
# --model; `fast` is the distilled student, `accurate` its teacher.
BUNDLED = {"default": "default.pt", "fast": "default.pt", "accurate": "accurate.pt"}


def bundled_checkpoint(name) -> Path | None:
    """The shipped checkpoint called `name` (default, fast, ...), or None when no bundled model has that name."""
    f = BUNDLED.get(str(name))
    return ASSETS / f if f else None


def save_checkpoint(path, model, *, arch: str, schema: LabelSchema, size: int, heatmap: bool,
                    extra: dict | None = None) -> None:
    m = model.module if hasattr(model, "module") else model
    ckpt = {
        "format": FORMAT, "format_version": 1, "facepipe_version": __version__,
        "arch": arch, "model_kwargs": dict(getattr(m, "config", {})), "num_classes": schema.num_classes,
        "in_channels": 4 if heatmap else 3, "heatmap": heatmap, "size": size, "schema": schema.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in m.state_dict().items()},
    }
    ckpt.update(extra or {})
    try:
        with atomic_path(path) as tmp:
            torch.save(ckpt, tmp)
    except (OSError, RuntimeError) as e:
        # torch.save reports a full disk as RuntimeError ("unexpected pos ..."): say what it likely means.
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise FacepipeError(f"writing checkpoint {path} failed ({first}); is the disk full? "
                            f"Any earlier {Path(path).name} is kept; free some space and rerun.") from None


def training_augment(ckpt: dict) -> str | None:
    """The augmentation a checkpoint's network was trained with: a run's checkpoints hold its config, a
    packed one its "recipe"; None when neither says."""
    for key in ("recipe", "config"):
        aug = (ckpt.get(key) or {}).get("augment")
        if aug:
            return str(aug)
    return None


def load_checkpoint(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise FacepipeError(f"checkpoint {path} not found.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, corrupt or code-carrying pickles all land here
        raise FacepipeError(_unloadable(path, e)) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise FacepipeError(not_a_checkpoint(path))
    return ckpt


def not_a_checkpoint(path) -> str:
    return (f"{path} is not a facepipe checkpoint (a run folder, a .pt file written by facepipe, or a bundled "
            f"name: {', '.join(BUNDLED)}).")


def _unloadable(path: Path, e: Exception) -> str:
    """Why torch.load failed, in words: torch's own messages are long (weights_only), internal (a pickle
    opcode or offset, for a photo read as a pickle) or a bare errno ("Invalid argument" for a cut zip)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        return f"checkpoint {path} cannot be read: {err.strerror or err}."
    if head != b"PK\x03\x04":  # torch.save writes a zip archive; a photo, HDF5 file or text is something else
        return not_a_checkpoint(path)
    unsafe = f"checkpoint {path} cannot be loaded safely"
    try:
        with zipfile.ZipFile(path) as z:
            if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in z.namelist()):
                return not_a_checkpoint(path)  # a zip archive torch did not write
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError):
        return (f"{unsafe}: it is truncated or damaged (its end is missing: a copy cut short, a full disk?); "
                "copy or train it again.")
    if bad is not None:
        return f"{unsafe}: it is damaged ({bad} fails its checksum); copy or train it again."
    if "weights only" in str(e).lower():
        return f"{unsafe}: it holds Python objects that could run code when loaded, as no facepipe checkpoint does."
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    reason = reason if len(reason) <= 100 else type(e).__name__  # whole, or only its kind: never cut mid-sentence
    return f"{unsafe}: it is damaged or truncated ({reason}); copy or train it again."


def build_from_checkpoint(ckpt: dict):
    """The checkpoint's network with its weights, in eval mode, and its label schema."""
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in ckpt["model_kwargs"].items()
          if k not in ("num_classes", "in_channels")}
    model = create_model(ckpt["arch"], num_classes=ckpt["num_classes"], in_channels=ckpt["in_channels"], **kw)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, LabelSchema.from_dict(ckpt["schema"])


def run_cache(run) -> str | None:
    """The cache a run folder was trained on, when it is still on this machine (a run copied elsewhere, a
    checkpoint file or a bundled name: None)."""
    cfg = Path(run) / "config.json"
    cache = json.loads(cfg.read_text()).get("cache") if cfg.is_file() else None
    return cache if cache and Path(cache).is_file() else None


def run_checkpoint(run_or_file, which: str = "best") -> Path:
    """A run folder's checkpoint (best, falling back to last), a checkpoint file itself, or a bundled
    model by name (`default`, `fast`). A path that exists wins over a bundled name: a run folder called
    `fast` in the working directory is that run."""
    p = Path(run_or_file)
    if p.is_file():
        return p
    bundled = None if p.exists() else bundled_checkpoint(run_or_file)
    if bundled is not None:
        if not bundled.exists():
            raise FacepipeError(f"the bundled model {str(run_or_file)!r} ({bundled.name}) is not installed with "
                                "this package; pass a run folder or checkpoint file.")
        return bundled
    # A mistyped run must not read as a run that has no checkpoint yet (that one says how to train it).
    if not p.exists():
        raise FacepipeError(f"{p} does not exist; give a run folder (`facepipe train CACHE --out RUN`), "
                            f"a checkpoint file, or a bundled model ({', '.join(BUNDLED)}).")
    for name in (which, "last"):
        c = p / "checkpoints" / f"{name}.pt"
        if c.exists():
            return c
    if bundled_checkpoint(run_or_file) is not None:  # the folder hides the bundled model of its name
        raise FacepipeError(f"{p} is a folder here with no checkpoint, and a folder wins over the bundled model "
                            f"{str(run_or_file)!r} of the same name: rename or move the folder, or pass "
                            f"{bundled_checkpoint(run_or_file)} itself.")
    raise FacepipeError(f"no checkpoint in {p}; train one with `facepipe train CACHE --out {p}`, "
                        f"or name a bundled model ({', '.join(BUNDLED)}).")


def model_inputs(run_or_file) -> list[Path]:
    """What a command given this model reads and a side output must not replace (util.manifest.
    refuse_overwriting_input): a checkpoint file, the bundled file of a name, or a run folder's checkpoints and
    the files that describe it; not the whole folder, where `eval` puts its sheet by default."""
    if run_or_file is None:  # the default model: a bundled file, which no user path names
        return []
    p = Path(run_or_file)
    if p.is_dir():
        return [p / "checkpoints", *(p / n for n in ("config.json", "manifest.json", "metrics.jsonl"))]
    if p.exists():
        return [p]
    bundled = bundled_checkpoint(run_or_file)
    return [bundled] if bundled is not None else []


def warm_start(model, init: str, arch: str, schema, heatmap: bool) -> str:
    """Load the weights of `init` (run, checkpoint file or bundled name) into `model`; its sha256.
    `train --init` and `distill --init` both start here. A narrower network of the same arch (say
    widths 16, 32, 64 into 24, 48, 96) is widened into `model` so that it computes the same function.
    Only the weights come over: the optimiser, the loss's centres and the schedule start afresh (a
    resumed run then loads its own last.pt over them). From a two-branch checkpoint (a gray branch,
    infer.pack --gray) that is its colour network, the one `state_dict` holds."""
    try:
        path = run_checkpoint(init)
        ck = load_checkpoint(path)
    except FacepipeError as e:
        raise FacepipeError(f"--init: {e}") from None
    theirs = f"{ck.get('arch')} {ck.get('model_kwargs') or {}}"
    if ck.get("arch") != arch:
        raise FacepipeError(f"--init {init} is a {theirs} network; this run builds {arch}: pass --arch "
                            f"{ck.get('arch')} (and its width) to start from it.")
    classes = list((ck.get("schema") or {}).get("classes") or [])
    if bool(ck.get("heatmap")) != heatmap or classes != list(schema.classes):
        raise FacepipeError(f"--init {init} takes {ck.get('in_channels')} input channels and predicts "
                            f"{', '.join(classes)}; this run: {4 if heatmap else 3} and "
                            f"{', '.join(schema.classes)} ({schema.name}).")
    try:
        model.load_state_dict(ck["state_dict"])  # fp16-stored weights are cast to the parameters' dtype
    except RuntimeError:
        # A narrower network of the same arch: widened so that it computes the same function (models.widen);
        # a wider one (a narrower stem, say): its leading channels, and training takes it from there.
        source = build_from_checkpoint(ck)[0]
        if not widen(source, model, ck["in_channels"]) and not narrow(source, model):
            raise FacepipeError(f"--init {init} ({theirs}) has other layer shapes than this run's {arch} "
                                f"{dict(getattr(model, 'config', {}))} and cannot be widened or narrowed into "
                                "it; pass the same --width / --model-kwargs, or only wider or only narrower "
                                "ones.") from None
    return file_sha256(path)
