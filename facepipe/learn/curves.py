"""curves.png of a run: losses per epoch (log scale) and validation scores."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facepipe.util.atomic import atomic_path


def plot_curves(metrics_path, png_path) -> None:
    # matplotlib is heavy (~0.5 s to import): loaded only when a run has finished and plots.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): no display needed

    recs = [json.loads(l) for l in Path(metrics_path).read_text().splitlines() if l.strip()]
    if not recs:
        return
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ep = [r["epoch"] for r in recs]
    for key in ("total", "ce", "sc", "center", "kd_labeled", "kd_unlabeled"):  # train's parts, distill's
        if key in recs[0]:
            ax[0].plot(ep, [r.get(key, np.nan) for r in recs], label=key)
    ax[0].set_xlabel("epoch"), ax[0].set_ylabel("loss"), ax[0].legend(), ax[0].set_yscale("log")
    vr = [r for r in recs if "val" in r]
    if vr:
        for key in ("pixel_acc", "overall_f1", "mean_f1"):
            ax[1].plot([r["epoch"] for r in vr], [r["val"][key] for r in vr], marker="o", label=key)
        ax[1].set_xlabel("epoch"), ax[1].set_title("validation (aligned crop)"), ax[1].legend()
    else:
        ax[1].text(0.5, 0.5, "no validation split", ha="center", va="center")
    fig.tight_layout()
    with atomic_path(png_path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
