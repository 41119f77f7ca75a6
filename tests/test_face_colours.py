"""Each face's own colours (infer.face_colours): where the network hesitates between background, hair and
skin, the colours of the pixels it is sure of decide; sure pixels and other classes stay as they are.

Crops and probabilities are drawn here (FASSEG's ids: 0 background, 1 hair, 2 skin, 5 mouth); parse's
and eval's side is in test_face_rules.py.
"""
import numpy as np

from facepipe.infer.face_colours import FaceColours, drop_unlike_hair, gaussian_log_density, hair_samples, ycc
from facepipe.util.schema import FASSEG, LabelSchema

S = 64
BG, HAIR, SKIN, MOUTH = 0, 1, 2, 5
GREY, PINK = (200, 200, 205), (210, 150, 130)  # light grey hair, light skin: close in brightness


def _face(rng, hesitant=0.55):
    """A crop with grey hair on top and pink skin below, and the network's answer: sure on the top and
    bottom rows, unsure (`hesitant` for the wrong class) on a band where grey hair meets the skin."""
    rgb = np.zeros((S, S, 3), np.uint8)
    rgb[:32] = GREY
    rgb[32:] = PINK
    rgb = np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
    p = np.full((6, S, S), 0.01, np.float32)
    p[HAIR, :24], p[SKIN, :24] = 0.95, 0.01
    p[SKIN, 40:], p[HAIR, 40:] = 0.95, 0.01
    # The band 24..40: the network leans the wrong way on both sides of the true edge at row 32.
    p[SKIN, 24:32], p[HAIR, 24:32] = hesitant, 1 - hesitant - 0.04
    p[HAIR, 32:40], p[SKIN, 32:40] = hesitant, 1 - hesitant - 0.04
    p[MOUTH, 50:54, 28:36] = 0.99  # another class, sure
    return rgb, p / p.sum(0, keepdims=True)


def test_hesitant_pixels_take_the_class_whose_colours_they_have():
    rgb, p = _face(np.random.default_rng(0))
    before = p.argmax(0)
    sums = p[HAIR] + p[SKIN]
    changed = FaceColours(FASSEG).apply(p, rgb)
    after = p.argmax(0)
    assert (after[24:32] == HAIR).all() and (after[32:40, :] == SKIN).all()
    assert changed == int((after != before).sum()) == 16 * S
    assert np.allclose(p[HAIR] + p[SKIN], sums, atol=1e-6)  # only split again, never moved elsewhere
    assert (after[50:54, 28:36] == MOUTH).all()


def test_a_backdrop_the_network_took_for_hair_goes_back_to_background():
    """Clutter above a dark-haired head: where the network leans to hair on pixels of the backdrop's
    colours, the backdrop's own sure pixels win them back; the runner-up there is background, so skin
    has no say."""
    rng = np.random.default_rng(6)
    rgb = np.zeros((S, S, 3), np.uint8)
    rgb[:20] = (60, 120, 60)  # foliage
    rgb[20:36] = (40, 30, 25)  # dark hair
    rgb[36:] = PINK
    rgb = np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
    p = np.full((6, S, S), 0.01, np.float32)
    p[BG, :12], p[HAIR, 12:36], p[SKIN, 36:] = 0.95, 0.95, 0.95
    p[HAIR, 12:20], p[BG, 12:20], p[SKIN, 12:20] = 0.55, 0.36, 0.05  # foliage called hair, unsure
    p /= p.sum(0, keepdims=True)
    changed = FaceColours(FASSEG).apply(p, rgb)
    after = p.argmax(0)
    assert (after[12:20] == BG).all() and (after[20:36] == HAIR).all() and (after[36:] == SKIN).all()
    assert changed == 8 * S


