"""BiSeNet (Yu et al., ECCV 2018) laid out as face-parsing.PyTorch and facexlib use it for faces.

As there, the "spatial path" is the ResNet-18 stride-8 feature rather than a separate shallow branch,
and two auxiliary heads supervise the context path. Global pooling lives in nn.AdaptiveAvgPool2d
modules (not F.avg_pool2d) so that facepipe.analysis.receptive_field can find the image-wide branches.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facepipe.models.layers import resize_logits
from facepipe.models.registry import register_model
from facepipe.models.teacher import conv_bn_relu

# One call in a traced graph (models.fold): it picks its way of computing from the map's shape at run time.
torch.fx.wrap("resize_logits")


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out + skip)


class ResNet18(nn.Module):
    """Backbone only; returns the stride 8, 16 and 32 features."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))

    def forward(self, x: torch.Tensor):
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        f8 = self.layer2(x)
        f16 = self.layer3(f8)
        return f8, f16, self.layer4(f16)


class AttentionRefinement(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = conv_bn_relu(cin, cout)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.atten = nn.Sequential(nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * self.atten(self.pool(feat))


class FeatureFusion(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.convblk = conv_bn_relu(cin, cout, k=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.atten = nn.Sequential(nn.Conv2d(cout, cout // 4, 1, bias=False), nn.ReLU(inplace=True),
                                   nn.Conv2d(cout // 4, cout, 1, bias=False), nn.Sigmoid())

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        return feat + feat * self.atten(self.pool(feat))


class Head(nn.Module):
    def __init__(self, cin: int, mid: int, num_classes: int):
        super().__init__()
        self.conv = conv_bn_relu(cin, mid)
        self.conv_out = nn.Conv2d(mid, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


def _resize(x: torch.Tensor, like: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "nearest":
        return F.interpolate(x, size=like.shape[-2:], mode="nearest")
    return resize_logits(x, like.shape[-2:], align_corners=True)  # only class logits are resized bilinearly


class BiSeNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, feat_dim: int | None = None):
        super().__init__()
        feat_dim = num_classes if feat_dim is None else feat_dim
        if feat_dim < num_classes:
            raise ValueError(f"feat_dim {feat_dim} < num_classes {num_classes}: the sc loss needs a class axis each")
        self.config = dict(num_classes=num_classes, in_channels=in_channels, feat_dim=feat_dim)
        self.resnet = ResNet18(in_channels)
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_avg = conv_bn_relu(512, 128, k=1)
        self.conv_head32 = conv_bn_relu(128, 128)
        self.conv_head16 = conv_bn_relu(128, 128)
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = Head(256, 256, num_classes)
        self.conv_out16 = Head(128, 64, num_classes)
        self.conv_out32 = Head(128, 64, num_classes)
        self.project = nn.Conv2d(256, feat_dim, 1)

    def forward(self, x: torch.Tensor, return_features: bool = False, return_aux: bool = False):
        """Logits at input size; optionally the fused stride-8 features and the two auxiliary logits."""
        f8, f16, f32 = self.resnet(x)
        ctx32 = self.arm32(f32) + self.conv_avg(self.global_pool(f32))  # broadcast over H, W
        up16 = self.conv_head32(_resize(ctx32, f16, "nearest"))
        up8 = self.conv_head16(_resize(self.arm16(f16) + up16, f8, "nearest"))
        fused = self.ffm(f8, up8)
        out = (_resize(self.conv_out(fused), x, "bilinear"),)
        if return_features:
            out += (self.project(fused),)
        if return_aux:
            out += ([_resize(head(f), x, "bilinear") for head, f in ((self.conv_out16, up8), (self.conv_out32, up16))],)
        return out[0] if len(out) == 1 else out


@register_model("bisenet-r18")
def build_bisenet_r18(num_classes: int, in_channels: int = 3, **kw) -> nn.Module:
    return BiSeNet(num_classes, in_channels, **kw)
