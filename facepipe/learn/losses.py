"""Training criteria: cross entropy plus center loss or the statistical contextual loss (method.md section 4).

Centers are buffers moved by the center-loss rule, not parameters, so no optimizer (and no weight decay)
touches them. The inter-class hinge is evaluated on the centers *after* this batch's update, written as
a function of the batch's features: a hinge on stored centers alone would never reach the network.

Several ranks, one global batch (`criterion.sync = facepipe.util.distributed.Dist`): pixel counts and the
center-update sums are summed over ranks, so every rank moves the centers exactly as one process would;
each rank's loss is world x its share of the global-batch loss, so DDP's gradient average is the
gradient of the one-process loss; the parts are shares whose sum over ranks is the one-process value.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facepipe.util.errors import FacepipeError

IGNORE = 255


def resample_nearest(values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) -> (N, h, w) by nearest neighbour: labels must never be blended, and per-pixel CE
    sampled the same way stays with its pixel's label."""
    if tuple(values.shape[-2:]) == tuple(size):
        return values
    out = F.interpolate(values[:, None].to(torch.float64), size=size, mode="nearest")[:, 0]
    return out.to(values.dtype)


def subspace_dist2(centers: torch.Tensor) -> torch.Tensor:
    """(K, K) squared distance of each pair j, k measured on the two classes' own axes j and k."""
    k = centers.shape[0]
    own = centers[:, :k]
    gap = own.diagonal()[:, None] - own.T  # gap[j, k] = c_j[j] - c_k[j]
    return gap**2 + (gap**2).T


def closest_pair(dist2: torch.Tensor, valid: torch.Tensor) -> tuple[int, int] | None:
    """Indices (Q, R), Q < R, of the closest valid pair, or None with fewer than two valid classes."""
    if int(valid.sum()) < 2:
        return None
    mask = valid[:, None] & valid[None, :] & ~torch.eye(len(valid), dtype=torch.bool, device=valid.device)
    d = dist2.detach().masked_fill(~mask, float("inf"))
    q, r = divmod(int(d.argmin()), d.shape[1])
    return min(q, r), max(q, r)


