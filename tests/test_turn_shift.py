"""Turned faces: the crop moves toward the back of the head (geometry.turn_shift, AlignSpec.turn_shift)."""
import numpy as np
import pytest

from facepipe.util.align_spec import AlignSpec, align_face
from facepipe.util.geometry import TURN_DEAD_ZONE_IN_IOD, TURN_SHIFT_MAX_IN_IOD, apply, fit_similarity, template, turn_shift

SIZE = 128
T = template(SIZE, 0.22)
IOD = float(np.linalg.norm(T[1] - T[0]))


def _turned(nose_dx_iod: float, scale=2.0, offset=(40.0, 30.0)) -> np.ndarray:
    """Five photo points of a face whose nose tip sits nose_dx_iod eye distances right of the template's."""
    five = T.copy()
    five[2, 0] += nose_dx_iod * IOD
    return five * scale + np.asarray(offset)


def _shift_px(five, gain) -> float:
    m = fit_similarity(five, T)
    out = turn_shift(m, five, T, gain)
    np.testing.assert_allclose(out[:2, :2], m[:2, :2])  # only moved, never scaled or turned
    np.testing.assert_allclose(out[1, 2], m[1, 2])  # sideways only
    return float(out[0, 2] - m[0, 2])


def test_frontal_faces_and_gain_zero_are_left_as_they_were():
    assert _shift_px(_turned(0.0), 4.0) == 0.0
    assert _shift_px(_turned(TURN_DEAD_ZONE_IN_IOD * 0.5), 4.0) == 0.0  # inside the dead zone
    assert _shift_px(_turned(0.3), 0.0) == 0.0


def test_the_crop_moves_the_way_the_nose_points_by_gain_times_the_offset():
    # The fit spreads the nose's offset over all five points: measure it in the crop as turn_shift does.
    for dx in (0.25, -0.3):
        five = _turned(dx)
        nose = (apply(fit_similarity(five, T), five[2:3])[0, 0] - T[2, 0]) / IOD
        assert np.sign(nose) == np.sign(dx)
        want = 4.0 * np.sign(nose) * (abs(nose) - TURN_DEAD_ZONE_IN_IOD) * IOD
        assert _shift_px(five, 4.0) == pytest.approx(want)
        assert np.sign(_shift_px(five, 4.0)) == np.sign(dx)  # content moves the nose's way: the back of the head comes in


def test_the_shift_is_capped():
    assert abs(_shift_px(_turned(3.0), 10.0)) == pytest.approx(TURN_SHIFT_MAX_IN_IOD * IOD)


def test_align_face_uses_the_spec_and_keeps_landmarks_in_the_crop():
    five = _turned(0.3)
    m0, p0 = align_face(AlignSpec(SIZE), (400, 400), five, box=[0, 0, 300, 300])
    m4, p4 = align_face(AlignSpec(SIZE, turn_shift=4.0), (400, 400), five, box=[0, 0, 300, 300])
    assert p4[2, 0] - p0[2, 0] == pytest.approx(m4[0, 2] - m0[0, 2]) and m4[0, 2] > m0[0, 2]
    np.testing.assert_allclose(p4, apply(m4, five))  # the heatmap is drawn where the crop put the points
    # faces cut from their box have no trusted nose: turn_shift leaves them alone
    mb0, _ = align_face(AlignSpec(SIZE), (400, 400), five, box=[0, 0, 300, 300], trusted=False)
    mb4, _ = align_face(AlignSpec(SIZE, turn_shift=4.0), (400, 400), five, box=[0, 0, 300, 300], trusted=False)
    np.testing.assert_allclose(mb0, mb4)


def test_spec_round_trip_and_older_files():
    assert "turn_shift" not in AlignSpec(SIZE).to_dict()  # manifests and checkpoints made before it still match
    assert AlignSpec.from_dict(AlignSpec(SIZE, turn_shift=4.0).to_dict()).turn_shift == 4.0
    assert AlignSpec.from_dict({"size": 96}).turn_shift == 0.0


def test_align_stage_records_it_only_when_used_and_cache_and_checkpoint_carry_it(tmp_path, synthetic_set):
    from facepipe.data.align import AlignConfig, run_align
    from facepipe.data.cache import CacheConfig, run_cache
    from facepipe.data.face_cache import CacheFile
    from facepipe.data.importers import import_dataset

    import_dataset("folder", synthetic_set, tmp_path / "imp", workers=1)
    base = dict(src=str(tmp_path / "imp"), size=48, landmarks="dataset", workers=1)
    m0 = run_align(AlignConfig(out=str(tmp_path / "a0"), **base))
    m4 = run_align(AlignConfig(out=str(tmp_path / "a4"), turn_shift=4.0, **base))
    assert "turn_shift" not in m0["config"] and m4["config"]["turn_shift"] == 4.0
    run_cache(CacheConfig(src=str(tmp_path / "a4"), out=str(tmp_path / "c4.h5")))
    cf = CacheFile(str(tmp_path / "c4.h5"))
    assert cf.manifest["align"]["turn_shift"] == 4.0 and cf.align.turn_shift == 4.0  # what train puts in the checkpoint


def test_eval_notes_crops_cut_otherwise_than_the_model_was_trained_on():
    from facepipe.infer.eval_report import crop_note

    assert crop_note(AlignSpec(SIZE), AlignSpec(SIZE, box_width=2.0)) is None  # box width: box-cut faces only
    assert crop_note(AlignSpec(SIZE, turn_shift=4.0), AlignSpec(SIZE, turn_shift=4.0)) is None
    note = crop_note(AlignSpec(SIZE, turn_shift=4.0), AlignSpec(SIZE))
    assert "turn_shift 0.0 (model: 4.0)" in note and "\n" not in note
    assert "iod" in crop_note(AlignSpec(SIZE), AlignSpec(SIZE, iod=0.16))
    # another side: resampled to the model's (infer.predict.AtSide), and said so; not "not parse's path"
    note = crop_note(AlignSpec(384), AlignSpec(256))
    assert "256px crops are resampled to the model's 384px" in note and "not parse's path" not in note
