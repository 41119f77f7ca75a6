import numpy as np
import pytest

from facepipe.util.geometry import (
    apply,
    crop_mask_in_photo,
    fit_similarity,
    five_from,
    inside_or_none,
    inside_photo,
    letterbox_matrix,
    template,
    warp_image,
    warp_labels,
    warp_to_photo,
)
from facepipe.util.heatmap import draw_heatmap


def test_template_eye_distance_and_symmetry():
    t = template(256, iod=0.25)
    assert np.linalg.norm(t[1] - t[0]) == pytest.approx(64, rel=1e-6)
    assert (t[0, 0] + t[1, 0]) / 2 == pytest.approx(128, abs=1.0)  # eyes centred left-right


def test_similarity_recovers_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    a, s, tx, ty = 0.3, 1.7, 12.0, -5.0
    m = np.array([[s * np.cos(a), -s * np.sin(a), tx], [s * np.sin(a), s * np.cos(a), ty], [0, 0, 1]])
    dst = apply(m, src)
    np.testing.assert_allclose(fit_similarity(src, dst), m, atol=1e-9)


def test_degenerate_landmarks_raise():
    with pytest.raises(ValueError):
        fit_similarity(np.zeros((5, 2)), template(64))


def test_five_from_68_and_106():
    p68 = np.arange(136, dtype=float).reshape(68, 2)
    f = five_from(p68)
    np.testing.assert_allclose(f[0], p68[36:42].mean(0))
    np.testing.assert_allclose(f[4], p68[54])
    assert five_from(np.zeros((106, 2))).shape == (5, 2)
    with pytest.raises(ValueError):
        five_from(np.zeros((7, 2)))


def test_label_round_trip_through_crop_and_back():
    # A labelled "photo": blocks of ids; align with a mild similarity, warp back, compare inside the crop.
    h, w = 90, 120
    ids = np.zeros((h, w), np.uint8)
    ids[20:70, 30:90] = 2
    ids[35:50, 45:60] = 3
    src = np.array([[45, 40], [75, 40], [60, 55], [48, 65], [72, 65]], float)
    m = fit_similarity(src, template(128))
    crop = warp_labels(ids, m, 128)
    back = warp_to_photo(crop, m, (h, w), order=0, fill=0)
    inside = crop_mask_in_photo(m, 128, (h, w))
    # Nearest-neighbour both ways at upscale ~1.8x: agreement everywhere except 1-px boundary slivers.
    agree = (back == ids)[inside].mean()
    assert agree > 0.97
    assert set(np.unique(crop)) <= {0, 2, 3, 255}


def test_letterbox_keeps_whole_photo():
    m = letterbox_matrix(100, 50, 64)
    corners = apply(m, np.array([[0, 0], [50, 100]], float))
    assert corners[0, 1] == pytest.approx(0) and corners[1, 1] == pytest.approx(64)
    assert corners[0, 0] == pytest.approx(16) and corners[1, 0] == pytest.approx(48)


def test_warp_image_bilinear_constant_stays_constant():
    img = np.full((40, 40, 3), 77, np.uint8)
    out = warp_image(img, letterbox_matrix(40, 40, 80), 80)
    assert (out[5:75, 5:75] == 77).all()


def test_heatmap_peaks_at_landmarks_and_scales():
    pts = np.array([[10.0, 12.0], [40.0, 50.0]])
    hm = draw_heatmap(pts, 64)
    assert hm.max() == 255 and hm.dtype == np.uint8
    assert hm[12, 10] > 200 and hm[50, 40] > 200
    assert hm[30, 30] < 5 and hm[0, 63] == 0
    assert (draw_heatmap(None, 32) == 0).all()
    big = draw_heatmap(pts * 4, 256)
    assert (big > 128).sum() > (hm > 128).sum() * 8  # blobs grow with s (about x16 area)


@pytest.mark.parametrize("angle, scale, shift", [(0.0, 0.73, (32.4, 77.6)), (0.3, 1.4, (-60.0, 10.0)),
                                                 (-0.2, 0.5, (100.0, -20.0))])
def test_inside_photo_is_where_the_warp_samples_the_photo_alone(angle, scale, shift):
    """The crop pixels inside_photo keeps are those an all-white photo warps to pure white, and the ones it
    drops are black or mixed with the black fill."""
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    m = np.array([[c, -s, shift[0]], [s, c, shift[1]], [0, 0, 1.0]])
    white = warp_image(np.full((150, 200, 3), 255, np.uint8), m, 128)[..., 0]
    inside = inside_photo(m, 128, (150, 200))
    assert inside.any() and (~inside).any()
    assert (white[inside] == 255).all() and (white[~inside] < 255).mean() > 0.95


def test_inside_or_none_skips_the_grid_for_a_crop_wholly_inside_the_photo():
    m = np.array([[0.5, 0.0, -10.0], [0.0, 0.5, -5.0], [0, 0, 1.0]])  # a 64 px crop of a 200 x 150 photo's middle
    assert inside_or_none(m, 64, (150, 200)) is None
    edge = m.copy()
    edge[0, 2] = 20.0  # moved right: its left strip lies beyond the photo's left edge
    mask = inside_or_none(edge, 64, (150, 200))
    assert mask is not None and (mask == inside_photo(edge, 64, (150, 200))).all() and not mask[:, 0].any()
