"""The landmark prior (infer.landmark_prior): inside the inner lip contour is mouth; a stray second blob of
a part far from its landmarks is not that part; skin far from the face and ringed by background is
background; where the landmarks and the network disagree, nothing.

Probabilities and 68 landmarks are drawn here on a 64 px crop (FASSEG's ids: 0 background, 1 hair,
2 skin, 3 eyes, 4 nose, 5 mouth); one test parses a real smile when ../shared is there, and parse's and
eval's side is in test_face_rules.py.
"""
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facepipe.cli import cli
from facepipe.infer.landmark_prior import LandmarkPrior, hull_distance, polygon_mask
from facepipe.util.schema import CELEBAMASK_HQ, FASSEG, HELEN

S = 64
BG, HAIR, SKIN, EYES, NOSE, MOUTH = range(6)


def _ring(cx, cy, rx, ry, n):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def face_points(dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """68 points in dlib's order on a 64 px crop: jaw, brows, nose, eyes, outer and inner lips."""
    jaw = np.stack([np.linspace(12, 52, 17), 30 + 20 * np.sin(np.linspace(0, np.pi, 17))], 1)
    brows = np.concatenate([np.stack([np.linspace(16, 28, 5), np.full(5, 20.0)], 1),
                            np.stack([np.linspace(36, 48, 5), np.full(5, 20.0)], 1)])
    nose = np.concatenate([np.stack([np.full(4, 32.0), np.linspace(24, 34, 4)], 1),
                           np.stack([np.linspace(28, 36, 5), np.full(5, 36.0)], 1)])
    eyes = np.concatenate([_ring(22, 26, 4, 1.5, 6), _ring(42, 26, 4, 1.5, 6)])
    outer, inner = _ring(32, 44, 9, 4, 12), _ring(32, 44, 6, 2, 8)
    pts = np.concatenate([jaw, brows, nose, eyes, outer, inner])
    assert pts.shape == (68, 2)
    return pts + [dx, dy]


def probs_of(labels: np.ndarray, second: int = SKIN, classes: int = 6) -> np.ndarray:
    """Soft scores whose argmax is `labels`, with `second` the runner-up everywhere."""
    p = np.full((classes,) + labels.shape, 0.02, np.float32)
    p[second] = 0.3
    np.put_along_axis(p, labels[None].astype(np.int64), 0.6, 0)
    return p


def drawn_face(pts: np.ndarray, teeth_as_skin: bool = True) -> np.ndarray:
    """A label map as the network gives a smile: skin, eyes and nose at their points, lips as mouth,
    and the teeth inside the inner lip contour as skin."""
    lab = np.full((S, S), SKIN, np.uint8)
    lab[:10] = HAIR
    lab[polygon_mask(pts[36:42], lab.shape) | polygon_mask(pts[42:48], lab.shape)] = EYES
    lab[33:37, 29:36] = NOSE
    lab[polygon_mask(pts[48:60], lab.shape)] = MOUTH
    if teeth_as_skin:
        lab[polygon_mask(pts[60:68], lab.shape)] = SKIN
    return lab


def test_hull_distance_is_zero_inside_and_euclidean_outside():
    square = np.array([[10, 10], [20, 10], [20, 20], [10, 20]], float)
    yx = np.array([[15, 15], [15, 25], [25, 25], [5, 15]])  # (row, column)
    assert np.allclose(hull_distance(square, yx), [0, 5, np.sqrt(50), 5])
    line = np.array([[0, 0], [10, 0], [20, 0]], float)  # collinear: measured to the segment
    assert np.allclose(hull_distance(line, np.array([[3, 5], [0, 25]])), [3, 5])


def test_teeth_inside_the_inner_lips_become_mouth_and_nothing_else_changes():
    pts = face_points()
    lab = drawn_face(pts)
    inside = polygon_mask(pts[60:68], lab.shape)
    assert inside.sum() > 20 and (lab[inside] == SKIN).all()
    p = probs_of(lab)
    changed = LandmarkPrior(FASSEG).apply(p, pts)
    after = p.argmax(0)
    assert (after[inside] == MOUTH).all()
    assert np.array_equal(after[~inside], lab[~inside])
    assert changed == inside.sum()


def test_the_mouth_rule_waits_for_the_network_to_put_the_mouth_near_the_lip_points():
    """Landmarks fitted wrongly (here 14 px off, as on a turned face fitted as a frontal one): the
    network's mouth is not near them, so the contour is not trusted and nothing changes."""
    pts = face_points()
    lab = drawn_face(pts)
    p = probs_of(lab)
    before = p.copy()
    assert LandmarkPrior(FASSEG).apply(p, face_points(dx=14)) == 0
    assert np.array_equal(p, before)


def test_a_stray_blob_far_from_its_points_takes_the_next_class_while_the_real_part_stays():
    pts = face_points()
    lab = drawn_face(pts, teeth_as_skin=False)
    lab[2:6, 50:56] = NOSE  # a nose on the scalp
    p = probs_of(lab, second=HAIR)
    changed = LandmarkPrior(FASSEG).apply(p, pts)
    after = p.argmax(0)
    assert (after[2:6, 50:56] == HAIR).all()
    assert (after[33:37, 29:36] == NOSE).all()
    assert changed == 24


def test_a_part_found_only_far_from_its_points_is_left_alone():
    """Two nose blobs, both far from the (wrong) nose points: nothing near to trust, nothing removed;
    likewise when the far blob is the larger part of the class."""
    pts = face_points()
    lab = drawn_face(pts, teeth_as_skin=False)
    lab[2:6, 50:56] = NOSE
    p = probs_of(lab, second=HAIR)
    assert LandmarkPrior(FASSEG, inner_mouth=False).apply(p, face_points(dy=-30)) == 0
    lab[40:60, 2:12] = NOSE  # a far blob larger than the nose at its points
    p = probs_of(lab, second=HAIR)
    assert LandmarkPrior(FASSEG, inner_mouth=False).apply(p, pts) == 0


@pytest.mark.parametrize("points", [None, np.zeros((5, 2)), np.full((68, 2), np.nan)])
def test_faces_without_68_finite_landmarks_are_untouched(points):
    p = probs_of(drawn_face(face_points()))
    before = p.copy()
    assert LandmarkPrior(FASSEG).apply(p, points) == 0
    assert np.array_equal(p, before)


def test_helen_lips_keep_their_classes_and_skin_goes_to_the_inner_mouth():
    names = list(HELEN.classes)
    skin, upper, inner = names.index("skin"), names.index("upper_lip"), names.index("inner_mouth")
    pts = face_points()
    inside = polygon_mask(pts[60:68], (S, S))
    lab = np.full((S, S), skin, np.uint8)
    lab[polygon_mask(pts[48:60], (S, S))] = upper
    rows = np.nonzero(inside)[0]
    top = inside & (np.arange(S)[:, None] <= rows.min())  # the inner contour's top row: upper lip
    lab[inside] = skin
    lab[top] = upper
    p = probs_of(lab, classes=len(names))
    LandmarkPrior(HELEN).apply(p, pts)
    after = p.argmax(0)
    assert (after[top] == upper).all()
    assert (after[inside & ~top] == inner).all()


def test_celebamask_eyeglasses_are_not_a_part():
    prior = LandmarkPrior(CELEBAMASK_HQ)
    names = list(CELEBAMASK_HQ.classes)
    assert names.index("eye_g") not in [c for c, _ in prior.parts]
    assert prior.inner == names.index("mouth")


SMILE = (Path(__file__).resolve().parents[2] / "shared" / "data" / "unlabeled" / "dlib-johns"
         / "John_Salley" / "000192_02159531.jpg")


@pytest.mark.shared
@pytest.mark.skipif(not SMILE.exists(), reason=f"real photo not available: {SMILE} is absent")
def test_the_teeth_of_a_real_smile_become_mouth(tmp_path):
    """A broad smile on a dark-skinned face, whose teeth the bundled model calls skin: with the prior,
    the mouth grows and takes the teeth from the skin."""
    for name, extra in (("on", []), ("off", ["--no-landmark-prior"])):
        r = CliRunner().invoke(cli, ["parse", str(SMILE), "--out", str(tmp_path / name), "-q", "--crop-only", *extra])
        assert r.exit_code == 0, r.output
    a, b = (np.asarray(Image.open(tmp_path / d / f"{SMILE.stem}.labels.png")) for d in ("off", "on"))
    changed = a != b
    assert changed.sum() > 50
    assert (b[changed] == MOUTH).all() and (a[changed] == SKIN).mean() > 0.8


def test_skin_far_from_the_face_and_ringed_by_background_becomes_background():
    """On a 96 px crop: a skin blob in a corner of the backdrop (a lamp, a hand) is background; the same
    blob inside the hair (a scalp seen through it), or beside the jaw (an ear), stays skin."""
    pts = face_points(16, 16)
    lab = np.zeros((96, 96), np.uint8)
    lab[polygon_mask(pts[:27][[*range(17), *range(26, 16, -1)]], lab.shape)] = SKIN  # jaw and brows
    lab[polygon_mask(pts[36:42], lab.shape) | polygon_mask(pts[42:48], lab.shape)] = EYES
    lab[polygon_mask(pts[48:60], lab.shape)] = MOUTH
    lab[0:22, 10:86] = HAIR
    lamp, scalp, ear = (slice(84, 90), slice(4, 10)), (slice(4, 10), slice(44, 50)), (slice(48, 54), slice(70, 74))
    for blob in (lamp, scalp, ear):
        lab[blob] = SKIN
    iod = 20.0
    assert hull_distance(pts, np.argwhere(lab[lamp] == SKIN) + [84, 4]).min() > 0.5 * iod  # far from the face
    assert hull_distance(pts, np.argwhere(lab[scalp] == SKIN) + [4, 44]).min() > 0.5 * iod
    assert hull_distance(pts, np.argwhere(lab[ear] == SKIN) + [48, 70]).min() < 0.5 * iod
    p = probs_of(lab, second=HAIR)  # the network's runner-up is hair: the rule still gives background
    changed = LandmarkPrior(FASSEG).apply(p, pts)
    after = p.argmax(0)
    assert (after[lamp] == BG).all() and changed == 36
    assert (after[scalp] == SKIN).all() and (after[ear] == SKIN).all()
    assert np.allclose(p.sum(0)[lamp], probs_of(lab, second=HAIR).sum(0)[lamp])  # probability moved, not lost
    # Off, or a schema without background: nothing.
    q = probs_of(lab, second=HAIR)
    assert LandmarkPrior(FASSEG, skin_islands=False).apply(q, pts) == 0