class CenterLoss(nn.Module):
    """L_intra = 1/(2m) sum ||x_i - c_{y_i}||^2; centers move by delta c_j = sum (c_j - x_i) / (1 + n_j)."""

    def __init__(self, num_classes: int, feat_dim: int, lam: float = 0.005, warmup: int = 1000,
                 alpha: float = 0.5, hard_aware: bool = False, ignore_index: int = IGNORE):
        super().__init__()
        self.name = "center"
        self.num_classes, self.feat_dim = num_classes, feat_dim
        self.lam, self.warmup, self.alpha = lam, warmup, alpha
        self.hard_aware, self.ignore_index = hard_aware, ignore_index
        self.register_buffer("centers", torch.zeros(num_classes, feat_dim))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        self.last_pair: tuple[int, int] | None = None
        self.sync = None  # set by Criterion

    def _sum(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.sync is None else self.sync.sum(t)

    def _pixels(self, features: torch.Tensor, target: torch.Tensor, ce: torch.Tensor | None):
        n, d, h, w = features.shape
        if d != self.feat_dim:
            raise ValueError(f"features have {d} channels, the loss was built for {self.feat_dim}")
        y = resample_nearest(target, (h, w)).reshape(-1)
        x = features.permute(0, 2, 3, 1).reshape(-1, d)
        keep = y != self.ignore_index
        if ce is not None:
            ce = resample_nearest(ce, (h, w)).reshape(-1)[keep]
        return x[keep], y[keep], ce

    def _updated_centers(self, x: torch.Tensor, y: torch.Tensor, ce: torch.Tensor | None) -> torch.Tensor:
        """Centers after one update step, differentiable in x."""
        c = self.centers.to(x.dtype)
        if self.hard_aware and ce is not None:
            # Pixels the network still gets badly wrong would drag the centers towards confusion.
            sums = self._sum(torch.zeros(self.num_classes, dtype=ce.dtype, device=ce.device).index_add_(0, y, ce))
            mean = sums / self._sum(torch.bincount(y, minlength=self.num_classes)).clamp(min=1)
            easy = ce <= mean[y]
            x, y = x[easy], y[easy]
        count = self._sum(torch.bincount(y, minlength=self.num_classes)).to(x.dtype)[:, None]
        sums = torch.zeros_like(c).index_add_(0, y, x)
        if self.sync is not None:
            sums = self.sync.sum_keep_grad(sums)
        return c - self.alpha * (count * c - sums) / (1 + count)

    def _intra(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        m = len(y) if self.sync is None else int(self._sum(torch.tensor(len(y), device=y.device)))
        if m == 0:
            return x.sum() * 0
        return ((x - self.centers.to(x.dtype)[y]) ** 2).sum() / (2 * m)

    def _inter(self, new_centers: torch.Tensor, valid: torch.Tensor, x: torch.Tensor):
        return x.sum() * 0, None

    def forward(self, features: torch.Tensor, target: torch.Tensor, ce: torch.Tensor | None = None,
                update: bool | None = None):
        """(lam * (L_intra + L_inter), parts). `ce`: per-pixel CE (N, H, W), used by hard-aware mode.

        `update` (default: training mode) moves the centers and counts an iteration."""
        update = self.training if update is None else update
        x, y, ce = self._pixels(features, target, ce)
        x = x.to(torch.promote_types(x.dtype, self.centers.dtype))
        new = self._updated_centers(x, y, ce)
        present = self._sum(torch.bincount(y, minlength=self.num_classes)) > 0
        active = int(self.iteration) >= self.warmup
        if active:
            intra = self._intra(x, y)
            inter, pair = self._inter(new, self.seen | present, x)
            loss = self.lam * (intra + inter)
        else:
            intra = inter = loss = features.sum() * 0
            pair = None
        if update:
            with torch.no_grad():
                self.centers.copy_(new.detach())
                self.seen |= present
                self.iteration += 1
        # Parts stay scalar tensors so a training loop can sum them; the pair is kept on the side.
        self.last_pair = pair
        # Under sync the inter term is the same global value on every rank: its share is 1/world of it.
        inter_part = inter.detach() / (1 if self.sync is None else self.sync.world)
        parts = {"intra": intra.detach(), "inter": inter_part,
                 self.name: loss.detach() if self.sync is None else self.lam * (intra.detach() + inter_part)}
        return loss.to(features.dtype), parts


class SCLoss(CenterLoss):
    """Statistical contextual loss: center loss plus a hinge max(0, d - dist^2) between centers.

    variant "closest": the closest pair only; "all": summed over every pair of classes with centers.
    subspace=False measures dist on all D axes: the range-loss-style baseline of method.md."""

    def __init__(self, num_classes: int, feat_dim: int, lam: float = 0.005, margin: float = 1.0,
                 warmup: int = 1000, variant: str = "closest", hard_aware: bool = False, alpha: float = 0.5,
                 subspace: bool = True, ignore_index: int = IGNORE):
        if variant not in ("closest", "all"):
            raise FacepipeError(f"variant must be 'closest' or 'all', not {variant!r}")
        if subspace and feat_dim < num_classes:
            raise ValueError(f"feat_dim {feat_dim} < num_classes {num_classes}: the sub-space needs a class axis each")
        super().__init__(num_classes, feat_dim, lam, warmup, alpha, hard_aware, ignore_index)
        self.margin, self.variant, self.subspace = margin, variant, subspace
        self.name = "sc" if subspace else "range"

    def _inter(self, new_centers: torch.Tensor, valid: torch.Tensor, x: torch.Tensor):
        if self.subspace:
            dist2 = subspace_dist2(new_centers)
        else:
            dist2 = ((new_centers[:, None] - new_centers[None]) ** 2).sum(-1)
        pair = closest_pair(dist2, valid)
        if pair is None:
            return x.sum() * 0, None
        if self.variant == "closest":
            return F.relu(self.margin - dist2[pair]), pair
        upper = torch.triu(valid[:, None] & valid[None, :], diagonal=1)
        return F.relu(self.margin - dist2[upper]).sum(), pair


class Criterion(nn.Module):
    """criterion(logits, features, target) -> (total, parts): CE (ignore 255) plus an optional extra term.

    A module so its centers follow .to(device) and land in the checkpoint's state dict."""

    def __init__(self, extra: CenterLoss | None = None, ignore_index: int = IGNORE):
        super().__init__()
        self.extra, self.ignore_index = extra, ignore_index
        self.sync = None

    def set_sync(self, sync) -> None:
        """Ranks share one global batch (see the module docstring); None: one process."""
        self.sync = sync
        if self.extra is not None:
            self.extra.sync = sync

    def forward(self, logits: torch.Tensor, features: torch.Tensor | None, target: torch.Tensor):
        if logits.shape[-2:] != target.shape[-2:]:
            raise ValueError(f"logits {tuple(logits.shape[-2:])} and labels {tuple(target.shape[-2:])} differ")
        per_pixel = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="none")
        valid = (target != self.ignore_index).sum()
        if self.sync is not None:
            valid = self.sync.sum(valid)  # this rank's share of the global-batch mean
        ce = per_pixel.sum() / valid.clamp(min=1)
        scale = 1 if self.sync is None else self.sync.world
        parts = dict(ce=ce.detach())
        if self.extra is None:
            parts["total"] = parts["ce"]
            return ce * scale if self.sync is not None else ce, parts
        if features is None:
            raise ValueError("this criterion needs the model's features: call model(x, return_features=True)")
        hard = per_pixel.detach() if self.extra.hard_aware else None
        extra, extra_parts = self.extra(features, target, ce=hard)
        parts.update(extra_parts)
        total = ce + extra
        if self.sync is None:
            parts["total"] = total.detach()
            return total, parts
        parts["total"] = parts["ce"] + parts[self.extra.name]
        return total * scale, parts


def build_criterion(kind: str, num_classes: int, feat_dim: int | None = None, **kw) -> Criterion:
    """kind: "ce", "center" (+ center loss), "sc" / "sc-all" (+ sc loss), "range" (full-space baseline)."""
    feat_dim = num_classes if feat_dim is None else feat_dim
    if kind == "ce":
        return Criterion()
    if kind == "center":
        return Criterion(CenterLoss(num_classes, feat_dim, **kw))
    if kind in ("sc", "sc-all"):
        return Criterion(SCLoss(num_classes, feat_dim, variant="all" if kind == "sc-all" else "closest", **kw))
    if kind == "range":
        return Criterion(SCLoss(num_classes, feat_dim, subspace=False, **kw))
    raise FacepipeError(f"unknown criterion {kind!r}; choose ce, center, sc, sc-all or range")

