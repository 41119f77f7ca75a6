"""What the network sees beyond the photo (infer.photo_fill): the photo's colour along its edge, for colour crops
of a model whose file asks for it; black, as cut, otherwise."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facepipe.cli import cli
from facepipe.infer.photo_fill import RING, fill_beyond, network_crop, resolve
from facepipe.util.atomic import save_image
from facepipe.util.errors import FacepipeError


def _crop_half_beyond(size=64):
    """A crop whose right half lies beyond the photo (black), the photo's pixels along that edge one colour
    and the rest of many colours (a colour photo: a crop of two colours reads as toned, models.gray_route)."""
    crop = np.zeros((size, size, 3), np.uint8)
    inside = np.zeros((size, size), bool)
    inside[:, :size // 2] = True
    crop[:, :size // 2] = np.random.default_rng(0).integers(40, 255, (size, size // 2, 3))  # far from the edge
    crop[:, size // 2 - RING:size // 2] = (20, 90, 160)  # the RING columns along it
    return crop, inside


def test_the_fill_is_the_photos_colour_along_its_edge():
    crop, inside = _crop_half_beyond()
    out = fill_beyond(crop, inside)
    assert (out[~inside] == (20, 90, 160)).all()  # the edge's colour, not the crop's mean
    assert np.array_equal(out[inside], crop[inside]) and not (crop[~inside] != 0).any()  # the input untouched
    assert fill_beyond(crop, None) is crop and fill_beyond(crop, np.ones_like(inside)) is crop
    assert fill_beyond(crop, np.zeros_like(inside)) is crop  # nothing of the photo to take a colour from


def test_colourless_crops_and_black_keep_the_crop_as_cut():
    crop, inside = _crop_half_beyond()
    gray = np.repeat(crop.mean(2, keepdims=True), 3, 2).astype(np.uint8)
    assert network_crop(gray, inside, "edge") is gray  # the gray branch lost with the fill (docs/results.md)
    assert network_crop(crop, inside, "black") is crop
    assert network_crop(crop, None, "edge") is crop
    assert network_crop(crop, inside, "edge") is not crop


def test_the_model_file_decides_unless_told():
    assert resolve("model", {"beyond_photo_fill": "edge"}) == "edge"
    assert resolve("model", {}) == "black"  # files packed before the key: as they were run
    assert resolve("black", {"beyond_photo_fill": "edge"}) == "black"
    with pytest.raises(FacepipeError):
        resolve("grey", {})
    with pytest.raises(FacepipeError, match="does not know"):
        resolve("model", {"beyond_photo_fill": "blur"})


def test_eval_shows_the_network_the_fill_and_the_router_the_crop_as_cut():
    import torch

    from facepipe.data.face_cache import to_input
    from facepipe.infer.evaluate import _shown

    crop, inside = _crop_half_beyond()
    imgs = np.stack([crop, crop])
    x, raw = _shown(imgs, None, np.stack([inside, np.ones_like(inside)]), "edge")
    assert torch.equal(raw, to_input(imgs, None)) and not torch.equal(x, raw)
    assert torch.equal(x[1], raw[1])  # a crop wholly inside its photo is shown as cut
    x, raw = _shown(imgs, None, np.stack([inside, inside]), "black")
    assert raw is None and torch.equal(x, to_input(imgs, None))


def test_parse_fills_colour_photos_only_and_records_it(tmp_path):
    """The astronaut cut so that her helmet runs off the photo's top: her crop reaches beyond it."""
    from skimage import data

    photo = data.astronaut()[70:330, 90:350]
    save_image(tmp_path / "c" / "a.png", photo)
    save_image(tmp_path / "g" / "a.png", np.repeat(photo.mean(2, keepdims=True), 3, 2).astype(np.uint8))
    labels = {}
    for kind in ("c", "g"):
        for fill in ("edge", "black"):
            out = tmp_path / f"{kind}-{fill}"
            r = CliRunner().invoke(cli, ["parse", str(tmp_path / kind), "--out", str(out), "--fill-beyond-photo", fill,
                                         "--device", "cpu", "-q"])
            assert r.exit_code == 0, r.output
            labels[kind, fill] = np.asarray(Image.open(out / "a.labels.png"))
            config = json.loads((out / "manifest.json").read_text())["config"]
            assert ("beyond_photo_fill" in config) == (fill == "edge")
    assert (labels["c", "edge"] != labels["c", "black"]).any()
    assert np.array_equal(labels["g", "edge"], labels["g", "black"])  # gray faces keep their black


def test_the_router_reads_the_crop_as_cut():
    """The gray branch's router chooses on the crop as cut, in parse and in eval: a filled crop reads paler, and
    a pale colour face beside a pale wall could otherwise change branch."""
    import torch

    from facepipe.data.face_cache import to_input
    from facepipe.infer.evaluate import _predict, _shown
    from facepipe.infer.model import LoadedModel
    from facepipe.infer.parse import Parser, _run_network

    m = LoadedModel.load("default")
    seen, routes = [], m.net.routes
    m.net.routes = lambda x: (seen.append(x.clone()), routes(x))[1]
    crop, inside = _crop_half_beyond(256)
    hm = np.zeros((256, 256), np.uint8)
    as_cut = to_input(crop[None], hm[None])
    _run_network(Parser(m), [crop], [hm], 4, False, [inside], "edge")
    assert len(seen) == 1 and torch.equal(seen[0], as_cut)
    _predict(m.net, _shown(crop[None], hm[None], inside[None], "edge"), None, False, "cpu")
    assert len(seen) == 2 and torch.equal(seen[1], as_cut)


def test_eval_json_says_what_the_network_saw_beyond_the_photo(tmp_path, tiny_run, synthetic_cache):
    for fill, said in (("model", "black"), ("edge", "edge")):  # a run's file asks for nothing: black
        out = tmp_path / f"{fill}.json"
        r = CliRunner().invoke(cli, ["eval", str(tiny_run), str(synthetic_cache), "--fill-beyond-photo", fill,
                                     "--json", str(out), "--sheet", str(tmp_path / f"{fill}.png"), "-q",
                                     "--device", "cpu"])
        assert r.exit_code == 0, r.output
        assert json.loads(out.read_text())["beyond_photo_fill"] == said
