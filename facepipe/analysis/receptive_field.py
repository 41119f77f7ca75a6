"""Theoretical receptive field r and r_norm = r / s of any network (method.md section 3).

`receptive_field` measures r on the real layers: the network is made linear with positive weights
(max-pool -> avg-pool, norms and activations -> identity), so no path can cancel another, and the
support of d(output centre)/d(input) is exactly the set of pixels some path reaches. Branches,
skips and upsampling are handled for free, which a layer list cannot do. `layer_table` is the
analytic r = 1 + sum (k_eff - 1) * jump for sequential paths, used as a cross-check and a size guess.
"""
from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import torch
from torch import nn

from facepipe.models import create_model
from facepipe.util.errors import FacepipeError

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish,
                nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Dropout, nn.Dropout2d)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
_GLOBAL = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
# Layers whose weights the channel collapse knows how to replace; anything else with parameters
# (Linear, grouped convs...) falls back to the full-width network.
_COLLAPSIBLE = (nn.Conv2d, nn.ConvTranspose2d, nn.PReLU) + _NORMS


def _pair(v) -> int:
    # Square kernels are assumed, as for the square inputs of method.md.
    return int(v[0] if isinstance(v, tuple) else v)


def layer_table(model: nn.Module) -> list[dict]:
    """Conv and pool layers in registration order with k, stride, dilation, jump and cumulative r.

    Exact for a sequential path; for branching nets it sums every layer, an upper-bound-like guess."""
    rows, r, jump = [], 1, 1
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            k, s, d = _pair(m.kernel_size), _pair(m.stride), _pair(m.dilation)
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            k, s = _pair(m.kernel_size), _pair(m.stride)
            d = _pair(getattr(m, "dilation", 1))
        else:
            continue
        r += (d * (k - 1) + 1 - 1) * jump
        rows.append(dict(name=name, type=type(m).__name__, k=k, stride=s, dilation=d, jump=jump, r=r))
        jump *= s
    return rows


class _Detached(nn.Module):
    """Global pooling sees the whole image; detaching it leaves the local receptive field to measure."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.pool = pool

    def forward(self, x):
        return self.pool(x).detach()


class _CollapsedConv(nn.Module):
    """One channel standing for all: with constant weights every channel carries the same values,
    so summing the inputs and convolving once has the same spatial support at a fraction of the cost."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        cls = type(conv)
        kw = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, bias=False)
        if isinstance(conv, nn.ConvTranspose2d):
            kw["output_padding"] = conv.output_padding
        else:
            kw["padding_mode"] = conv.padding_mode
        self.conv = cls(1, 1, conv.kernel_size, **kw).double()
        nn.init.constant_(self.conv.weight, 1.0 / self.conv.weight[0].numel())

    def forward(self, x):
        return self.conv(x.mean(1, keepdim=True))


def _linearize(model: nn.Module, collapse: bool) -> nn.Module:
    net = copy.deepcopy(model).cpu().double().eval()

    def swap(parent: nn.Module) -> None:
        for name, m in parent.named_children():
            if isinstance(m, _ACTIVATIONS + _NORMS):
                new = nn.Identity()
            elif isinstance(m, nn.MaxPool2d):
                # Max sends its gradient to one element only; the average reaches the whole window.
                if _pair(m.dilation) != 1:
                    raise ValueError(f"{name}: dilated max-pooling is not supported")
                new = nn.AvgPool2d(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode)
            elif isinstance(m, _GLOBAL):
                new = _Detached(nn.AdaptiveAvgPool2d(m.output_size))
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and collapse:
                new = _CollapsedConv(m)
            else:
                swap(m)
                continue
            setattr(parent, name, new)

    swap(net)
    if not collapse:
        with torch.no_grad():
            for m in net.modules():
                if getattr(m, "weight", None) is not None:
                    # 1/fan-in keeps activations near 1 through any depth: no overflow, no underflow.
                    m.weight.fill_(1.0 / m.weight[0].numel())
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
    return net


