"""Start a wider network from a narrower one of the same architecture, computing the same function.

Every tensor of the narrow network goes into the leading block of the wide one's tensor of the same name;
the extra channels keep their fresh initialisation. A channel-mixing conv (or linear) then gets zeros
where the old output channels read the new input channels, so the new channels cannot change any old
channel: the wide network starts where the narrow one stopped, and the zeros get gradients from the
first step (the new channels' activations are not zero). Depthwise convs and BatchNorm act per channel
and need nothing. Whether this is exact depends on the architecture (a concatenation would interleave
old and new channels), so `widen` checks the outputs on a random input and refuses when they differ.
"""
from __future__ import annotations

import torch
from torch import nn

TOLERANCE = 1e-4  # largest output difference accepted, in logits, on a random input


def widen(narrow: nn.Module, wide: nn.Module, in_channels: int, size: int = 64) -> bool:
    """Load `narrow`'s weights into `wide` as above; True when the two then give the same outputs.
    On False `wide` holds a half-loaded state: rebuild it before using it."""
    old, new = narrow.state_dict(), wide.state_dict()
    if old.keys() != new.keys():
        return False
    mixing = {name + ".weight" for name, m in wide.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear)) and getattr(m, "groups", 1) == 1}
    with torch.no_grad():
        for k, a in old.items():
            b = new[k]
            if a.dim() != b.dim() or any(x > y for x, y in zip(a.shape, b.shape)):
                return False
            lead = tuple(slice(0, n) for n in a.shape)
            if k in mixing and b.dim() >= 2 and b.shape[1] > a.shape[1]:
                b[: a.shape[0], a.shape[1]:] = 0  # old outputs ignore the new inputs
            b[lead] = a.to(b.dtype)
    wide.load_state_dict(new)
    return same_outputs(narrow, wide, in_channels, size)


def same_outputs(a: nn.Module, b: nn.Module, in_channels: int, size: int) -> bool:
    modes = a.training, b.training
    a.eval()
    b.eval()
    try:
        x = torch.randn(2, in_channels, size, size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ya, yb = a(x), b(x)
        return ya.shape == yb.shape and bool((ya - yb).abs().max() <= TOLERANCE)
    finally:
        a.train(modes[0])
        b.train(modes[1])
