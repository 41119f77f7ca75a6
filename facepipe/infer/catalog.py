"""What `facepipe models` lists: the registered architectures and the bundled weights.

Figures are measured, not quoted: parameters and MACs are counted from the real layers (facepipe.analysis.macs,
as `bench` counts them), the receptive field is measured exactly (facepipe.analysis.receptive_field, as `rnorm`
does). What the bundled weights were trained on comes from facepipe/assets/MODEL_CARD.md, the rest from
the checkpoint itself.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from facepipe.analysis.macs import count_macs, count_params
from facepipe.analysis.receptive_field import has_global_pooling, rnorm
from facepipe.infer.checkpoint import ASSETS, BUNDLED
from facepipe.infer.model import LoadedModel
from facepipe.models import create_model, default_in_channels, list_models
from facepipe.models.gray_route import one_branch

MODEL_CARD = ASSETS / "MODEL_CARD.md"
# Settings every architecture takes from the data, not from its design: left out of "defaults".
_DATA_KWARGS = ("num_classes", "in_channels", "feat_dim")


def _rf(model: torch.nn.Module, size: int) -> dict:
    """Exact r and r/s, or why it is not shown: a network that also pools the whole image (BiSeNet's
    context path) takes ~10 s to measure and its r is only the local part; `facepipe rnorm` does it."""
    if has_global_pooling(model):
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
    rows = []
    for name in list_models():
        cin = default_in_channels(name)  # RGB + heatmap, RGB only for bisenet: as bench times them
        model = create_model(name, num_classes=num_classes, in_channels=cin).eval()
        x = torch.zeros(1, cin, size, size)
        row = {"arch": name, "input": "RGB + heatmap" if cin == 4 else "RGB", "params": count_params(model),
               "macs": count_macs(model, x), "size": size, "defaults": _defaults(getattr(model, "config", {}))}
        if rf:
            row.update(_rf(model, size))
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
    by_file: dict[str, list[str]] = {}
    for name, f in BUNDLED.items():
        by_file.setdefault(f, []).append(name)
    rows = []
    for f, names in by_file.items():
        path = ASSETS / f
        row = {"names": names, "file": f"facepipe/assets/{f}", "installed": path.exists()}
        if path.exists():
            row.update(_bundled_facts(LoadedModel.load(path), rf))
            row.update(model_card_facts(f))  # trained_on, accuracy: only the card knows them
            row["card"] = f"facepipe/assets/{card_path(f).name}"
        rows.append(row)
    return rows


def _bundled_facts(m: LoadedModel, rf: bool) -> dict:
    """What the checkpoint itself says and what its network measures."""
    ck, size, schema = m.checkpoint, m.size, m.schema
    net = one_branch(m.net)  # a two-branch model runs one branch per face: count one
    row = {
        "arch": m.arch, "params": count_params(net),
        "macs": count_macs(net, torch.zeros(1, m.in_channels, size, size)), "size": size,
        "input": "RGB + heatmap" if m.heatmap else "RGB", "schema": schema.name,
        "classes": list(schema.classes), "alignment": m.align.to_dict(),
        "defaults": _defaults(ck.get("model_kwargs", {})), "epoch": ck.get("epoch"),
        "facepipe_version": ck.get("facepipe_version"), "bytes": m.path.stat().st_size, "sha256": m.sha256(),
        "beyond_photo_fill": m.fill,
    }
    if m.gray_branch:
        g = m.net.gray
        row["gray_branch"] = {"threshold": m.gray_branch.get("threshold"), "toned": m.gray_branch.get("toned"),
                              "arch": m.gray_branch.get("arch", m.arch),
                              "defaults": _defaults(m.gray_branch.get("model_kwargs", ck.get("model_kwargs", {}))),
                              "params": count_params(g),
                              "macs": count_macs(g, torch.zeros(1, m.in_channels, size, size)),
                              "augment": (m.gray_branch.get("recipe") or {}).get("augment"),
                              "epoch": m.gray_branch.get("epoch")}
    if rf:
        row.update(_rf(net, size))
    return row
