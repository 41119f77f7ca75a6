"""models.layers: the rearranged layers compute what the plain torch layers compute, and the fast way is
really taken where it is meant to be (else the equality tests would pass on the plain path alone)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facepipe.models import layers
from facepipe.models.gray_route import TONED_RESIDUAL, mean_saturation, toned_residual
from facepipe.models.layers import DilatedDepthwise, resize_logits
from facepipe.util.input_norm import LUMA, MEAN, STD


def _pair(cin, cout, d, groups, bias):
    torch.manual_seed(d * 10 + groups)
    plain = nn.Conv2d(cin, cout, 3, 1, d, dilation=d, groups=groups, bias=bias).eval()
    fast = DilatedDepthwise(cin, cout, 3, 1, d, dilation=d, groups=groups, bias=bias).eval()
    fast.load_state_dict(plain.state_dict())  # same state dict keys: checkpoints load either way
    return plain, fast


def _spy(monkeypatch):
    calls = []
    real = layers.F.conv2d

    def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
        calls.append((x.shape[0], padding, dilation))
        return real(x, w, b, stride, padding, dilation, groups)
    monkeypatch.setattr(layers.F, "conv2d", conv2d)
    return calls


@pytest.mark.parametrize("d", [8, 16])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("groups,bias", [(12, False), (1, True)])
def test_space_to_batch_is_the_dilated_conv(monkeypatch, d, channels_last, groups, bias):
    plain, fast = _pair(12, 12, d, groups, bias)
    x = torch.randn(3, 12, 2 * d, 3 * d)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    calls = _spy(monkeypatch)
    with torch.inference_mode():
        got = fast(x)
    assert calls == [(3 * d * d, 1, 1)]  # undilated, on d*d sub-maps per face
    with torch.inference_mode():
        torch.testing.assert_close(got, plain(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("why,d,hw,train", [("small dilation", 4, (32, 32), False),
                                           ("sides not divisible", 8, (36, 32), False),
                                           ("training", 8, (32, 32), True)])
def test_plain_conv_where_space_to_batch_does_not_apply(monkeypatch, why, d, hw, train):
    plain, fast = _pair(6, 6, d, 6, False)
    fast.train(train)
    x = torch.randn(2, 6, *hw)
    calls = _spy(monkeypatch)
    got = fast(x)
    assert calls == [(2, (d, d), (d, d))], why
    torch.testing.assert_close(got, plain(x))


def test_resize_logits_is_bilinear_interpolation_in_either_layout():
    x = torch.randn(2, 6, 16, 16)
    for align in (False, True):
        want = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=align)
        got = resize_logits(x.contiguous(memory_format=torch.channels_last), (64, 64), align)
        assert got.is_contiguous()
        torch.testing.assert_close(got, want)


def test_mean_saturation_is_hsv_saturation_over_bright_pixels():
    """Against a plain numpy statement of the rule, on crops with values beyond [0, 1] (clamped) and dark
    pixels (left out)."""
    rng = np.random.default_rng(0)
    rgb = rng.uniform(-0.2, 1.2, (3, 3, 64, 64)).astype(np.float32)
    rgb[1, :, :32] *= 0.05  # half of one crop dark
    x = torch.from_numpy((rgb * 255 - MEAN[:, None, None]) / STD[:, None, None])
    c = np.clip(rgb[:, :, ::4, ::4], 0, 1)
    hi, lo = c.max(1), c.min(1)
    bright = hi > 0.1
    sat = np.where(bright, (hi - lo) / np.maximum(hi, 1e-6), 0)
    want = sat.sum((1, 2)) / np.maximum(bright.sum((1, 2)), 1)
    np.testing.assert_allclose(mean_saturation(x).numpy(), want, atol=1e-5)


def test_toned_residual_is_the_within_band_chroma_spread_over_bright_pixels():
    """Against a plain numpy statement of the toned rule (models.gray_route), in both memory layouts."""
    rng = np.random.default_rng(1)
    rgb = rng.uniform(-0.2, 1.2, (3, 3, 64, 64)).astype(np.float32)
    rgb[1, :, :40] *= 0.05  # most of one crop dark
    rgb[2] = rgb[2].mean(0, keepdims=True) * np.array([1.0, 0.8, 0.6], np.float32)[:, None, None]  # toned
    x = torch.from_numpy((rgb * 255 - MEAN[:, None, None]) / STD[:, None, None])
    want = []
    for c in np.clip(rgb[:, :, ::4, ::4], 0, 1).astype(np.float64):
        bright = c.max(0) > 0.1
        y = np.tensordot(np.asarray(LUMA, np.float64), c, 1)[bright]
        chroma = np.stack([c[2][bright] - y, c[0][bright] - y], 1)
        band = np.minimum((y * 16).astype(int), 15)
        within = sum(((chroma[band == k] - chroma[band == k].mean(0)) ** 2).sum() for k in set(band.tolist()))
        want.append(np.sqrt(within / max(bright.sum(), 1)) * 255)
    for fmt in (torch.contiguous_format, torch.channels_last):
        got = toned_residual(x.contiguous(memory_format=fmt)).numpy()
        np.testing.assert_allclose(got, want, atol=2e-3)
    assert want[2] < TONED_RESIDUAL < want[0]  # the toned crop reads as toned, the colour one does not


@pytest.mark.parametrize("s", [2, 3, 4, 8])
def test_upsample_whole_is_bilinear_interpolation(s):
    x = torch.randn(2, 6, 7, 5) * 10
    want = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
    torch.testing.assert_close(layers.upsample_whole(x, s), want, atol=2e-5, rtol=1e-5)


def test_resize_logits_takes_the_whole_factor_path_only_at_inference(monkeypatch):
    """At inference on a CPU a 4x enlargement runs as upsample_whole; with gradients (training), in a
    traced or exported graph, or at a fractional factor it stays F.interpolate."""
    calls = []
    whole = layers.upsample_whole
    monkeypatch.setattr(layers, "upsample_whole", lambda x, s: calls.append(s) or whole(x, s))
    x = torch.randn(1, 6, 16, 16)
    with torch.inference_mode():
        got = resize_logits(x, (64, 64))
        resize_logits(x, (40, 40))
    torch.testing.assert_close(got, F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False))
    resize_logits(x.requires_grad_(), (64, 64))
    assert calls == [4]
    from facepipe.models import create_model
    from facepipe.models.fold import fold_batchnorm

    net = fold_batchnorm(create_model("student-tiny", num_classes=6, in_channels=4))
    assert any(n.target is resize_logits for n in net.graph.nodes)  # one leaf call, decided at run time
    with torch.inference_mode():
        net(torch.randn(1, 4, 64, 64))
    assert calls == [4, 4]
