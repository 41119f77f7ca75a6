"""Parameters and multiply-accumulates counted from the real layers (forward hooks), not from tables."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of one forward pass on `x` (convolutions and linear layers; per batch of x)."""
    total = [0]

    def conv_hook(m: nn.Conv2d, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        total[0] += out.numel() * (m.in_channels // m.groups) * k

    def convt_hook(m: nn.ConvTranspose2d, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        total[0] += inp[0].numel() * (m.out_channels // m.groups) * k

    def linear_hook(m: nn.Linear, inp, out):
        total[0] += out.numel() * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.ConvTranspose2d):
            hooks.append(m.register_forward_hook(convt_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return int(total[0])


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