def test_the_fill_beyond_the_photo_is_no_sample_of_the_backdrops_colours():
    """A crop reaching past the photo's edge: its black fill is labelled background, sure. As a sample it
    made the backdrop's colours run from black to its light wall, so dark shadows in the hair that the
    network hesitated on went to background; within the photo the backdrop is light, and they stay hair."""
    rng = np.random.default_rng(2)
    rgb = np.zeros((S, S, 3), np.uint8)
    rgb[:, :16] = 0  # beyond the photo's left edge
    rgb[:, 16:] = (210, 210, 205)  # a light wall
    rgb[16:40, 24:56] = (45, 35, 30)  # dark hair
    rgb[40:, 24:56] = PINK
    rgb[28:34, 30:50] = (12, 10, 10)  # a shadow in the hair, nearly as dark as the fill
    noisy = np.clip(rgb + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.uint8)
    noisy[:, :16] = 0
    p = np.full((6, S, S), 0.01, np.float32)
    p[BG] = 0.95
    p[BG, 16:40, 24:56], p[HAIR, 16:40, 24:56] = 0.01, 0.95
    p[BG, 40:, 24:56], p[SKIN, 40:, 24:56] = 0.01, 0.95
    p[BG, 28:34, 30:50], p[HAIR, 28:34, 30:50] = 0.52, 0.44  # the shadow: the network leans to background
    p /= p.sum(0, keepdims=True)
    inside = np.ones((S, S), bool)
    inside[:, :16] = False
    with_fill, without = p.copy(), p.copy()
    FaceColours(FASSEG, stray_hair=False).apply(with_fill, noisy)
    FaceColours(FASSEG, stray_hair=False).apply(without, noisy, inside=inside)
    assert (with_fill.argmax(0)[28:34, 30:50] == BG).all()  # what the fill as a sample did
    assert (without.argmax(0)[28:34, 30:50] == HAIR).all()
    assert (without.argmax(0)[:, :16] == BG).all()  # the fill itself keeps the network's answer


def test_a_sure_network_is_not_overruled_by_colour():
    """The weight is small (at most 1 nat of log-odds): a 0.9 / 0.06 answer stays, whatever the colour."""
    rgb, p = _face(np.random.default_rng(1), hesitant=0.9)
    before = p.argmax(0)
    assert FaceColours(FASSEG).apply(p, rgb) == 0
    assert np.array_equal(p.argmax(0), before)


def test_too_few_sure_pixels_of_either_class_leaves_the_face_alone():
    rgb, p = _face(np.random.default_rng(2))
    p[HAIR, :24], p[SKIN, :24] = 0.6, 0.35  # no sure hair left
    before = p.copy()
    assert FaceColours(FASSEG).apply(p, rgb) == 0
    assert np.array_equal(p, before)


def test_a_gray_crop_has_no_chroma_and_still_gives_finite_scores():
    rgb, p = _face(np.random.default_rng(3))
    gray = np.repeat((0.299 * rgb[..., :1] + 0.587 * rgb[..., 1:2] + 0.114 * rgb[..., 2:]).astype(np.uint8), 3, -1)
    gray[32:] = np.clip(gray[32:].astype(int) - 40, 0, 255)  # skin a little darker than the hair, as often
    FaceColours(FASSEG).apply(p, gray)
    assert np.isfinite(p).all()
    assert (p.argmax(0)[24:32] == HAIR).all()


def test_the_gaussian_prefers_its_own_samples():
    rng = np.random.default_rng(4)
    a = ycc(np.clip(rng.normal(GREY, 5, (500, 3)), 0, 255).astype(np.uint8))
    b = ycc(np.clip(rng.normal(PINK, 5, (500, 3)), 0, 255).astype(np.uint8))
    assert (gaussian_log_density(a, a) > gaussian_log_density(a, b)).mean() > 0.99


def test_a_schema_with_fewer_than_two_of_background_hair_skin_has_nothing_to_do():
    schema = LabelSchema(name="x", classes=("background", "face"), colors=((0, 0, 0), (255, 255, 255)),
                         overall=("face",))
    rule = FaceColours(schema)
    assert not rule.active
    rgb, p = _face(np.random.default_rng(5))
    assert rule.apply(p[:2], rgb) == 0


GREEN, BROWN = (70, 140, 60), (50, 35, 25)  # a backdrop, dark hair


def _stray(rng):
    """A crop with a green backdrop (top rows and a left strip), dark hair on top of pink skin, and two
    blobs apart from the face that the network is sure are hair: one of the backdrop's green (rows 2-8),
    one a strand of the hair's brown hanging in the left strip (rows 30-60)."""
    rgb = np.zeros((S, S, 3), np.uint8)
    rgb[:] = GREEN
    rgb[12:28, 12:] = BROWN
    rgb[28:, 12:] = PINK
    rgb[30:60, 2:6] = BROWN
    rgb = np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
    p = np.full((6, S, S), 0.01, np.float32)
    p[BG] = 0.95
    p[BG, 12:28, 12:], p[HAIR, 12:28, 12:] = 0.01, 0.95
    p[BG, 28:, 12:], p[SKIN, 28:, 12:] = 0.01, 0.95
    p[BG, 2:8, 20:30], p[HAIR, 2:8, 20:30] = 0.05, 0.93  # the backdrop taken for hair
    p[BG, 30:60, 2:6], p[HAIR, 30:60, 2:6] = 0.05, 0.93  # the strand
    return rgb, p / p.sum(0, keepdims=True)


