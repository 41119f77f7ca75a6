"""tools/person_split.py and tools/pose_table.py: the held-out-persons split and the pose groups that
docs/results.md's "Unseen persons and poses" rests on (the tools themselves run on real FASSEG)."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


IDS = ["v2_train_1", "v2_test_3", "v3_train_+15_personne01147+0+15", "v3_train_-90_personne06131+0-90",
       "v3_train_0_personne07101+0+0", "v3_train_+60_personne02150+0+60"]


def test_person_split_holds_out_every_pose_of_the_given_persons():
    s = _tool("person_split").person_splits(IDS, {"06", "07"})
    assert s == {"train": ["v2_train_1", "v3_train_+15_personne01147+0+15", "v3_train_+60_personne02150+0+60"],
                 "test": ["v3_train_-90_personne06131+0-90", "v3_train_0_personne07101+0+0"],
                 "v2test": ["v2_test_3"]}


def test_person_split_refuses_ids_that_are_not_fasseg():
    with pytest.raises(SystemExit, match="not a FASSEG"):
        _tool("person_split").person_splits(IDS + ["photo_1"], {"06"})


def test_person_split_writes_a_folder_layout(tmp_path, monkeypatch):
    imp = tmp_path / "imp"
    for sub in ("images", "labels"):
        (imp / sub).mkdir(parents=True)
        for i in IDS:
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(imp / sub / f"{i}.png")
    (imp / "schema.json").write_text("{}")
    monkeypatch.setattr("sys.argv", ["person_split", str(imp), str(tmp_path / "out"), "--test-persons", "02"])
    _tool("person_split").main()
    assert json.loads((tmp_path / "out" / "splits.json").read_text())["test"] == ["v3_train_+60_personne02150+0+60"]
    assert (tmp_path / "out" / "labels").resolve() == (imp / "labels").resolve()


@pytest.mark.parametrize("face_id, group", [("v2_test_3", "frontal V2"), ("v3_train_+15_personne01147+0+15", "yaw 0-15"),
                                            ("v3_train_-45_x", "yaw 30-45"), ("v3_train_+75_x", "yaw 60-75"),
                                            ("v3_train_-90_x", "yaw 90"), ("v3_train_0_x", "yaw 0-15")])
def test_pose_groups_read_the_yaw_from_the_id(face_id, group):
    assert _tool("pose_table").pose_group(face_id) == group
