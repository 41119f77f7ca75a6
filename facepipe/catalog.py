"""What `facepipe models` lists: the registered architectures and the bundled weights.

Figures are measured, not quoted: parameters and MACs are counted from the real layers (facepipe.macs,
as `bench` counts them), the receptive field is measured exactly (facepipe.receptive_field, as `rnorm`
does). What the bundled weights were trained on comes from facepipe/assets/MODEL_CARD.md, the rest from
the checkpoint itself.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from facepipe.checkpoint import ASSETS, BUNDLED, build_from_checkpoint, load_checkpoint
from facepipe.macs import count_macs, count_params

MODEL_CARD = ASSETS / "MODEL_CARD.md"
# Settings every architecture takes from the data, not from its design: left out of "defaults".
_DATA_KWARGS = ("num_classes", "in_channels", "feat_dim")


def _rf(model: torch.nn.Module, size: int) -> dict:
    """Exact r and r/s, or why it is not shown: a network that also pools the whole image (BiSeNet's
    context path) takes ~10 s to measure and its r is only the local part; `facepipe rnorm` does it."""
    from facepipe.receptive_field import _GLOBAL, rnorm

    if any(isinstance(m, _GLOBAL) for m in model.modules()):
        return {"r": None, "r_norm": None,
                "rf_note": "it also pools the whole image; `facepipe rnorm --arch "
                           f"{getattr(model, 'arch', '?')}` measures its local r (~10 s)"}
    r = rnorm(model, size)
    return {"r": int(r["r"]), "r_norm": round(float(r["r_norm"]), 3)}


def _defaults(config: dict) -> str:
    return ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in config.items()
                     if k not in _DATA_KWARGS)


def architectures(size: int = 256, num_classes: int = 6, rf: bool = True) -> list[dict]:
    """Every registered architecture at its default settings, with the input `bench` gives it."""
    from facepipe.bench import arch_entry
    from facepipe.models import list_models

    rows = []
    for name in list_models():
        e = arch_entry(name, num_classes)  # RGB + heatmap, RGB only for bisenet: as bench times them
        x = torch.zeros(1, e.in_channels, size, size)
        row = {"arch": name, "input": "RGB + heatmap" if e.heatmap else "RGB", "params": count_params(e.model),
               "macs": count_macs(e.model, x), "size": size, "defaults": _defaults(getattr(e.model, "config", {}))}
        if rf:
            row.update(_rf(e.model, size))
        rows.append(row)
    return rows


def card_path(asset: str) -> Path:
    """default.pt's card is MODEL_CARD.md, X.pt's MODEL_CARD_X.md."""
    return MODEL_CARD if asset == "default.pt" else MODEL_CARD.with_name(f"MODEL_CARD_{Path(asset).stem}.md")


def model_card_facts(asset: str, path: Path | None = None) -> dict:
    """The model card's "Training data" and "Accuracy" bullets, as one line each; {} when there is no card
    or the card's title names another file."""
    path = path or card_path(asset)
    if not path.exists():
        return {}
    text = path.read_text()
    if f"assets/{asset}" not in text.splitlines()[0]:
        return {}
    facts = {}
    # Bullets are "- Key: text" continued on indented lines.
    for m in re.finditer(r"^- ([^:\n]+):(.*(?:\n  .*)*)", text, re.M):
        key, text = m.group(1).strip(), " ".join(m.group(2).split())
        if key.startswith("Training data"):
            facts["trained_on"] = text
        elif key.startswith("Accuracy"):
            facts["accuracy"] = f"{key[len('Accuracy'):].strip(' ,')}: {text}".strip(": ")
    return facts


def bundled(rf: bool = True) -> list[dict]:
    """The weights shipped in facepipe/assets/, one row per file with every name it answers to."""
    from facepipe.manifest import file_sha256

    by_file: dict[str, list[str]] = {}
    for name, f in BUNDLED.items():
        by_file.setdefault(f, []).append(name)
    rows = []
    for f, names in by_file.items():
        path = ASSETS / f
        row = {"names": names, "file": f"facepipe/assets/{f}", "installed": path.exists()}
        if path.exists():
            ck = load_checkpoint(path)
            model, schema = build_from_checkpoint(ck)
            size, cin = int(ck["size"]), int(ck["in_channels"])
            align = ck.get("align") or {}
            row.update({
                "arch": ck["arch"], "params": count_params(model),
                "macs": count_macs(model, torch.zeros(1, cin, size, size)), "size": size,
                "input": "RGB + heatmap" if ck["heatmap"] else "RGB", "schema": schema.name,
                "classes": list(schema.classes), "alignment": {k: align.get(k) for k in ("size", "iod", "letterbox")},
                "defaults": _defaults(ck.get("model_kwargs", {})), "epoch": ck.get("epoch"),
                "facepipe_version": ck.get("facepipe_version"), "bytes": path.stat().st_size,
                "sha256": file_sha256(path),
            })
            if rf:
                model.arch = ck["arch"]
                row.update(_rf(model, size))
            row.update(model_card_facts(f))  # trained_on, accuracy: only the card knows them
            row["card"] = f"facepipe/assets/{card_path(f).name}"
        rows.append(row)
    return rows
