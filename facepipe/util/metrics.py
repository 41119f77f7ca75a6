"""One confusion matrix serves every metric (training validation, eval, bench).

Per-class F1 = 2TP / (2TP + FP + FN) from the matrix accumulated over the whole set (not averaged per
image). A merged group ("mouth" = lips + inner mouth) and the dataset's "overall" set are scored by
summing their rows and columns first, as the Helen protocol does.
"""
from __future__ import annotations

import numpy as np

from facepipe.util.schema import IGNORE, LabelSchema


def confusion(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """cm[t, p] counts of target class t predicted as p; target == 255 is ignored."""
    t = np.asarray(target).ravel().astype(np.int64)
    p = np.asarray(pred).ravel().astype(np.int64)
    keep = (t != IGNORE) & (t < num_classes)
    p = np.clip(p[keep], 0, num_classes - 1)
    return np.bincount(t[keep] * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def confusion_torch(pred, target, num_classes: int):
    """confusion() of torch tensors, counted where they are (on the GPU in training)."""
    t, p = target.reshape(-1), pred.reshape(-1)
    keep = (t != IGNORE) & (t < num_classes)
    idx = t[keep].long() * num_classes + p[keep].long().clamp(0, num_classes - 1)
    return idx.bincount(minlength=num_classes ** 2).reshape(num_classes, num_classes).cpu().numpy()


def merge(cm: np.ndarray, members: list[int]) -> np.ndarray:
    """2x2 matrix [[rest->rest, rest->group], [group->rest, group->group]] of a pooled class."""
    m = np.zeros(cm.shape[0], bool)
    m[members] = True
    return np.array([[cm[~m][:, ~m].sum(), cm[~m][:, m].sum()], [cm[m][:, ~m].sum(), cm[m][:, m].sum()]])


def f1_of(cm2: np.ndarray) -> float:
    tp, fn, fp = cm2[1, 1], cm2[1, 0], cm2[0, 1]
    d = 2 * tp + fp + fn
    return float(2 * tp / d) if d else float("nan")


def scores(cm: np.ndarray, schema: LabelSchema) -> dict:
    """per_class_f1, group_f1, overall_f1 (pooled `schema.overall`), mean_f1 (non-background), pixel_acc."""
    n = schema.num_classes
    per = {schema.classes[c]: f1_of(merge(cm, [c])) for c in range(n)}
    groups = {g: f1_of(merge(cm, [schema.index(x) for x in mem])) for g, mem in schema.groups.items()}
    overall = f1_of(merge(cm, [schema.index(x) for x in schema.overall])) if schema.overall else float("nan")
    fg = [v for k, v in per.items() if k != "background" and not np.isnan(v)]
    total = cm.sum()
    return {"per_class_f1": per, "group_f1": groups, "overall_f1": overall,
            "mean_f1": float(np.mean(fg)) if fg else float("nan"),
            "pixel_acc": float(np.trace(cm) / total) if total else float("nan"), "pixels": int(total)}
