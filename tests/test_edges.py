"""Background, hair and skin moved onto the crop's own edges (infer.edges): a guided filter of their
probabilities, their sum kept at every pixel, other classes untouched. Crops are drawn here (FASSEG's
ids: 0 background, 1 hair, 2 skin, 3 eyes)."""
import numpy as np

from facepipe.infer.edges import coarse_head, guided_filter, head_stride, snap_to_edges
from facepipe.models import create_model
from facepipe.models.fold import fold_batchnorm
from facepipe.models.gray_route import GrayRoute

S = 64
BG, HAIR, SKIN, EYES = 0, 1, 2, 3
BROWN, PINK = (60, 40, 30), (210, 150, 130)


def _hair_over_skin(rng, edge=32, drawn=33):
    """Hair above row `edge` in the photo; the network's hair/skin boundary is a soft ramp centred on row
    `drawn` (too low by a row or more, as a stride-4 answer resized bilinearly can be)."""
    rgb = np.zeros((S, S, 3), np.uint8)
    rgb[:edge], rgb[edge:] = BROWN, PINK
    rgb = np.clip(rgb + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.uint8)
    rows = np.arange(S, dtype=np.float32)[:, None]
    hair = np.broadcast_to(1 / (1 + np.exp((rows - drawn) / 2.0)), (S, S))
    p = np.full((6, S, S), 0.002, np.float32)
    p[HAIR], p[SKIN] = 0.95 * hair, 0.95 * (1 - hair)
    p[EYES, 50:54, 20:28] = 0.97
    return rgb, p / p.sum(0, keepdims=True)


def test_a_boundary_drawn_off_the_photo_s_edge_moves_onto_it():
    rgb, p = _hair_over_skin(np.random.default_rng(0))
    labels = p.argmax(0)
    assert (labels[32:34] == HAIR).all()  # the network's answer: two rows of skin called hair
    before = p.copy()
    changed = snap_to_edges(p, rgb, [BG, HAIR, SKIN], labels)
    assert np.array_equal(labels, p.argmax(0))  # kept up to date
    assert (labels[:32] == HAIR).all() and (labels[32:50] == SKIN).all()
    assert changed == 2 * S
    np.testing.assert_allclose(p[[BG, HAIR, SKIN]].sum(0), before[[BG, HAIR, SKIN]].sum(0), atol=1e-5)
    assert np.array_equal(p[EYES:], before[EYES:])  # eyes, nose, mouth as the network gave them
    assert (labels[50:54, 20:28] == EYES).all()


def test_a_flat_photo_leaves_a_constant_answer_constant():
    rgb = np.full((S, S, 3), 128, np.uint8)
    p = np.full((2, S, S), 0.25, np.float32)
    np.testing.assert_allclose(guided_filter(p, rgb), 0.25, atol=1e-5)


def test_a_gray_crop_gives_finite_probabilities_that_still_follow_its_edge():
    rgb, p = _hair_over_skin(np.random.default_rng(1))
    gray = np.repeat((rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114]))[..., None], 3, -1).astype(np.uint8)
    labels = p.argmax(0)
    snap_to_edges(p, gray, [BG, HAIR, SKIN], labels)
    assert np.isfinite(p).all() and (p >= 0).all()
    assert (labels[:32] == HAIR).all() and (labels[32:50] == SKIN).all()


def test_a_boundary_far_off_the_edge_moves_toward_it_but_not_past_it():
    """The filter is a smoothing that respects edges, not a snap: a boundary 4 rows off (a whole stride)
    comes closer; no pixel on the other side of the photo's edge changes."""
    rgb, p = _hair_over_skin(np.random.default_rng(3), drawn=36)
    labels = p.argmax(0)
    wrong = (labels[32:] == HAIR).sum()
    snap_to_edges(p, rgb, [BG, HAIR, SKIN], labels)
    assert (labels[32:] == HAIR).sum() < wrong and (labels[:32] == HAIR).all()


def test_fewer_than_two_classes_is_nothing_to_do():
    rgb, p = _hair_over_skin(np.random.default_rng(2))
    before = p.copy()
    assert snap_to_edges(p, rgb, [HAIR], p.argmax(0)) == 0
    assert np.array_equal(p, before)


def test_the_filter_runs_for_coarse_heads_only():
    """Students classify at stride 4 (both branches of a two-branch model too); the teacher at 2, or at
    full resolution with its refine stage; an architecture that does not say is left alone. Folding
    BatchNorm keeps the answer."""
    student = create_model("student", num_classes=6, in_channels=4)
    assert head_stride(student) == 4 and coarse_head(student) and coarse_head(fold_batchnorm(student))
    assert head_stride(GrayRoute(student, create_model("student", num_classes=6, in_channels=4))) == 4
    assert head_stride(create_model("student", num_classes=6, in_channels=4, head_stride=2)) == 2
    teacher = create_model("teacher", num_classes=6, in_channels=4)
    assert head_stride(teacher) == 2 and not coarse_head(teacher)
    assert head_stride(create_model("teacher", num_classes=6, in_channels=4, refine=8)) == 1
    assert head_stride(create_model("bisenet-r18", num_classes=6, in_channels=3)) is None
