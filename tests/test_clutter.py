"""Procedural clutter (data.clutter) and `backgrounds --procedural`: drawn backdrops added to the photos."""
import json

import numpy as np
import pytest

from facepipe.data.backgrounds import BackgroundsConfig, run_backgrounds
from facepipe.data.clutter import KINDS, clutter
from facepipe.learn.background_bank import load_bank
from facepipe.util.errors import FacepipeError


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_a_textured_drawing_fixed_by_its_seed(kind):
    a = clutter(kind, 3, 160, 120)
    assert a.shape == (120, 160, 3) and a.dtype == np.uint8
    assert np.array_equal(a, clutter(kind, 3, 160, 120))  # reproducible: the bank is rebuilt from a command
    assert not np.array_equal(a, clutter(kind, 4, 160, 120))
    # Texture, not a flat wall: neighbouring pixels differ (strokes, leaf edges, disc rims).
    g = a.astype(float).mean(-1)
    assert np.abs(np.diff(g, axis=1)).mean() > (0.3 if kind == "bokeh" else 2.0)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="known: grass"):
        clutter("clouds", 0)


def test_backgrounds_procedural_adds_drawings_after_the_photos(tmp_path):
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (128, 192, 3), dtype=np.uint8)).save(src / "wall.png")
    out = tmp_path / "bg"
    m = run_backgrounds(BackgroundsConfig(sources=(str(src),), out=str(out), short_side=96, procedural=5))
    assert m["counts"]["photos"] == 1 and m["counts"]["procedural"] == 5
    assert m["config"]["procedural"] == 5
    recs = [json.loads(l) for l in (out / "sources.jsonl").read_text().splitlines()]
    assert [r["source"] for r in recs[1:]] == [f"procedural:{KINDS[i % 4]}:{i}" for i in range(5)]
    assert all((r["width"], r["height"]) == (128, 96) for r in recs[1:])
    assert load_bank(out, 32, tiles_per_photo=2).tiles.shape == (12, 3, 32, 32)
    # Without --procedural the config holds no such field: outputs made before it existed still match.
    m0 = run_backgrounds(BackgroundsConfig(sources=(str(src),), out=str(tmp_path / "bg0"), short_side=96))
    assert "procedural" not in m0["config"] and m0["counts"]["procedural"] == 0
    with pytest.raises(FacepipeError, match="another config"):  # same folder, other drawings: refused
        run_backgrounds(BackgroundsConfig(sources=(str(src),), out=str(out), short_side=96, procedural=6))
