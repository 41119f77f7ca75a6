"""Skin below the face's crop (infer.neck): the neck, followed by the face's own skin colour.

Scenes are drawn here in the zoomed-out crop's coordinates, and the first crop is cut from them the way
parse cuts it (the same centre, ZOOM times narrower), so the two crops agree as they do on a photo.
FASSEG's ids: 0 background, 1 hair, 2 skin.
"""
import numpy as np

from facepipe.infer.beyond_crop import ZOOM, _inner_box, outer_matrix, paint_beyond
import facepipe.infer.neck as neck_module
from facepipe.infer.neck import applies, bottom_skin, neck_below, neck_in_crop

CLASSES = ("background", "hair", "skin", "eyes", "nose", "mouth")
BG, HAIR, SKIN, S = 0, 1, 2, 96
COLOURS = {BG: (90, 110, 150), HAIR: (40, 25, 15), SKIN: (205, 150, 120)}
LO, HI = _inner_box(S, ZOOM)
C = (S - 1) / 2


def scene(neck=True, below=None):
    """Class ids over the zoomed-out crop: a face (an ellipse inside the first crop, hair on top), a neck
    under it down to the crop's bottom, backdrop elsewhere; `below`: a class for rows 88 on, past a collar
    band (rows 84-87) of backdrop, when given (the first crop ends at row 79)."""
    y, x = np.mgrid[:S, :S].astype(float)
    ids = np.full((S, S), BG, np.uint8)
    face = ((x - C) / 20) ** 2 + ((y - 40) / 30) ** 2 <= 1
    ids[face] = SKIN
    ids[face & (y < 22)] = HAIR
    if neck:
        ids[(y >= 50) & (abs(x - C) <= 9)] = SKIN
    if below is not None:
        ids[84:88] = BG
        ids[88:] = below
    return ids


def photo(ids, seed=0):
    rgb = np.zeros(ids.shape + (3,), np.float32)
    for c, col in COLOURS.items():
        rgb[ids == c] = col
    rgb += np.random.default_rng(seed).normal(0, 4, rgb.shape)  # colour needs a spread to fit
    return np.clip(rgb, 0, 255).astype(np.uint8)


def first_crop(outer):
    """The first crop as parse cuts it: outer-crop pixel = C + (first-crop pixel - C) / ZOOM, nearest."""
    idx = np.clip(np.floor(C + (np.arange(S) - C) / ZOOM + 0.5), 0, S - 1).astype(int)
    return outer[np.ix_(idx, idx)]


def one_hot(ids, sure=0.98):
    p = np.full((len(CLASSES),) + ids.shape, (1 - sure) / (len(CLASSES) - 1), np.float32)
    for c in range(len(CLASSES)):
        p[c][ids == c] = sure
    return p


def run(ids, labels=None):
    outer_rgb = photo(ids)
    labels = first_crop(ids) if labels is None else labels
    return neck_below(one_hot(labels), labels, first_crop(outer_rgb), outer_rgb, CLASSES)


def test_the_neck_below_the_crop_is_skin_and_nothing_else_is():
    ids = scene()
    mask = run(ids)
    assert mask is not None
    below = mask[HI:]
    neck = ids[HI:] == SKIN
    assert below[neck].mean() > 0.9  # the neck under the crop, down to the zoomed-out crop's edge
    assert not below[~neck].any()  # not the backdrop beside it
    assert not mask[:HI - 1].any()  # nothing inside the first crop but its last row, the seed


def test_a_skin_coloured_thing_past_a_collar_is_not_the_neck():
    ids = scene(below=SKIN)  # a hand, another face: skin colour, cut off from the neck by a collar band
    mask = run(ids)
    assert HI == 80 and mask is not None and mask[HI:84].any() and not mask[88:].any()


def test_nothing_without_skin_at_the_crops_bottom_edge():
    ids = scene(neck=False)
    assert bottom_skin(first_crop(ids), SKIN) is None and run(ids) is None
    # Skin on the bottom row that is not the face's own (a speck apart from the main skin) is no seed.
    labels = first_crop(scene(neck=False))
    labels[-3:, 5:8] = SKIN
    assert bottom_skin(labels, SKIN) is None


def test_too_few_sure_pixels_of_the_other_classes_say_nothing():
    ids = scene()
    labels = first_crop(ids)
    labels[labels == BG] = SKIN  # no backdrop to compare with: colour cannot decide
    labels[labels == HAIR] = SKIN
    assert neck_below(one_hot(labels), labels, first_crop(photo(ids)), photo(ids), CLASSES) is None


def test_only_schemas_with_skin_and_without_a_neck_class():
    assert applies(CLASSES)
    assert not applies(("background", "skin", "neck", "hair"))  # CelebAMask-HQ labels necks apart
    assert not applies(("background", "face", "hair"))


def test_skin_is_painted_over_background_only():
    m = np.array([[1, 0, -18], [0, 1, -18], [0, 0, 1]], float)
    om = outer_matrix(m, 64, 1.5)
    labels = np.zeros((100, 100), np.uint8)
    labels[90:, :50] = HAIR  # long hair painted there already
    n = paint_beyond(labels, [np.ones((64, 64), bool)], [om], [m], 64, SKIN, over=BG)
    assert (labels[92:96, :50] == HAIR).all() and labels[92, 60] == SKIN
    assert n == int((labels == SKIN).sum())