def _can_collapse(model: nn.Module) -> bool:
    for m in model.modules():
        if any(True for _ in m.parameters(recurse=False)) and not isinstance(m, _COLLAPSIBLE):
            return False
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.groups != 1:
            return False
    return True


def _in_channels(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    if isinstance(config, dict) and "in_channels" in config:
        return int(config["in_channels"])
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            return m.in_channels
    raise ValueError("cannot tell the model's input channels")


def _support(net: nn.Module, channels: int, size: int, probes: int | None) -> tuple[int, bool]:
    """Widest support over output pixels next to the centre, and whether any comes near the edge.

    Outputs one pixel apart can see different extents (strides, bilinear taps); they repeat with
    the network's largest stride, so probing that many diagonal neighbours (`probes=None`) is exact."""
    x = torch.ones(1, channels, size, size, dtype=torch.float64, requires_grad=True)
    heights = []
    hooks = [m.register_forward_hook(lambda m, i, o: heights.append(o.shape[-2]))
             for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.AvgPool2d))]
    try:
        out = net(x)
    finally:
        for h in hooks:
            h.remove()
    out = out[0] if isinstance(out, (tuple, list)) else out
    if probes is None:
        # 1x1 maps are global-context branches, detached, not strides.
        spatial = [h for h in heights if h > 1]
        probes = min(64, max(1, round(size / min(spatial)))) if spatial else 1
    margin = max(2, size // 16)
    h, w = out.shape[-2:]
    r, clipped = 0, False
    for p in range(probes):
        (grad,) = torch.autograd.grad(out[0, 0, min(h // 2 + p, h - 1), min(w // 2 + p, w - 1)], x,
                                      retain_graph=p < probes - 1)
        hit = grad[0].abs().sum(0) > 0
        for axis in (0, 1):
            idx = hit.any(dim=1 - axis).nonzero().flatten()
            if idx.numel() == 0:
                continue
            lo, hi = int(idx[0]), int(idx[-1])
            r = max(r, hi - lo + 1)
            clipped |= lo < margin or hi > size - 1 - margin
    return r, clipped


def receptive_field(model: nn.Module, probes: int | None = None, start: int | None = None,
                    cap: int = 4096, collapse: bool | None = None) -> dict:
    """Exact theoretical receptive field of `model`'s output units (class 0), by gradient support.

    The input doubles from `start` (default: guessed from `layer_table`) until the support stays clear
    of the border (at `cap` it gives up and says `clipped`). `global_context` says the model also
    pools the whole image, which r excludes.
    `collapse` (default: when possible) runs a one-channel copy, same support, ~C^2 times cheaper."""
    if collapse is None:
        collapse = _can_collapse(model)
    net = _linearize(model, collapse)
    channels = _in_channels(model)
    if start is None:
        # The layer walk is exact for a chain and overshoots on branches, hence the clamp.
        rows = layer_table(model)
        guess = 1.25 * (rows[-1]["r"] if rows else 1) + 64
        start = int(min(max(guess, 128), 1024))
    size = 64 * -(-start // 64)
    while True:
        # One probe is enough to find an input size that does not clip; then probe them all.
        r, clipped = _support(net, channels, size, 1)
        if not clipped:
            r, clipped = _support(net, channels, size, probes)
        if not clipped or size >= cap:
            break
        size = min(2 * size, cap)
    return dict(r=r, clipped=clipped, input_size=size, global_context=has_global_pooling(model))


def has_global_pooling(model: nn.Module) -> bool:
    """Whether the network also pools the whole image (BiSeNet's context path): its r is the local part."""
    return any(isinstance(m, _GLOBAL) for m in model.modules())


_RF_KEYS = ("probes", "start", "cap", "collapse")


def _build(model_or_name, kw: dict) -> nn.Module:
    if isinstance(model_or_name, nn.Module):
        return model_or_name
    return create_model(model_or_name, kw.pop("num_classes", 2), **kw)


def rnorm(model_or_name, size: int, **kw) -> dict:
    """r and r / size; a name is built with `create_model(name, num_classes=2, **kw)`."""
    rf_kw = {k: kw.pop(k) for k in _RF_KEYS if k in kw}
    out = receptive_field(_build(model_or_name, kw), **rf_kw)
    return dict(out, size=size, r_norm=out["r"] / size)


def dilation_candidates(n: int, rates=(1, 2, 4, 8, 16)) -> list[tuple[int, ...]]:
    # Non-decreasing rates: the usual shape of a context block, and it keeps the search small.
    return list(itertools.combinations_with_replacement(sorted(rates), n))


def best_dilations(name: str, size: int, target: float, candidates=None, **kw) -> dict:
    """The `dilations` setting whose r / size is closest to `target` (ties: smaller largest rate).

    Measuring r exactly costs seconds per large setting, so every candidate is ranked by the analytic
    walk plus the offset (decoder layers the walk misses) measured exactly at the default setting:
    dilations only change the sequential context block, so the offset does not depend on them. The
    winner's r is then measured exactly; if it disagrees with the prediction, every candidate is
    measured exactly instead.
    """
    rf_kw = {k: kw.pop(k) for k in _RF_KEYS if k in kw}
    default = _build(name, dict(kw)).config.get("dilations")
    if default is None:
        raise FacepipeError(f"model {name!r} has no `dilations` setting to search")
    if candidates is None:
        candidates = sorted(set(dilation_candidates(len(default))) | {tuple(default)})

    def exact(dil):
        return receptive_field(_build(name, dict(kw, dilations=tuple(dil))), **rf_kw)["r"]

    def analytic(dil):
        return max(row["r"] for row in layer_table(_build(name, dict(kw, dilations=tuple(dil)))))

    def pick(table):
        return min(table, key=lambda t: (abs(t["r_norm"] - target), max(t["dilations"]), sum(t["dilations"])))

    offset = exact(default) - analytic(default)
    table = []
    for dil in candidates:
        r = analytic(dil) + offset
        table.append(dict(dilations=tuple(dil), r=r, r_norm=r / size))
    best = pick(table)
    if exact(best["dilations"]) != best["r"]:
        table = [dict(dilations=tuple(d), r=exact(d), r_norm=exact(d) / size) for d in candidates]
        best = pick(table)
    return dict(best, target=target, size=size, table=table)


OPTIMUM_FILE = Path(__file__).parent.parent / "assets" / "rnorm_optimum.json"


def measured_optimum() -> dict:
    """The r/s optima our own sweeps measured (assets/rnorm_optimum.json: per arch, with command and date)."""
    if not OPTIMUM_FILE.exists():
        raise FacepipeError("no measured r_norm optimum is shipped; give a number or run `facepipe rnorm sweep`.")
    return json.loads(OPTIMUM_FILE.read_text())


def optimum_for(arch: str) -> dict:
    """{rnorm, source} for `arch`: its own sweep's optimum if one was measured, else the file's default.

    An entry of `by_arch` is a number or a record {rnorm, source, command, measured}. Our sweeps found
    different optima for the teacher (1.06) and the student (0.53), so each family carries its own.
    """
    opt = measured_optimum()
    entry = opt.get("by_arch", {}).get(arch)
    if isinstance(entry, dict):
        return {"rnorm": float(entry["rnorm"]), "source": entry.get("source", "")}
    if entry is not None:
        return {"rnorm": float(entry), "source": opt.get("source", "")}
    return {"rnorm": float(opt["rnorm"]), "source": opt.get("source", "") + " (default: no sweep of " + arch + ")"}


def dilations_for(arch: str, size: int, target: str | float) -> tuple[tuple[int, ...], dict]:
    """Dilations whose r / size is closest to `target` (a number, or "optimum" for the measured one)."""
    source = None
    if isinstance(target, str) and target.strip().lower() == "optimum":
        opt = optimum_for(arch)
        value, source = opt["rnorm"], opt["source"]
    else:
        try:
            value = float(target)
        except ValueError:
            raise FacepipeError(f"--rnorm {target!r}: give a number such as 1.2, or `optimum`.") from None
    if not value > 0:
        raise FacepipeError(f"--rnorm {target!r}: r/s must be positive.")
    b = best_dilations(arch, size, value)
    return tuple(b["dilations"]), dict(b, source=source)