def test_a_hair_blob_apart_from_the_face_in_the_backdrops_colours_is_not_hair():
    """The network is sure of both blobs; the per-pixel weight alone cannot move them. Judged as a blob,
    the green one looks like the backdrop and goes back to background; the strand has the hair's colours
    and stays, as does the hair on the head."""
    rgb, p = _stray(np.random.default_rng(7))
    changed = FaceColours(FASSEG).apply(p, rgb)
    after = p.argmax(0)
    assert (after[2:8, 20:30] == BG).all()
    assert (after[30:60, 2:6] == HAIR).all() and (after[12:28, 12:] == HAIR).all()
    assert changed == 6 * 10
    rgb, p = _stray(np.random.default_rng(7))
    assert FaceColours(FASSEG, stray_hair=False).apply(p, rgb) == 0  # without the blob step: nothing moves


def test_hair_touching_the_face_is_never_judged_as_a_stray_blob():
    """The same green blob joined to the head's hair by a bridge: attached, so it stays hair."""
    rgb, p = _stray(np.random.default_rng(8))
    p[HAIR, 8:12, 24:26], p[BG, 8:12, 24:26] = 0.93, 0.05
    p /= p.sum(0, keepdims=True)
    FaceColours(FASSEG).apply(p, rgb)
    assert (p.argmax(0)[2:8, 20:30] == HAIR).all()


def test_stray_hair_needs_sure_pixels_of_both_the_backdrop_and_the_hair():
    rgb, p = _stray(np.random.default_rng(9))
    p[BG], p[SKIN] = np.where(p[BG] > 0.5, 0.6, p[BG]), np.where(p[BG] > 0.5, 0.35, p[SKIN])  # no sure backdrop
    before = p.argmax(0)
    FaceColours(FASSEG).apply(p, rgb)
    assert (p.argmax(0)[2:8, 20:30] == HAIR).all() and (before[2:8, 20:30] == HAIR).all()


BLACK, RED, WALL = (20, 20, 22), (150, 50, 30), (70, 70, 75)  # a dress, red hair, a dark gray wall


def test_hair_beyond_the_crop_in_the_backdrops_colours_is_dropped_piece_by_piece():
    """Hair a pass beyond the crop added, in another crop: a piece of the hair's brown (long hair) stays, a
    piece of the backdrop's green goes. Judged by the first crop's sure hair and backdrop, as a stray blob
    is, so the judgement is relative: a black piece (a dark dress) is nearer this dark hair than the
    green backdrop and stays; beside red hair before a dark gray wall it goes."""
    rng = np.random.default_rng(10)
    rgb, p = _stray(rng)
    samples = hair_samples(p, rgb, p.argmax(0), BG, HAIR)
    assert samples is not None
    other = np.zeros((S, S, 3), np.uint8)
    other[:, :20], other[:, 20:40], other[:, 40:] = BROWN, GREEN, BLACK
    other = _noisy(rng, other)
    mask = np.zeros((S, S), bool)
    mask[40:, 2:16] = mask[40:, 24:36] = mask[40:, 44:60] = True
    kept = drop_unlike_hair(mask, other, samples)
    assert kept[40:, 2:16].all() and not kept[:, 20:40].any() and kept[40:, 44:60].all()
    assert drop_unlike_hair(mask, other, None) is mask  # no say without samples
    # Red hair before a dark gray wall: the black piece looks like the wall (no chroma), the red one like hair.
    head = np.zeros((S, S), bool)
    head[12:28, 12:] = True
    red = _noisy(rng, np.where(head[..., None], RED, WALL))
    samples = hair_samples(p, red, p.argmax(0), BG, HAIR)
    other[:, :20] = _noisy(rng, np.broadcast_to(np.array(RED), (S, 20, 3)))
    kept = drop_unlike_hair(mask, other, samples)
    assert kept[40:, 2:16].all() and not kept[:, 40:].any()


def _noisy(rng, colours):
    return np.clip(colours + rng.normal(0, 4, colours.shape), 0, 255).astype(np.uint8)


def test_hair_beyond_the_crop_needs_sure_hair_touching_the_face_and_sure_backdrop():
    rgb, p = _stray(np.random.default_rng(11))
    labels = p.argmax(0)
    assert hair_samples(p, rgb, labels, BG, HAIR) is not None
    unsure = p.copy()
    unsure[HAIR] = np.where(unsure[HAIR] > 0.5, 0.6, unsure[HAIR])  # no sure hair at all
    assert hair_samples(unsure, rgb, labels, BG, HAIR) is None
    apart = labels.copy()
    apart[12:28, 12:] = BG  # the head's hair gone: the blobs left touch no part of the face
    assert hair_samples(p, rgb, apart, BG, HAIR) is None
