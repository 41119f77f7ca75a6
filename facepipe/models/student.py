"""Real-time students for distillation (method.md section 5): few channels, depthwise-separable
blocks, no heavy heads. Like the teacher, the encoder stops at stride 8 and residual dilated blocks set
the receptive field, so `facepipe rnorm` can pick their dilations for a target r/s. The classifier runs
at stride 4 (head_stride=4) and is upsampled bilinearly: layers at high resolution cost the most on a
CPU at batch 1. Measured at 256x256, batch 1, 2 threads, BatchNorm folded: head stride 2 ran 233 FPS,
stride 4 ran 312 FPS, against 21.7 FPS for bisenet-r18 in the same process.

Two settings of the bundled default, both for speed (docs/results.md, "The fast default's stem and skips"):
`stem_width` gives the stride-2 conv, which reads the full-size input, fewer channels than `widths[0]`, and
`relu_after_add` puts the context blocks' ReLU after the skip's add, the form onnxruntime fuses into one conv.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facepipe.models.layers import DilatedDepthwise, resize_logits
from facepipe.models.registry import register_model

# One call in a traced graph (models.fold): it picks its way of computing from the map's shape at run time.
torch.fx.wrap("resize_logits")


def cbr(cin, cout, k=1, stride=1, dilation=1, groups=1):
    pad = dilation * (k - 1) // 2
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def sep(cin, cout, stride=1, dilation=1):
    """Depthwise 3x3 (BN, no ReLU: keeps the linear bottleneck) then pointwise conv-BN-ReLU."""
    conv = nn.Conv2d if dilation == 1 else DilatedDepthwise  # same weights; faster on a CPU at dilation 8
    return nn.Sequential(
        conv(cin, cin, 3, stride, dilation, dilation=dilation, groups=cin, bias=False), nn.BatchNorm2d(cin),
        cbr(cin, cout))


class Residual(nn.Module):
    """x + block(x); with relu_after_add, relu(x + block(x)) from a block whose last ReLU is taken out.
    The second is the form onnxruntime fuses into one convolution (its conv adds the skip, then applies the
    ReLU); the first leaves each skip as a separate pass over the map."""

    def __init__(self, block, relu_after_add: bool = False):
        super().__init__()
        self.block = block
        self.relu_after_add = relu_after_add
        if relu_after_add:
            block[-1][-1] = nn.Identity()  # sep's closing cbr ReLU; no weights, so state_dict keys stay the same

    def forward(self, x):
        if self.relu_after_add:
            return (x + self.block(x)).relu_()  # in place: the sum is new memory, and one map less to allocate
        return x + self.block(x)


class Student(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, widths: tuple[int, int, int] = (16, 32, 64),
                 dilations: tuple[int, ...] = (2, 4, 8), feat_dim: int | None = None, head_stride: int = 4,
                 global_context: bool = False, stem_width: int | None = None, relu_after_add: bool = False):
        super().__init__()
        w0, w1, w2 = (int(v) for v in widths)
        feat_dim = num_classes if feat_dim is None else feat_dim
        dilations = tuple(int(d) for d in dilations)
        if head_stride not in (2, 4):
            raise ValueError("head_stride must be 2 or 4")
        for name, flag in (("global_context", global_context), ("relu_after_add", relu_after_add)):
            if not isinstance(flag, bool):  # JSON "no" or 0 would otherwise switch it on or off silently
                raise ValueError(f"{name} must be true or false")
        stem_width = w0 if stem_width is None else stem_width
        if isinstance(stem_width, bool) or not isinstance(stem_width, int) or stem_width < 1:
            raise ValueError(f"stem_width must be a whole number of channels, at least 1 (got {stem_width!r})")
        self.head_stride = head_stride
        self.config = dict(num_classes=num_classes, in_channels=in_channels, widths=(w0, w1, w2),
                           dilations=dilations, feat_dim=feat_dim, head_stride=head_stride)
        if global_context:  # recorded only when on, so older checkpoints' configs stay as they were
            self.config["global_context"] = True
        if stem_width != w0:  # the stride-2 layer's own width: the costliest layer per channel (full-size input)
            self.config["stem_width"] = stem_width
        if relu_after_add:
            self.config["relu_after_add"] = True
        self.stem = cbr(in_channels, stem_width, 3, stride=2)
        self.down4 = sep(stem_width, w1, stride=2)
        self.down8 = sep(w1, w2, stride=2)
        self.context = nn.Sequential(*[Residual(sep(w2, w2, dilation=d), relu_after_add) for d in dilations])
        # Image pooling (BiSeNet's context tail): one vector for the whole face, added to every stride-8
        # position, so that "plain studio wall or cluttered room" is known everywhere at almost no cost.
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(w2, w2, 1)) if global_context else None
        self.lat4 = nn.Conv2d(w2, w1, 1, bias=False)
        self.fuse4 = sep(w1, w1)
        if head_stride == 2:
            self.lat2 = nn.Conv2d(w1, stem_width, 1, bias=False)
            self.fuse2 = sep(stem_width, stem_width)
        self.classifier = nn.Conv2d(stem_width if head_stride == 2 else w1, num_classes, 1)
        self.project = nn.Conv2d(w2, feat_dim, 1)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        s2 = self.stem(x)
        s4 = self.down4(s2)
        ctx = self.context(self.down8(s4))
        if self.pool is not None:
            ctx = ctx + self.pool(ctx)  # broadcast over H, W
        d4 = self.fuse4(F.interpolate(self.lat4(ctx), size=s4.shape[-2:], mode="bilinear", align_corners=False) + s4)
        if self.head_stride == 2:
            d4 = self.fuse2(F.interpolate(self.lat2(d4), size=s2.shape[-2:], mode="bilinear", align_corners=False) + s2)
        logits = resize_logits(self.classifier(d4), x.shape[-2:])
        if return_features:
            return logits, self.project(ctx)
        return logits


@register_model("student")
def build_student(num_classes: int, in_channels: int = 3, **kw) -> nn.Module:
    return Student(num_classes, in_channels, **kw)


@register_model("student-tiny")
def build_student_tiny(num_classes: int, in_channels: int = 3, **kw) -> nn.Module:
    kw.setdefault("widths", (8, 16, 32))
    return Student(num_classes, in_channels, **kw)
