"""label_warp: the cell-by-cell warp back gives the labels of interpolating every class everywhere."""
import pickle

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from facepipe.infer.label_warp import FaceScores, labels_in_photo, pack_scores, union_box
from facepipe.util.geometry import footprint, shifted
from facepipe.util.geometry import warp_to_photo


def reference(probs, matrices, size, shape):
    """What parse did before label_warp: every class interpolated over each face's footprint (skimage),
    argmax, overlaps to the face with the higher 1 - background score."""
    h, w = shape
    labels = np.zeros((h, w), np.uint8)
    best = np.zeros((h, w), np.float32)
    for k, m in enumerate(matrices):
        y0, y1, x0, x1 = footprint(m, size, (h, w))
        if y1 <= y0 or x1 <= x0:
            continue
        pr = warp_to_photo(np.transpose(probs[k], (1, 2, 0)).copy(), shifted(m, x0, y0), (y1 - y0, x1 - x0),
                           order=1, fill=0.0)
        fg = 1.0 - pr[..., 0] - (pr.sum(-1) < 1e-6)
        if len(matrices) == 1:
            win = fg > 0
        else:
            b = best[y0:y1, x0:x1]
            win = fg > b
            b[win] = fg[win]
        labels[y0:y1, x0:x1][win] = pr.argmax(-1)[win]
    return labels


def smooth_scores(rng, faces, classes=11, size=64, sigma=4):
    logits = gaussian_filter(rng.normal(size=(faces, classes, size, size)), (0, 0, sigma, sigma)) * 10 * sigma
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def matrix(rng, scale, centre, size=64):
    """Photo -> crop: rotate by a random angle, scale, put the photo point `centre` at the crop's centre."""
    a = rng.uniform(-0.6, 0.6)
    c, s = scale * np.cos(a), scale * np.sin(a)
    m = np.array([[c, -s, 0.0], [s, c, 0.0], [0, 0, 1]])
    m[:2, 2] = size / 2 - m[:2, :2] @ np.asarray(centre, float)
    return m


@pytest.mark.parametrize("seed,scale,faces", [(0, 0.2, 1), (1, 0.9, 1), (2, 2.5, 1), (3, 0.3, 3), (4, 0.25, 2)])
def test_same_labels_as_interpolating_every_class(seed, scale, faces):
    rng = np.random.default_rng(seed)
    size, shape = 64, (230, 310)
    probs = smooth_scores(rng, faces, size=size)
    # faces near the corners too, so footprints are clipped by the photo's edges
    mats = [matrix(rng, scale, (rng.uniform(0, shape[1]), rng.uniform(0, shape[0])), size) for _ in range(faces)]
    want = reference(probs, mats, size, shape)
    got = labels_in_photo(pack_scores(probs, faces), mats, size, shape)
    assert (want > 0).sum() > 500  # the faces landed in the photo
    assert (got != want).sum() <= 2  # float ties at most
    y0, y1, x0, x1 = union_box(mats, size, shape)  # parse counts and tints only in there
    outside = np.ones(shape, bool)
    outside[y0:y1, x0:x1] = False
    assert not got[outside].any()


def test_pack_keeps_the_boundary_scores_only():
    rng = np.random.default_rng(5)
    probs = smooth_scores(rng, 1, size=64, sigma=10)[0]
    fs = FaceScores(probs)
    assert fs.background is None and FaceScores(probs, keep_background=True).background.shape == (64, 64)
    assert len(fs.index) < 0.5 * 64 * 64  # smooth regions: most cells agree
    d = fs.dense().reshape(-1, probs.shape[0])
    assert np.array_equal(d[fs.index], probs.reshape(probs.shape[0], -1)[:, fs.index].T)
    sent = pickle.dumps(fs)  # to the writing worker: the packed scores, not the dense copy made above
    assert len(sent) < len(pickle.dumps(probs)) / 2 and np.array_equal(pickle.loads(sent).dense(), fs.dense())
    ring = np.zeros((64, 64), bool)
    ring[[0, -1], :] = ring[:, [0, -1]] = True  # the crop's edge is always interpolated (zeros outside)
    assert set(np.flatnonzero(ring)) <= set(fs.index.tolist())


def test_one_class_face_needs_no_scores_inside():
    probs = np.zeros((3, 32, 32), np.float32)
    probs[2] = 1.0
    fs = FaceScores(probs)
    assert len(fs.index) == 4 * 32 - 4  # the edge ring only
    m = np.diag([0.5, 0.5, 1.0])  # the crop seen at 2x in the photo
    got = labels_in_photo([fs], [m], 32, (80, 80))
    assert (got[2:60, 2:60] == 2).all() and (got[66:] == 0).all()


def test_a_face_does_not_cover_what_lies_outside_its_crop():
    """Face B is turned 45 degrees, so the corners of its footprint's box lie outside its crop: face A's
    labels stay there."""
    size = 32
    a = np.zeros((1, 3, size, size), np.float32)
    a[0, 0], a[0, 1] = 0.4, 0.6  # face A: class 1 everywhere, 0.6 sure it is not background
    b = np.zeros((3, size, size), np.float32)
    b[2] = 1.0  # face B: class 2, sure
    probs = np.stack([a[0], b])
    big = np.diag([size / 100, size / 100, 1.0])  # A covers the 100x100 photo
    c = np.cos(np.pi / 4)
    turned = np.array([[c, -c, 0], [c, c, 0], [0, 0, 1.0]])
    turned[:2, 2] = size / 2 - turned[:2, :2] @ np.array([50.0, 50.0])
    got = labels_in_photo(pack_scores(probs, 2), [big, turned], size, (100, 100))
    assert got[50, 50] == 2
    y0, y1, x0, x1 = footprint(turned, size, (100, 100))
    assert got[y0 + 1, x0 + 1] == 1 and got[y1 - 2, x1 - 2] == 1  # box corners: outside B's crop
    assert np.array_equal(got, reference(probs, [big, turned], size, (100, 100)))
