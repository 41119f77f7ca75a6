"""A grayscale branch (models.gray_route, infer.pack --gray): which faces take it, that each face gets
exactly its branch's output, and that pack, load, fold, export, bench and parse carry it through."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from skimage import data

from facepipe.cli import cli
from facepipe.data.face_cache import to_input
from facepipe.infer.checkpoint import load_checkpoint, run_checkpoint
from facepipe.infer.model import LoadedModel
from facepipe.infer.pack import pack
from facepipe.data.paste import to_sepia
from facepipe.models.gray_route import (GRAY_SATURATION, TONED_RESIDUAL, GrayRoute, colourless, luma_input,
                                         mean_saturation, toned_residual)
from facepipe.util.atomic import save_image
from facepipe.util.errors import FacepipeError


def _crop(size=64, gray=False, border=0, sepia=False):
    """A colour (astronaut), grayscale or sepia-toned crop, optionally inside a black border."""
    img = np.asarray(data.astronaut()[::512 // size, ::512 // size][:size, :size], np.uint8)
    if gray:
        img = np.repeat(np.rint(img @ [0.299, 0.587, 0.114]).astype(np.uint8)[..., None], 3, 2)
    if sepia:
        img = to_sepia(img)
    if border:
        img = img.copy()
        img[:border], img[-border:], img[:, :border], img[:, -border:] = 0, 0, 0, 0
    return img


def test_saturation_reads_colour_and_ignores_black_border():
    colour, gray = _crop(), _crop(gray=True)
    s = mean_saturation(to_input(np.stack([colour, gray, _crop(border=16)]), None)).numpy()
    assert s[0] > 2 * GRAY_SATURATION and s[1] < 1e-5  # float rounding of the normalisation
    assert abs(s[2] - s[0]) < 0.1 * s[0]  # a black border around the same face does not dilute it
    dark = (colour // 16)[None]  # every pixel below the brightness floor: no colour evidence, 0
    assert mean_saturation(to_input(dark, None)).item() == 0


def test_colourless_is_the_routers_rule_on_a_uint8_crop():
    """infer.neck asks it of crops beside any model: it must send the same faces a bundled router would."""
    crops = [_crop(), _crop(gray=True), _crop(border=8), _crop(gray=True, border=8), _crop(sepia=True)]
    route = GrayRoute(torch.nn.Identity(), torch.nn.Identity(), GRAY_SATURATION, TONED_RESIDUAL)
    want = route.routes(to_input(np.stack(crops), None)).tolist()
    assert [colourless(c) for c in crops] == want == [False, True, False, True, True]


def test_toned_residual_tells_toned_from_colour():
    """Sepia is as saturated as colour, so saturation alone keeps it on the colour network; its chroma is a
    function of brightness, which toned_residual reads (the astronaut in colour: ~37; toned: ~1)."""
    x = to_input(np.stack([_crop(), _crop(sepia=True), _crop(gray=True), _crop(sepia=True, border=16)]), None)
    r, s = toned_residual(x).numpy(), mean_saturation(x).numpy()
    assert s[1] > 4 * GRAY_SATURATION  # toned, yet far above the saturation cut
    assert r[0] > 5 * TONED_RESIDUAL and r[1] < TONED_RESIDUAL / 2 and r[2] < 0.05 and r[3] < TONED_RESIDUAL / 2
    # A colour crop whose colours differ only between brightness bands reads as toned: this is the rule's
    # known blind spot, taken because real colour faces show several colours at one brightness.
    two = np.zeros((64, 64, 3), np.uint8)
    two[:32], two[32:] = (200, 60, 60), (40, 40, 160)
    assert toned_residual(to_input(two[None], None)).item() < 0.05
    two[:32, :16] = (40, 140, 40)  # another colour in the same brightness band (luma 99 and 102)
    assert toned_residual(to_input(two[None], None)).item() > TONED_RESIDUAL


@pytest.fixture(scope="module")
def routed(tmp_path_factory, tiny_run):
    """The tiny run packed with a gray branch whose weights differ (perturbed), so routing shows."""
    tmp = tmp_path_factory.mktemp("routed")
    ck = load_checkpoint(run_checkpoint(tiny_run))
    g = torch.Generator().manual_seed(0)
    ck["state_dict"] = {k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                        for k, v in ck["state_dict"].items()}
    torch.save(ck, tmp / "gray.pt")
    pack(tiny_run, tmp / "routed.pt", gray=tmp / "gray.pt")
    return tmp / "routed.pt"


def _batch(sepia=False):
    crops = [_crop(), _crop(gray=True), _crop(border=8), _crop(gray=True, border=8)] + [_crop(sepia=True)] * sepia
    heat = np.zeros((len(crops), 64, 64), np.uint8)
    heat[:, 20:24, 20:44] = 255
    return to_input(np.stack(crops), heat)


def test_each_face_gets_its_own_branch(routed, tiny_run):
    m = LoadedModel.load(routed)
    assert isinstance(m.net, GrayRoute) and [n for n, _ in m.branches()] == ["color", "gray"]
    assert m.saw_grayscale and m.gray_branch["threshold"] == GRAY_SATURATION
    assert m.gray_branch["toned"] == TONED_RESIDUAL
    assert m.routes_gray(_batch(sepia=True)).tolist() == [False, True, False, True, True]  # toned: gray
    x = _batch()
    assert m.routes_gray(x).tolist() == [False, True, False, True]
    color, gray = m.net.color, m.net.gray
    with torch.no_grad():
        mixed = m.net(x)
        want = torch.cat([color(x[[0]]), gray(luma_input(x[[1]])), color(x[[2]]), gray(luma_input(x[[3]]))])
        assert torch.allclose(mixed, want, atol=1e-5)
        assert not torch.allclose(color(x[[1]]), gray(luma_input(x[[1]])), atol=1e-3)  # the branches differ
        # The colour branch is the run itself: a colour batch gives the one-branch model's output exactly.
        plain = LoadedModel.load(tiny_run).net
        assert torch.equal(m.net(x[[0, 2]]), plain(x[[0, 2]]))
    # Folding BatchNorm goes into each branch and changes nothing but rounding.
    folded = LoadedModel.load(routed, fold=True)
    assert not any(isinstance(q, torch.nn.BatchNorm2d) for q in folded.net.modules())
    with torch.no_grad():
        assert torch.allclose(folded.net(x), mixed, atol=1e-4)


def test_predict_routed_chooses_once_and_matches_predict(routed, monkeypatch):
    """parse records each face's branch: the choice is made once per batch (twice more with the mirror
    before), and probabilities and branches are those of predict and routes_gray."""
    m = LoadedModel.load(routed)
    x = _batch(sepia=True)
    with torch.no_grad():
        want_p, want_g = m.predict(x, tta_flip=True), m.routes_gray(x)
        calls = []
        real = GrayRoute.routes
        monkeypatch.setattr(GrayRoute, "routes", lambda self, t: calls.append(1) or real(self, t))
        p, g = m.predict_routed(x, tta_flip=True)
    assert len(calls) == 1 and g.tolist() == want_g.tolist()
    assert torch.allclose(p, want_p, atol=1e-6)


def test_a_file_packed_before_the_toned_rule_routes_by_saturation_alone(routed, tmp_path):
    ck = load_checkpoint(routed)
    del ck["gray_branch"]["toned"]
    torch.save(ck, tmp_path / "old.pt")
    m = LoadedModel.load(tmp_path / "old.pt")
    assert m.net.toned is None
    assert m.routes_gray(_batch(sepia=True)).tolist() == [False, True, False, True, False]


def test_pack_refuses_a_gray_branch_of_another_network(tmp_path, tiny_run):
    ck = load_checkpoint(run_checkpoint(tiny_run))
    ck["size"] = 128
    torch.save(ck, tmp_path / "other.pt")
    with pytest.raises(FacepipeError, match="differs from .* in size"):
        pack(tiny_run, tmp_path / "x.pt", gray=tmp_path / "other.pt")
    assert not (tmp_path / "x.pt").exists()


def test_export_writes_and_checks_both_branches(routed, tmp_path):
    import onnxruntime as ort

    res = CliRunner().invoke(cli, ["export", str(routed), "--onnx", str(tmp_path / "m.onnx")])
    assert res.exit_code == 0, res.output
    x = _batch().numpy()
    m = LoadedModel.load(routed)
    for name, net, xin in (("m.onnx", m.net.color, x), ("m-gray.onnx", m.net.gray, luma_input(torch.from_numpy(x)).numpy())):
        sess = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        meta = sess.get_modelmeta().custom_metadata_map
        rule = json.loads(meta["gray_branch"])
        assert rule["gray_file"] == "m-gray.onnx" and rule["threshold"] == GRAY_SATURATION
        assert rule["toned"] == TONED_RESIDUAL and "luma band" in rule["rule"]
        with torch.no_grad():
            assert np.abs(sess.run(None, {"image": xin})[0] - net(torch.from_numpy(xin)).numpy()).max() < 1e-3


def test_parse_says_which_branch_took_each_face(routed, tmp_path):
    photo = data.astronaut()
    save_image(tmp_path / "in" / "colour.png", photo)
    save_image(tmp_path / "in" / "gray.png", np.repeat(photo.mean(2, keepdims=True), 3, 2).astype(np.uint8))
    res = CliRunner().invoke(cli, ["parse", str(tmp_path / "in"), "--model", str(routed), "--out",
                                   str(tmp_path / "o"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    branch = {n: [f["branch"] for f in json.loads((tmp_path / "o" / f"{n}.json").read_text())["faces"]]
              for n in ("colour", "gray")}
    assert branch == {"colour": ["color"], "gray": ["gray"]}
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["gray_branch"] == 1
    assert "faces on the gray branch" in res.output


def test_gray_branch_may_be_wider(tmp_path, tiny_run):
    """The gray branch runs only on grayscale faces, so it may be another width; its shape is kept."""
    from facepipe.infer.checkpoint import save_checkpoint
    from facepipe.models import create_model
    from facepipe.util.schema import LabelSchema

    ck = load_checkpoint(run_checkpoint(tiny_run))
    wide = create_model(ck["arch"], num_classes=ck["num_classes"], in_channels=ck["in_channels"], width=24)
    save_checkpoint(tmp_path / "wide.pt", wide, arch=ck["arch"], schema=LabelSchema.from_dict(ck["schema"]),
                    size=ck["size"], heatmap=ck["heatmap"], extra={"align": ck.get("align")})
    pack(tiny_run, tmp_path / "r.pt", gray=tmp_path / "wide.pt")
    m = LoadedModel.load(tmp_path / "r.pt", fold=True)
    assert m.net.gray.config["width"] == 24 and m.net.color.config["width"] == 16
    x = _batch()
    with torch.no_grad():
        assert m.net(x).shape == (4, ck["num_classes"], 64, 64)
    assert LoadedModel.load(tmp_path / "r.pt").gray_branch["model_kwargs"]["width"] == 24


def test_bundled_default_takes_gray_faces_on_its_gray_branch():
    """The shipped default carries its gray branch with the toned rule; a colour crop stays on the colour
    network, gray and sepia ones take the branch."""
    m = LoadedModel.load("default")
    assert m.gray_branch is not None and m.gray_branch["threshold"] == GRAY_SATURATION
    assert m.gray_branch["toned"] == TONED_RESIDUAL
    size = m.size
    crops = np.stack([np.asarray(data.astronaut()[:size, 128:128 + size], np.uint8)] * 3)
    crops[1] = np.repeat(np.rint(crops[1] @ [0.299, 0.587, 0.114]).astype(np.uint8)[..., None], 3, 2)
    crops[2] = to_sepia(crops[2])
    x = to_input(crops, np.zeros(crops.shape[:3], np.uint8))
    assert m.routes_gray(x).tolist() == [False, True, True]


def test_pack_keeps_the_gray_branch_of_a_packed_model(routed, tmp_path, tiny_run):
    # A new colour network beside the gray branch a packed model already has (`--gray default`).
    pack(tiny_run, tmp_path / "again.pt", gray=routed)
    a, b = load_checkpoint(routed)["gray_branch"], load_checkpoint(tmp_path / "again.pt")["gray_branch"]
    assert a.keys() == b.keys() and a["model_kwargs"] == b["model_kwargs"] and a["recipe"] == b["recipe"]
    assert all(torch.equal(a["state_dict"][k], v) for k, v in b["state_dict"].items())
    colour = load_checkpoint(run_checkpoint(tiny_run))["state_dict"]
    assert not all(torch.equal(colour[k], v) for k, v in b["state_dict"].items())  # not the colour network
