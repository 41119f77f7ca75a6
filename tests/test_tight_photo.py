"""Training's `tight` augmentation (learn/tight_photo.py): a crop as parse cuts it from a face-crop photo."""
from dataclasses import replace

import numpy as np
import torch

from facepipe.data.face_cache import MEAN, STD
from facepipe.learn.augment import NONE, augment, recipe_config
from facepipe.learn.tight_photo import face_box, tight_photos
from facepipe.util.schema import FASSEG

PERM = torch.as_tensor(FASSEG.flip_permutation().astype(np.int64))
BG, HAIR, SKIN, EYES = 0, FASSEG.index("hair"), FASSEG.index("skin"), FASSEG.index("eyes")
S = 64


def faces(n=3):
    """A 16 px skin square (rows and columns 24..39) with eyes in it and hair above it, on a wall; RGB in
    [0, 1], all mid grey but the face, so that black can only come from the cut."""
    y = torch.full((n, S, S), BG, dtype=torch.long)
    y[:, 24:40, 24:40] = SKIN
    y[:, 28:30, 27:37] = EYES
    y[:, 14:24, 20:44] = HAIR
    img = torch.full((n, 3, S, S), 0.5)
    img[:, :, 24:40, 24:40] = 0.8
    return img, y


def test_face_box_spans_the_face_s_own_pixels_only():
    _, y = faces(2)
    y[1] = BG  # no face at all: hair and wall only
    y[1, 5:9, 5:9] = HAIR
    y[0, 60:, :] = 255  # ignore is not face
    box = face_box(y, BG, (HAIR,))
    assert box[0].tolist() == [24, 39, 24, 39]
    assert box[1, 1] < box[1, 0]  # empty


def test_a_picked_face_is_cut_to_a_box_black_beyond_it_and_ignored_there():
    img, y = faces(3)
    soft = torch.nn.functional.one_hot(y, FASSEG.num_classes).permute(0, 3, 1, 2).float()
    y[2] = BG  # picked, but without face pixels: stays whole
    # Draws: the smallest box (1.1 x 16 px), square, centred, untilted; faces 0 and 2 picked, face 1 not.
    r = torch.tensor([[0, 0.5, 0.5, 0.5, 0.5, 0.1], [0, 0.5, 0.5, 0.5, 0.5, 0.9], [0, 0.5, 0.5, 0.5, 0.5, 0.1]])
    out, yo, so = tight_photos(img, y, soft, face_box(y, BG, (HAIR,)), r, 0.5)
    # Face 0: the box is 17.6 px around the face's centre (31.5): rows and columns 23..40 inside.
    assert out[0, :, :22].abs().max() == 0 and out[0, :, :, 42:].abs().max() == 0
    assert (yo[0, :22] == 255).all() and (yo[0, :, 42:] == 255).all() and so[0, :, :22].abs().max() == 0
    assert torch.equal(out[0, :, 24:40, 24:40], img[0, :, 24:40, 24:40])
    assert torch.equal(yo[0, 24:40, 24:40], y[0, 24:40, 24:40])  # the face keeps its labels, eyes included
    assert torch.equal(so[0, :, 24:40, 24:40], soft[0, :, 24:40, 24:40])
    # The hair between the face and the fill stays labelled; on the box's edge, part of a pixel stays.
    assert (yo[0, 23, 24:40] == HAIR).all() and (out[0, :, 23, 24:40] - 0.4).abs().max() < 1e-5
    for i in (1, 2):
        assert torch.equal(out[i], img[i]) and torch.equal(yo[i], y[i]) and torch.equal(so[i], soft[i])


def test_the_box_tilts_and_stretches_with_its_draws():
    img, y = faces(2)
    r = torch.tensor([[1.0, 1.0, 0.5, 0.5, 0.5, 0], [1.0, 1.0, 0.5, 0.5, 1.0, 0]])  # widest, flat; then tilted
    out, yo, _ = tight_photos(img, y, None, face_box(y, BG, (HAIR,)), r, 1.0)
    inside = yo != 255
    # 1.8 x 16 px at width / height 1.25: about 32 px wide and 26 px high.
    assert 30 <= int(inside[0, 32].sum()) <= 34 and 24 <= int(inside[0, :, 32].sum()) <= 28
    assert not torch.equal(inside[0], inside[1])  # the tilt moves the corners
    assert int(inside[0].sum()) - int(inside[1].sum()) in range(-30, 31)  # the same area, give or take edges


def test_the_recipe_field_cuts_every_face_at_one_and_none_at_zero():
    assert recipe_config("wild,tight=0.3").tight == 0.3 and recipe_config("wild").tight == 0
    img, y = faces(4)
    x = torch.cat([(img - torch.as_tensor(MEAN / 255).view(1, 3, 1, 1).float())
                   / torch.as_tensor(STD / 255).view(1, 3, 1, 1).float(), torch.zeros(4, 1, S, S)], 1)
    only = replace(NONE, tight=1.0)
    xo, yo = augment(x, y.clone(), PERM, only, torch.Generator().manual_seed(0), ids=(BG, (HAIR,)))
    assert (yo[:, 0, 0] == 255).all() and (yo[:, 24:40, 24:40] == y[:, 24:40, 24:40]).all()
    black = (-torch.as_tensor(MEAN / STD)).float()
    assert torch.allclose(xo[:, :3, 0, 0], black.expand(4, 3), atol=1e-5)
    assert torch.equal(xo[:, 3:], x[:, 3:])  # the heatmap is drawn from the landmarks, photo or not
    x0, y0 = augment(x, y.clone(), PERM, replace(only, tight=0.0), torch.Generator().manual_seed(0), ids=(BG, (HAIR,)))
    assert torch.equal(y0, y) and torch.allclose(x0, x, atol=1e-5)


def test_tight_cuts_labelled_faces_and_tightu_pseudo_labelled_ones():
    img, y = faces(2)
    x = torch.cat([(img - torch.as_tensor(MEAN / 255).view(1, 3, 1, 1).float())
                   / torch.as_tensor(STD / 255).view(1, 3, 1, 1).float(), torch.zeros(2, 1, S, S)], 1)
    soft = torch.nn.functional.one_hot(y, FASSEG.num_classes).permute(0, 3, 1, 2).float()

    def run(field, labelled):
        out = augment(x, y.clone() if labelled else None, PERM, replace(NONE, **{field: 1.0}),
                      torch.Generator().manual_seed(0), soft=soft, ids=(BG, (HAIR,)))
        return out[2]  # the teacher's targets: zero where a cut left the photo

    for field, labelled, cut in (("tight", True, True), ("tight", False, False), ("tightu", False, True),
                                 ("tightu", True, False)):
        so = run(field, labelled)
        assert bool((so[:, :, 0, 0] == 0).all()) == cut, (field, labelled)
        assert torch.equal(so[:, :, 24:40, 24:40], soft[:, :, 24:40, 24:40])
