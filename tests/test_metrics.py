"""One confusion matrix, every metric: checked against numbers worked out by hand."""
import numpy as np
import pytest
import torch

from facepipe.util.metrics import confusion, confusion_torch, f1_of, merge, scores
from facepipe.util.schema import FASSEG, HELEN

# FASSEG ids: background 0, hair 1, skin 2, eyes 3, nose 4, mouth 5; overall = eyes + nose + mouth.
TARGET = np.array([0, 0, 1, 2, 3, 3, 4, 5, 255, 2])
PRED = np.array([0, 1, 1, 2, 4, 3, 3, 5, 3, 0])


def test_confusion_counts_by_hand_and_ignores_255():
    cm = confusion(PRED, TARGET, 6)
    want = np.zeros((6, 6), int)
    for t, p in [(0, 0), (0, 1), (1, 1), (2, 2), (3, 4), (3, 3), (4, 3), (5, 5), (2, 0)]:
        want[t, p] += 1
    assert np.array_equal(cm, want)
    assert cm.sum() == 9  # the 255 pixel (predicted "eyes") counts nowhere, not even as a false positive


def test_per_class_f1_is_2tp_over_2tp_fp_fn():
    s = scores(confusion(PRED, TARGET, 6), FASSEG)
    f1 = s["per_class_f1"]
    # class: (TP, FP, FN) read off the pairs above
    by_hand = {"background": (1, 1, 1), "hair": (1, 1, 0), "skin": (1, 0, 1), "eyes": (1, 1, 1),
               "nose": (0, 1, 1), "mouth": (1, 0, 0)}
    for name, (tp, fp, fn) in by_hand.items():
        assert f1[name] == pytest.approx(2 * tp / (2 * tp + fp + fn)), name


def test_overall_pools_rows_and_columns_so_eyes_nose_confusion_is_correct():
    s = scores(confusion(PRED, TARGET, 6), FASSEG)
    # eyes<->nose swaps are errors per class (nose F1 is 0) but stay inside the pooled set.
    assert s["per_class_f1"]["nose"] == 0.0
    assert s["overall_f1"] == pytest.approx(1.0)
    # One face pixel predicted as skin: pooled TP 3, FN 1 -> 6 / 7.
    s2 = scores(confusion(np.array([4, 3, 2, 5]), np.array([3, 4, 4, 5]), 6), FASSEG)
    assert s2["overall_f1"] == pytest.approx(6 / 7)


def test_merged_group_sums_rows_and_columns():
    L, R, NOSE, SKIN = (HELEN.index(n) for n in ("left_eye", "right_eye", "nose", "skin"))
    target = np.array([L, L, R, R, NOSE, SKIN])
    pred = np.array([R, L, L, SKIN, NOSE, R])
    cm = confusion(pred, target, HELEN.num_classes)
    m = merge(cm, [L, R])
    # [[rest->rest, rest->group], [group->rest, group->group]]
    assert m.tolist() == [[1, 1], [1, 3]]
    s = scores(cm, HELEN)
    assert s["group_f1"]["eyes"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert s["per_class_f1"]["left_eye"] == pytest.approx(2 * 1 / (2 + 1 + 1))  # TP 1, FP 1 (R->L), FN 1
    assert np.isnan(f1_of(np.array([[5, 0], [0, 0]])))  # a class absent from truth and prediction


def test_pixel_acc_and_mean_f1_excludes_background():
    s = scores(confusion(PRED, TARGET, 6), FASSEG)
    assert s["pixel_acc"] == pytest.approx(5 / 9)
    assert s["pixels"] == 9
    fg = [2 / 3, 2 / 3, 1 / 2, 0.0, 1.0]  # hair, skin, eyes, nose, mouth
    assert s["mean_f1"] == pytest.approx(np.mean(fg))
    assert s["mean_f1"] != pytest.approx(np.mean(fg + [0.5]))


def test_confusion_torch_equals_numpy():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 6, (2, 17, 13)).astype(np.uint8)
    t[rng.random(t.shape) < 0.1] = 255
    p = rng.integers(0, 6, t.shape)
    want = confusion(p, t, 6)
    got = confusion_torch(torch.from_numpy(p), torch.from_numpy(t.astype(np.int64)), 6)
    assert np.array_equal(got, want)
    assert want.sum() == (t != 255).sum()
