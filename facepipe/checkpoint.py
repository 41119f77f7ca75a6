"""Self-describing checkpoints: architecture name + kwargs + label schema + state dict + metrics.

A checkpoint rebuilds its model from the file alone and loads with torch.load(weights_only=True), so a
file that would run code on load is refused. Written to a temporary name and os.replace'd.
"""
from __future__ import annotations

from pathlib import Path

import torch

from facepipe import __version__
from facepipe.atomic import atomic_path
from facepipe.errors import FacepipeError
from facepipe.schema import LabelSchema

FORMAT = "facepipe-checkpoint"


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


def load_checkpoint(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise FacepipeError(f"checkpoint {path} not found.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, corrupt or code-carrying pickles all land here
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise FacepipeError(f"checkpoint {path} cannot be loaded safely ({first}); it is corrupt, "
                            "truncated or not a facepipe checkpoint.") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise FacepipeError(f"{path} is not a facepipe checkpoint.")
    return ckpt


def build_from_checkpoint(ckpt: dict):
    from facepipe.models import create_model

    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in ckpt["model_kwargs"].items()
          if k not in ("num_classes", "in_channels")}
    model = create_model(ckpt["arch"], num_classes=ckpt["num_classes"], in_channels=ckpt["in_channels"], **kw)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, LabelSchema.from_dict(ckpt["schema"])


def run_checkpoint(run_or_file, which: str = "best") -> Path:
    """A run folder's checkpoint (best, falling back to last) or a checkpoint file itself."""
    p = Path(run_or_file)
    if p.is_file():
        return p
    for name in (which, "last"):
        c = p / "checkpoints" / f"{name}.pt"
        if c.exists():
            return c
    raise FacepipeError(f"no checkpoint in {p}; train one with `facepipe train CACHE --out {p}`.")
