"""Fully convolutional teacher whose context dilations set the receptive field (method.md section 3).

The encoder stops at stride 8 so that the dilation rates of the context block, not more downsampling,
decide r; the paper picks those rates so that r / s hits the optimal normalized receptive field.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facepipe.models.layers import resize_logits
from facepipe.models.registry import register_model

# One call in a traced graph (models.fold): it picks its way of computing from the map's shape at run time.
torch.fx.wrap("resize_logits")


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    # The bias is redundant in front of BatchNorm.
    pad = dilation * (k - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class Teacher(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32,
                 dilations: tuple[int, ...] = (2, 4, 8, 1), feat_dim: int | None = None, refine: int = 0):
        super().__init__()
        feat_dim = num_classes if feat_dim is None else feat_dim
        if feat_dim < num_classes:
            raise ValueError(f"feat_dim {feat_dim} < num_classes {num_classes}: the sc loss needs a class axis each")
        dilations = tuple(int(d) for d in dilations)
        refine = int(refine)
        if refine < 0:
            raise ValueError(f"refine {refine} < 0: give the refine stage's channels, or 0 for none")
        self.config = dict(num_classes=num_classes, in_channels=in_channels, width=width,
                           dilations=dilations, feat_dim=feat_dim, refine=refine)
        w = width
        self.stem = nn.Sequential(conv_bn_relu(in_channels, w, stride=2), conv_bn_relu(w, w))
        self.down4 = nn.Sequential(conv_bn_relu(w, 2 * w, stride=2), conv_bn_relu(2 * w, 2 * w))
        self.down8 = nn.Sequential(conv_bn_relu(2 * w, 4 * w, stride=2), conv_bn_relu(4 * w, 4 * w))
        self.context = nn.Sequential(*[conv_bn_relu(4 * w, 4 * w, dilation=d) for d in dilations])
        # Skips are added, not concatenated: a concat at stride 2 would double the costliest convs.
        self.lateral4 = nn.Conv2d(4 * w, 2 * w, 1, bias=False)
        self.fuse4 = conv_bn_relu(2 * w, 2 * w)
        self.lateral2 = nn.Conv2d(2 * w, w, 1, bias=False)
        self.fuse2 = conv_bn_relu(w, w)
        # Optional full-resolution stage: stride-2 features upsampled and joined with the input pixels,
        # so part boundaries (eyes are ~20x9 px in a 256 crop) are placed at input resolution.
        self.refine = (nn.Sequential(conv_bn_relu(w + in_channels, refine), conv_bn_relu(refine, refine))
                       if refine else None)
        self.classifier = nn.Conv2d(refine or w, num_classes, 1)
        self.project = nn.Conv2d(4 * w, feat_dim, 1)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        s2 = self.stem(x)
        s4 = self.down4(s2)
        ctx = self.context(self.down8(s4))
        # Channels are reduced before upsampling, where it is 4x cheaper.
        d4 = self.fuse4(_up(self.lateral4(ctx), s4) + s4)
        d2 = self.fuse2(_up(self.lateral2(d4), s2) + s2)
        if self.refine is not None:
            logits = self.classifier(self.refine(torch.cat([_up(d2, x), x], 1)))
        else:
            logits = resize_logits(self.classifier(d2), x.shape[-2:])
        if return_features:
            return logits, self.project(ctx)
        return logits


@register_model("teacher")
def build_teacher(num_classes: int, in_channels: int = 3, **kw) -> nn.Module:
    return Teacher(num_classes, in_channels, **kw)


@register_model("teacher-small")
def build_teacher_small(num_classes: int, in_channels: int = 3, **kw) -> nn.Module:
    kw.setdefault("width", 16)
    return Teacher(num_classes, in_channels, **kw)
