"""The real FASSEG copy in ../shared/data/fasseg (V2 frontal02 + V3 multipose01 training part)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facepipe.data.importers import import_dataset
from facepipe.data.importers.common import read_items
from facepipe.util.schema import FASSEG

FASSEG_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "fasseg"

pytestmark = [
    pytest.mark.shared,
    pytest.mark.slow,  # ~25 s on 2 cores, mostly PNG encoding of the 252 photos and labels
    pytest.mark.skipif(not FASSEG_DIR.is_dir(), reason=f"real FASSEG copy not found at {FASSEG_DIR}"),
]


def test_import_real_fasseg(tmp_path):
    m = import_dataset("fasseg", FASSEG_DIR, tmp_path / "fasseg")
    assert m["skipped"] == []
    assert m["counts"] == {"images": 252, "labelled": 252, "skipped": 0, "split_train": 202, "split_test": 50}
    splits = json.loads((tmp_path / "fasseg" / "splits.json").read_text())
    assert len(splits["train"]) == 202 and len(splits["test"]) == 50
    seen = np.zeros(256, bool)
    for r in read_items(tmp_path / "fasseg"):
        lab = np.asarray(Image.open(tmp_path / "fasseg" / r["label"]))
        assert lab.shape == (r["height"], r["width"])
        seen[np.unique(lab)] = True
    assert np.flatnonzero(seen).tolist() == list(range(FASSEG.num_classes))
