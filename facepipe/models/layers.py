"""Layers that compute exactly what plain torch layers compute, arranged so a CPU runs them faster at
inference. Both were found by timing the default student layer by layer (docs/results.md, "Speed on the
Xeon: two layers rearranged"): at 256x256, batch 1, 2 threads, channels_last, they were a third of its
time.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# oneDNN's depthwise kernel slows down 2-4x at dilation 8 (196 against 48-62 us at 2 and 4 on a 96x32x32
# map), while space-to-batch runs it as an undilated conv in 80 us; at 2 and 4 the copies cost more
# than they save.
SPACE_TO_BATCH_DILATION = 8


def resize_logits(x: torch.Tensor, size, align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of class logits, run in NCHW. For a few channels ATen's channels_last bilinear
    kernel is 2.3x slower than the NCHW one (6 classes, 64 -> 256: 573 against 248 us); the copy costs
    about 5 us. Many-channel maps keep channels_last, where it is faster (48 channels: 44 against 201 us).
    An enlargement by a whole factor at inference on a CPU runs as upsample_whole (the same values).
    """
    x = x.contiguous()
    # In a graph being recorded the sizes may be symbols: read them only outside one
    if not (align_corners or x.device.type != "cpu" or torch.is_grad_enabled() or x.dim() != 4 or _in_a_graph()):
        h, w = x.shape[-2:]
        s = int(size[0]) // h
        if 1 < s <= MAX_WHOLE_FACTOR and tuple(int(v) for v in size) == (s * h, s * w):
            return upsample_whole(x, s)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def _in_a_graph() -> bool:
    """Whether this call is being recorded into a graph (ONNX export, a trace, a script, torch.compile),
    where shapes may be symbols and the runtime has its own kernels: the layers here then run plainly."""
    return (torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.jit.is_scripting()
            or torch.compiler.is_compiling())


# Whole factors upsample_whole takes (the students' 4, the teacher's 2); larger ones are rare and untimed.
MAX_WHOLE_FACTOR = 8


def upsample_whole(x: torch.Tensor, s: int) -> torch.Tensor:
    """F.interpolate(x, scale s, bilinear, align_corners=False) for a whole s, up to float rounding: each
    output column lies at a fixed fraction between two input columns, one of s phases, so the width is
    s lerps between shifted views and the height s more (the border repeated, as ATen clamps).

    Why: ATen's kernel computes indices and weights per pixel and ran 0.4-0.5 ms of the default's 4.4 ms
    on the AVX2 EPYC (6 classes, 64 -> 256, 2 threads); these eight lerps write whole rows, about 0.2 ms
    (docs/results.md, "The last resize in rows")."""
    n, c, h, w = x.shape
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    # Phase j's source lies (j + 0.5) / s - 0.5 of a pixel from its own: toward the previous pixel when negative
    offsets = [(j + 0.5) / s - 0.5 for j in range(s)]
    wide = xp.new_empty(n, c, h + 2, w, s)  # the width pass first: its writes are the smaller
    for j, o in enumerate(offsets):
        torch.lerp(xp[..., 1:-1], xp[..., :-2] if o < 0 else xp[..., 2:], abs(o), out=wide[..., j])
    wide = wide.view(n, c, h + 2, s * w)
    out = x.new_empty(n, c, h, s, s * w)
    for j, o in enumerate(offsets):
        torch.lerp(wide[..., 1:-1, :], wide[..., :-2, :] if o < 0 else wide[..., 2:, :], abs(o), out=out[..., j, :])
    return out.view(n, c, s * h, s * w)


class DilatedDepthwise(nn.Conv2d):
    """A 3x3 conv with dilation d, padding d and stride 1 (same weights, same state dict as nn.Conv2d);
    the students' context blocks use it depthwise.

    At inference on a CPU, with d >= SPACE_TO_BATCH_DILATION and a map whose sides d divides, it runs as
    space-to-batch: the map is cut into d*d interleaved sub-maps (every d-th pixel), each convolved
    undilated with padding 1, and interleaved back. That is the same sum over the same pixels, with the
    same zeros outside the map, so the output is the dilated conv's up to float rounding.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # An exported graph keeps the plain conv: its shapes are symbols there, and onnxruntime has its own
        # kernels. Otherwise shapes are numbers here.
        if _in_a_graph():
            return super().forward(x)
        d = self.dilation[0]
        n, c, h, w = x.shape
        if (self.training or d < SPACE_TO_BATCH_DILATION or x.device.type != "cpu" or h % d or w % d
                or self.stride != (1, 1) or self.padding != (d, d) or self.kernel_size != (3, 3)
                or self.dilation != (d, d)):
            return super().forward(x)
        # Channels last throughout: (n, h, w, c) -> (n*d*d, h/d, w/d, c); a view when x is channels_last.
        y = x.permute(0, 2, 3, 1).reshape(n, h // d, d, w // d, d, c).permute(0, 2, 4, 1, 3, 5)
        y = y.reshape(n * d * d, h // d, w // d, c).permute(0, 3, 1, 2)
        y = F.conv2d(y, self.weight, self.bias, self.stride, 1, 1, self.groups)
        y = y.permute(0, 2, 3, 1).reshape(n, d, d, h // d, w // d, c).permute(0, 3, 1, 4, 2, 5)
        return y.reshape(n, h, w, c).permute(0, 3, 1, 2)
