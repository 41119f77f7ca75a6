"""The tables `facepipe rnorm` prints: a model's layers by stage, its receptive field r and r/s, the
dilations whose r/s is closest to a target, and the cells and optimum of an r_norm sweep."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, NamedTuple

from torch import nn

from facepipe.analysis.receptive_field import dilations_for, layer_table, rnorm
from facepipe.models import create_model
from facepipe.util.errors import FacepipeError

VALUE_COLUMNS = ("", "value")
STAGE_COLUMNS = ("stage", "convs", "k/stride/dilation", "jump in", "r after")
SWEEP_COLUMNS = ("s", "d", "r", "r/s", "epochs", "overall F1", "pixel acc")
SHOWN_LAYERS = 6  # k/stride/dilation of the first few convs of a stage; "..." for the rest


class Table(NamedTuple):
    title: str
    rows: list[tuple]
    columns: tuple[str, ...] = VALUE_COLUMNS


def stage_table(model: nn.Module, arch: str) -> Table:
    """Convs grouped by top-level stage, in registration order: their k/stride/dilation, the jump into
    the stage and the analytic r after it."""
    stages = {}
    for row in layer_table(model):
        s = stages.setdefault(row["name"].split(".")[0], {"layers": 0, "k/s/d": [], "jump": row["jump"], "r": 0})
        s["layers"] += 1
        s["k/s/d"].append(f"{row['k']}/{row['stride']}/{row['dilation']}")
        s["r"] = row["r"]
    rows = [(k, v["layers"], " ".join(v["k/s/d"][:SHOWN_LAYERS]) + (" ..." if len(v["k/s/d"]) > SHOWN_LAYERS else ""),
             v["jump"], v["r"]) for k, v in stages.items()]
    return Table(f"{arch}: layers by stage (analytic, registration order)", rows, STAGE_COLUMNS)


def rnorm_table(model: nn.Module, arch: str, size: int) -> Table:
    """The exact receptive field r (all paths), s, r/s and the model's dilations."""
    r = rnorm(model, size)
    rows = [("r (exact, all paths)", r["r"]), ("s", size), ("r_norm = r/s", round(r["r_norm"], 4)),
            ("dilations", str(model.config.get("dilations")))]
    if r.get("global_context"):
        rows.append(("global pooling", "yes: sees the whole image; r is the local part"))
    return Table(f"{arch} at {size}x{size}", rows)


def target_table(arch: str, size: int, target) -> Table:
    """The dilation setting of `arch` whose r/s at `size` is closest to `target` (a number or "optimum")."""
    dil, b = dilations_for(arch, size, target)
    what = f"measured optimum {b['target']:.3f} ({b['source']})" if target == "optimum" else f"{b['target']:g}"
    return Table(f"dilations for r_norm {what} at s={size}",
                 [("best dilations", ",".join(map(str, dil))), ("r", b["r"]), ("r_norm", round(b["r_norm"], 4))])


def rnorm_tables(arch: str, size: int, dilations=None, target="optimum") -> Iterator[Table | str]:
    """`facepipe rnorm`'s tables in order, each computed when asked for (the last takes longest).

    With target "optimum" and no measured optimum for `arch`, the last item is the reason (a str)
    instead of a table; an unusable numeric target raises FacepipeError."""
    model = create_model(arch, num_classes=2, **({"dilations": dilations} if dilations else {}))
    yield stage_table(model, arch)
    yield rnorm_table(model, arch, size)
    try:
        yield target_table(arch, size, target)
    except FacepipeError as e:
        if target != "optimum":
            raise
        yield str(e)


def sweep_tables(out, manifest: dict, arch: str) -> list[Table]:
    """A finished sweep's cells (OUT/sweep.json) by s and d, and its optimum (`manifest`: run_sweep's)."""
    res = json.loads((Path(out) / "sweep.json").read_text())
    rows = [(c["s"], c["d"], c["r"], f"{c['r_norm']:.2f}", c["epochs"], f"{c['overall_f1']:.4f}",
             f"{c['pixel_acc']:.4f}") for c in sorted(res["cells"], key=lambda c: (c["s"], c["d"]))]
    optimum = [("r/s", f"{manifest['optimum_rnorm']:.3f} ({res['optimum_from']})"),
               ("best cell", f"{manifest['best_cell']} F1 {manifest['best_f1']:.4f}"),
               ("figure", str(Path(out) / "sweep.png"))]
    return [Table(f"rnorm sweep {arch} -> {out}", rows, SWEEP_COLUMNS), Table("optimum", optimum)]
