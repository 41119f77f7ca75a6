"""facepipe.util.images on the awkward files real photo collections contain, all made here."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import facepipe.util.images as images
from facepipe.util.errors import BadImage
from facepipe.util.images import list_images, load_ids, load_rgb, load_rgb_raw, nearest_palette
from facepipe.util.schema import FASSEG

H, W = 24, 32


def noise(seed=0, h=H, w=W, c=3):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c) if c else (h, w), dtype=np.uint8)


def test_grayscale(tmp_path):
    g = noise(c=0)
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    a = load_rgb(tmp_path / "g.png")
    assert a.shape == (H, W, 3) and a.dtype == np.uint8
    for ch in range(3):
        np.testing.assert_array_equal(a[..., ch], g)


def test_rgba_composites_on_white(tmp_path):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[:, : W // 2, 3] = 255  # left half opaque, right half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    a = load_rgb(tmp_path / "a.png")
    assert a.shape == (H, W, 3)
    assert (a[:, : W // 2] == (10, 20, 30)).all() and (a[:, W // 2:] == 255).all()


def test_palette_with_transparency(tmp_path):
    idx = np.zeros((H, W), np.uint8)
    idx[:, W // 2:] = 1
    im = Image.fromarray(idx, "P")
    im.putpalette([200, 0, 0, 0, 0, 0] + [0] * (256 * 3 - 6))
    im.save(tmp_path / "p.png", transparency=1)
    assert Image.open(tmp_path / "p.png").info.get("transparency") == 1
    a = load_rgb(tmp_path / "p.png")
    assert (a[:, : W // 2] == (200, 0, 0)).all() and (a[:, W // 2:] == 255).all()


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (W, H), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)  # red
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    a = load_rgb(tmp_path / "c.jpg")
    assert a.shape == (H, W, 3)
    assert a[..., 0].mean() > 230 and a[..., 1].mean() < 25 and a[..., 2].mean() < 25


def test_16bit_png(tmp_path):
    v = np.zeros((H, W), np.uint16)
    v[:, :10] = 65535
    v[:, 10:20] = 100 * 256
    Image.fromarray(v).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    a = load_rgb(tmp_path / "d.png")
    assert a.shape == (H, W, 3) and a.dtype == np.uint8
    assert (a[:, :10] == 255).all() and (a[:, 10:20] == 100).all() and (a[:, 20:] == 0).all()


def test_exif_rotation_applied(tmp_path):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:4, :4] = 255  # a white marker at the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif, quality=95)
    a = load_rgb(tmp_path / "r.jpg")
    assert a.shape == (W, H, 3)  # width and height swap
    assert a[:4, -4:].mean() > 200 and a[:4, :4].mean() < 50  # top-left went to top-right
    assert load_rgb_raw(tmp_path / "r.jpg").shape == (H, W, 3)  # label images are never rotated


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated(tmp_path, suffix):
    Image.fromarray(noise(h=64, w=64)).save(tmp_path / f"full{suffix}")
    data = (tmp_path / f"full{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImage, match="cut"):
        load_rgb(tmp_path / f"cut{suffix}")


def test_random_bytes(tmp_path):
    (tmp_path / "x.jpg").write_bytes(os.urandom(2000))
    with pytest.raises(BadImage, match="not an image or corrupt"):
        load_rgb(tmp_path / "x.jpg")


def test_missing_file(tmp_path):
    with pytest.raises(BadImage, match="file not found"):
        load_rgb(tmp_path / "nope.png")


def test_too_small(tmp_path):
    Image.fromarray(noise(h=4, w=4)).save(tmp_path / "s.png")
    with pytest.raises(BadImage, match="too small"):
        load_rgb(tmp_path / "s.png")


@pytest.mark.parametrize("limit", [300, 700])  # PIL errors past 2x its limit, warns past 1x
def test_decompression_bomb(tmp_path, monkeypatch, limit):
    Image.fromarray(noise()).save(tmp_path / "big.png")  # 768 pixels
    monkeypatch.setattr(images, "MAX_PIXELS", limit)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # _open sets PIL's global
    with pytest.raises(BadImage, match="large"):
        load_rgb(tmp_path / "big.png")


def test_nearest_palette_on_noisy_labels():
    rng = np.random.default_rng(0)
    pal = np.array(FASSEG.colors)
    ids = rng.integers(0, len(pal), (H, W)).astype(np.uint8)
    rgb = np.clip(pal[ids] + rng.integers(-20, 21, (H, W, 3)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(nearest_palette(rgb, pal), ids)
    # A handful of boundary blends far from every colour (hair/skin ~ (191,128,0)) go to the nearest one.
    rgb[0, :5] = (191, 128, 0)
    got = nearest_palette(rgb, pal)
    assert set(got[0, :5].tolist()) <= {FASSEG.index("hair"), FASSEG.index("skin")}
    # A large area of an unknown colour means the wrong dataset: refused, naming the colour.
    rgb[:8] = (128, 0, 128)
    with pytest.raises(BadImage, match=r"\(128, 0, 128\)"):
        nearest_palette(rgb, pal, name="x.png")


def test_load_ids(tmp_path):
    ids = noise(c=0) % 7
    Image.fromarray(ids, "L").save(tmp_path / "l.png")
    p = Image.fromarray(ids, "P")
    p.putpalette(list(range(256)) * 3)
    p.save(tmp_path / "p.png")
    Image.fromarray(np.repeat(ids[..., None], 3, 2)).save(tmp_path / "g.png")
    for name in ("l.png", "p.png", "g.png"):
        np.testing.assert_array_equal(load_ids(tmp_path / name), ids, err_msg=name)
    Image.fromarray(noise()).save(tmp_path / "c.png")
    with pytest.raises(BadImage, match="colour"):
        load_ids(tmp_path / "c.png")


def test_list_images_skips_hidden_and_follows_links_out_of_the_folder(tmp_path):
    """A folder of links to photos kept elsewhere is how people pick a subset: the links are followed
    (reading through a link is harmless; stages write only under OUT). The old rule, links that leave
    the folder skipped, stays available as outside_links=False."""
    (tmp_path / "in" / "sub").mkdir(parents=True)
    Image.fromarray(noise()).save(tmp_path / "in" / "b.png")
    Image.fromarray(noise()).save(tmp_path / "in" / "sub" / "a.JPG", format="JPEG")
    Image.fromarray(noise()).save(tmp_path / "in" / ".hidden.png")
    Image.fromarray(noise()).save(tmp_path / "outside.png")
    (tmp_path / "in" / "link.png").symlink_to(tmp_path / "outside.png")
    (tmp_path / "in" / "inner.png").symlink_to(tmp_path / "in" / "b.png")
    (tmp_path / "in" / "notes.txt").write_text("x")
    root = (tmp_path / "in").resolve()
    found = list_images(tmp_path / "in")
    assert [p.relative_to(root).as_posix() for p in found] == ["b.png", "inner.png", "link.png", "sub/a.JPG"]
    assert found.dangling == []
    np.testing.assert_array_equal(load_rgb(found[2]), noise())  # the link's name, the target's pixels
    old = list_images(tmp_path / "in", outside_links=False)
    assert [p.relative_to(root).as_posix() for p in old] == ["b.png", "inner.png", "sub/a.JPG"]


def test_list_images_counts_dangling_links_and_skips_fifos_and_link_loops(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(noise()).save(src / "a.png")
    (src / "gone.png").symlink_to(tmp_path / "deleted.png")
    (src / "loop1.png").symlink_to(src / "loop2.png")
    (src / "loop2.png").symlink_to(src / "loop1.png")
    (src / "gone.txt").symlink_to(tmp_path / "deleted.txt")  # not named like an image: not counted
    (src / "zero.png").symlink_to("/dev/zero")
    os.mkfifo(src / "fifo.png")
    os.mkfifo(tmp_path / "pipe.png")
    (src / "to_fifo.png").symlink_to(tmp_path / "pipe.png")
    (src / "sub" / "up").symlink_to(src, target_is_directory=True)  # a folder loop: must not be walked
    found = list_images(src)
    assert [p.name for p in found] == ["a.png"]
    assert sorted(p.name for p in found.dangling) == ["gone.png", "loop1.png", "loop2.png"]


def test_no_images_error_names_the_dangling_links(tmp_path):
    from facepipe.util.errors import FacepipeError
    from facepipe.util.photos import list_photos

    (tmp_path / "pick").mkdir()
    (tmp_path / "pick" / "a.jpg").symlink_to(tmp_path / "moved" / "a.jpg")
    with pytest.raises(FacepipeError, match="skipped 1 dangling link, e.g. a.jpg"):
        list_photos(tmp_path / "pick")


def test_every_listed_format_decodes_and_phone_and_raw_photos_are_named(tmp_path):
    """What a folder listing takes, load_rgb reads (GIF and AVIF included, in the Pillow installed); what
    it cannot read but is a photo (an iPhone's HEIC, camera raw) is named, not silently dropped."""
    from facepipe.infer.parse import collect_photos
    from facepipe.util.errors import FacepipeError
    from facepipe.util.images import IMAGE_SUFFIXES
    from facepipe.util.photos import list_photos

    src = tmp_path / "in"
    src.mkdir()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
           ".pgm": "PPM"}
    for suffix in sorted(IMAGE_SUFFIXES):
        im = Image.fromarray(noise())
        im = im.convert("L") if suffix == ".pgm" else im
        im.save(src / f"p{suffix}", format=fmt.get(suffix))
    found = list_images(src)
    assert sorted(p.suffix for p in found) == sorted(IMAGE_SUFFIXES) and found.unreadable == []
    for p in found:
        assert load_rgb(p).shape == (noise().shape[0], noise().shape[1], 3), p.name

    phone = tmp_path / "phone"
    phone.mkdir()
    for name in ("IMG_0001.HEIC", "IMG_0002.heic", "DSC_0003.NEF", "notes.txt"):
        (phone / name).write_bytes(b"\0" * 64)
    assert [p.name for p in list_images(phone).unreadable] == ["DSC_0003.NEF", "IMG_0001.HEIC", "IMG_0002.heic"]
    for fn in (list_photos, lambda f: collect_photos([f])):
        with pytest.raises(FacepipeError, match=r"skipped 3 photos in a format facepipe cannot read \(\.heic, \.nef"):
            fn(phone)
    Image.fromarray(noise()).save(phone / "ok.png")
    got = collect_photos([phone])
    assert [p.name for p in got] == ["ok.png"] and len(got.unreadable) == 3
