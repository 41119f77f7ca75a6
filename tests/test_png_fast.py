"""png_fast: any PNG reader gets the exact pixels back, whatever the bands, threads and chunking."""
import io
import zlib

import numpy as np
import pytest
from PIL import Image

from facepipe.util import png_fast


@pytest.mark.parametrize("shape,threads", [((1, 1), 1), ((7, 5), 2), ((123, 77), 3), ((64, 300), 2)])
def test_pixels_come_back_exactly(shape, threads):
    rng = np.random.default_rng(shape[0])
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    rgb[: shape[0] // 2] //= 16  # some smooth rows too
    im = Image.open(io.BytesIO(png_fast.encode_rgb_png(rgb, threads)))
    assert im.mode == "RGB" and np.array_equal(np.asarray(im), rgb)


def test_stream_split_over_several_idat_chunks(monkeypatch, tmp_path):
    monkeypatch.setattr(png_fast, "IDAT_BYTES", 1000)
    rgb = np.random.default_rng(1).integers(0, 256, (60, 50, 3), dtype=np.uint8)
    data = png_fast.encode_rgb_png(rgb, 2)
    assert data.count(b"IDAT") > 5
    png_fast.save_rgb_png(tmp_path / "x.png", rgb, 2)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.png")), rgb)


def test_adler32_combine_matches_zlib():
    rng = np.random.default_rng(2)
    for n1, n2 in [(0, 5), (5, 0), (1, 1), (70000, 65521), (123456, 99999)]:
        a, b = rng.bytes(n1), rng.bytes(n2)
        assert png_fast._adler32_combine(zlib.adler32(a), zlib.adler32(b), n2) == zlib.adler32(a + b)


def test_refuses_what_is_not_rgb():
    with pytest.raises(ValueError):
        png_fast.encode_rgb_png(np.zeros((4, 4), np.uint8))
