"""Batch augmentation: flips swap left/right classes, jitter marks what came from outside the crop."""
import numpy as np
import torch
import torch.nn.functional as F

from facepipe.learn.augment import AugmentConfig, augment
from facepipe.util.schema import HELEN

PERM = torch.as_tensor(HELEN.flip_permutation().astype(np.int64))
FLIP_ONLY = AugmentConfig(flip=True, rotate=0, scale=0, shift=0, color=0)
JITTER_ONLY = AugmentConfig(flip=False, rotate=30, scale=0.2, shift=0.1, color=0)
ID = {n: HELEN.index(n) for n in HELEN.classes}


def batch(n=8, h=16, w=16, seed=0):
    """n copies of one image whose left half holds left_* classes and right half right_* classes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, h, w, generator=g).repeat(n, 1, 1, 1)
    y = torch.full((h, w), ID["skin"], dtype=torch.long)
    y[2:4, 1:5], y[2:4, 9:13] = ID["left_brow"], ID["right_brow"]
    y[5:7, 1:5], y[5:7, 9:13] = ID["left_eye"], ID["right_eye"]
    y[9:11, 6:9] = ID["nose"]
    y[13, 3] = 255
    return x, y[None].repeat(n, 1, 1)


def one_hot(y, k=HELEN.num_classes):
    return F.one_hot(y.clamp(max=k - 1), k).permute(0, 3, 1, 2).float() * (y != 255)[:, None]


def test_flip_mirrors_image_and_swaps_left_right_ids():
    x, y = batch()
    xo, yo, so = augment(x, y, PERM, FLIP_ONLY, torch.Generator().manual_seed(1), soft=one_hot(y))
    flipped = [bool(torch.equal(xo[i], x[i].flip(-1))) for i in range(len(x))]
    kept = [bool(torch.equal(xo[i], x[i])) for i in range(len(x))]
    assert all(a != b for a, b in zip(flipped, kept)) and any(flipped) and any(kept)
    for i in range(len(x)):
        if flipped[i]:
            assert torch.equal(yo[i], PERM[y[i].flip(-1)])
            # the left brow at columns 1..4 is mirrored to columns 11..14 and becomes the right brow
            assert (yo[i, 2:4, 11:15] == ID["right_brow"]).all() and (yo[i, 5:7, 3:7] == ID["left_eye"]).all()
            assert yo[i, 13, 12] == 255 and yo[i, 10, 7] == ID["nose"]
        else:
            assert torch.equal(yo[i], y[i])
    # Soft targets follow the same flip with left/right channels swapped: they stay the labels' one-hot.
    assert torch.equal(so, one_hot(yo))


def test_jitter_marks_outside_pixels_ignore_and_zeroes_soft_there():
    x, y = batch(n=4, h=32, w=32)
    y[:] = ID["skin"]  # no ignore pixels of its own: every 255 afterwards came from outside the crop
    soft = one_hot(y)
    xo, yo, so = augment(x, y, PERM, JITTER_ONLY, torch.Generator().manual_seed(0), soft=soft)
    outside = yo == 255
    assert outside.any() and (~outside).any()
    assert set(yo.unique().tolist()) <= {ID["skin"], 255}
    # Bilinear soft targets blend across the one-pixel border; away from it (and from the output's own
    # edge, whose neighbours are unknown) they are exact.
    o = outside[:, None].float()
    deep_out = -F.max_pool2d(-F.pad(o, (2, 2, 2, 2), value=0.0), 5, 1)[:, 0] > 0
    deep_in = F.max_pool2d(F.pad(o, (2, 2, 2, 2), value=1.0), 5, 1)[:, 0] == 0
    assert deep_out.any() and deep_in.any()
    total = so.sum(1)
    assert (total[deep_out] == 0).all()
    assert torch.allclose(total[deep_in], torch.ones(()), atol=1e-5)
    assert (total <= 1 + 1e-5).all()
    # The image is zero-padded outside the crop (after normalisation, zero = the dataset mean).
    assert (xo.permute(0, 2, 3, 1)[deep_out] == 0).all()


def test_seeded_generator_repeats_exactly():
    x, y = batch()
    soft = one_hot(y)
    cfg = AugmentConfig()
    a = augment(x, y, PERM, cfg, torch.Generator().manual_seed(5), soft=soft)
    b = augment(x, y, PERM, cfg, torch.Generator().manual_seed(5), soft=soft)
    c = augment(x, y, PERM, cfg, torch.Generator().manual_seed(6), soft=soft)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_without_labels_only_the_inputs_move():
    x, _ = batch(n=2)
    xo, yo = augment(x, None, PERM, JITTER_ONLY, torch.Generator().manual_seed(0))
    assert xo.shape == x.shape and yo.shape == (2, 16, 16)
    assert set(yo.unique().tolist()) <= {0, 255}