def landmarks(chin_y=70.0, jaw=(28.0, 68.0)):
    """68 points with only what neck_in_crop reads set apart: the jaw's ends (4, 12) and the chin (8)."""
    pts = np.tile([[C, 40.0]], (68, 1))
    pts[4:13, 0] = np.linspace(jaw[0], jaw[1], 9)
    pts[4:13, 1] = 60.0
    pts[8] = (C, chin_y)
    return pts


def test_the_neck_the_network_missed_below_the_chin_becomes_skin():
    ids = scene()  # drawn as the crop itself here: face down to row 70, neck below, backdrop around
    rgb = photo(ids)
    labels = ids.copy()
    missed = (ids == SKIN) & (np.arange(S)[:, None] > 72)  # the network called the lower neck background
    labels[missed] = BG
    probs = one_hot(labels)
    n = neck_in_crop(probs, labels, rgb, landmarks(), CLASSES)
    assert n == int((labels[missed] == SKIN).sum()) > 0
    assert (labels[missed] == SKIN).mean() > 0.9  # most of the neck is back
    assert not ((labels == SKIN) & (ids == BG)).any()  # not the backdrop beside it
    assert (probs.argmax(0) == labels).all()  # scores and labels agree
    np.testing.assert_allclose(probs.sum(0), 1, rtol=1e-6)


def test_neck_in_crop_needs_landmarks_and_stays_below_the_chin_between_the_jaws_ends():
    ids = scene()
    rgb = photo(ids)
    labels = ids.copy()
    labels[(ids == SKIN) & (np.arange(S)[:, None] > 72)] = BG
    before = labels.copy()
    assert neck_in_crop(one_hot(labels), labels, rgb, None, CLASSES) == 0 and (labels == before).all()
    assert neck_in_crop(one_hot(labels), labels, rgb, landmarks()[:5], CLASSES) == 0  # 5 points: not trusted
    assert neck_in_crop(one_hot(labels), labels, rgb, landmarks(chin_y=S + 5.0), CLASSES) == 0  # chin below it
    # Only between the jaw's ends (the chin, point 8, lies between them): a narrow jaw, a narrow strip.
    n = neck_in_crop(one_hot(labels), labels, rgb, landmarks(jaw=(44.0, 51.0)), CLASSES)
    added = np.argwhere(labels != before)
    assert n == len(added) > 0 and added[:, 1].min() >= 44 and added[:, 1].max() <= 51 and added[:, 0].min() >= 70


def gray(rgb):
    """The same pixels in black and white (luma in all three channels)."""
    y = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(np.clip(y + 0.5, 0, 255).astype(np.uint8)[..., None], 3, 2)


def shirt_scene():
    """The scene's photo with a lit face (skin brightness spread as in a photo: rows lit from 0.75 to 1.15),
    a shadowed neck (0.85) and a light shirt collar on both sides of it from row 84 (labelled backdrop)."""
    ids = scene()
    rgb = photo(ids).astype(np.float32)
    y = np.arange(S, dtype=np.float32)[:, None, None]
    rgb = np.where((ids == SKIN)[..., None], rgb * (0.75 + 0.4 * np.clip((70 - y) / 60, 0, 1)), rgb)
    neck = (ids == SKIN) & (y[..., 0] >= 75)
    rgb[neck] = np.array(COLOURS[SKIN], np.float32) * 0.85
    shirt = np.zeros((S, S), bool)
    shirt[84:, int(C) - 16:int(C) + 17] = True
    shirt &= ids == BG
    rgb[shirt] = 195  # a light grey shirt: within 4 standard deviations of the skin in luma, far above its mean
    return ids, np.clip(rgb, 0, 255).astype(np.uint8), neck, shirt


def test_in_a_colourless_crop_the_neck_is_no_brighter_than_the_face(monkeypatch):
    """In a black-and-white photo brightness is all the test reads, and a white collar beside the neck
    passed it (the gray copies of the example photos had shirts painted skin in boxes below the chin). In
    a colourless crop a skin-like pixel must be no brighter than the skin's mean luma plus GRAY_CAP of its
    standard deviations: the shadowed neck is still followed below the crop and in it, the collar is not."""
    ids, rgb, neck, shirt = shirt_scene()
    g = gray(rgb)
    labels = first_crop(ids)
    mask = neck_below(one_hot(labels), labels, first_crop(g), g, CLASSES)
    below = np.zeros((S, S), bool)
    below[HI:] = True
    assert mask is not None and mask[neck & below].mean() > 0.8 and not mask[shirt].any()
    monkeypatch.setattr(neck_module, "GRAY_CAP", np.inf)  # without the cap the collar is taken
    uncapped = neck_below(one_hot(labels), labels, first_crop(g), g, CLASSES)
    assert uncapped[shirt].sum() > 20
    monkeypatch.undo()
    # In colour the collar's lack of chroma keeps it out without any cap.
    colour = neck_below(one_hot(labels), labels, first_crop(rgb), rgb, CLASSES)
    assert colour[neck & below].mean() > 0.8 and not colour[shirt].any()
    # In the crop too: the neck the network missed comes back in gray, the collar does not.
    missed = neck & (np.arange(S)[:, None] > 72)
    crop_ids = ids.copy()
    crop_ids[missed] = BG
    lab = crop_ids.copy()
    assert neck_in_crop(one_hot(lab), lab, g, landmarks(), CLASSES) > 0
    assert (lab[missed] == SKIN).mean() > 0.8 and not (lab[shirt] == SKIN).any()
