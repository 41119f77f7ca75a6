import pytest
import torch

from facepipe.models import create_model, list_models, register_model
from facepipe.util.errors import FacepipeError

K = 5


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("in_channels", [3, 4])
@pytest.mark.parametrize("name", list_models())
def test_forward_shapes(name, in_channels):
    torch.manual_seed(0)
    model = create_model(name, K, in_channels=in_channels).eval()
    x = torch.randn(1, in_channels, 64, 64)
    with torch.no_grad():
        logits = model(x)
        logits2, feats = model(x, return_features=True)
    assert logits.shape == (1, K, 64, 64)
    assert torch.allclose(logits, logits2)
    assert feats.ndim == 4 and feats.shape[0] == 1 and feats.shape[1] >= K
    assert 1 < feats.shape[-1] < 64


@pytest.mark.parametrize("in_channels", [3, 4])
@pytest.mark.parametrize("name", list_models())
def test_backward_reaches_every_used_weight(name, in_channels):
    # Batch 2: BiSeNet (like the original) has BatchNorm after global pooling, which needs >1 value.
    torch.manual_seed(0)
    model = create_model(name, K, in_channels=in_channels).train()
    logits, feats = model(torch.randn(2, in_channels, 64, 64), return_features=True)
    (logits.square().mean() + feats.square().mean()).backward()
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == in_channels and first.weight.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", list_models())
def test_config_rebuilds_the_same_model(name):
    model = create_model(name, K, in_channels=4, feat_dim=8)
    again = create_model(model.arch, **model.config)
    again.load_state_dict(model.state_dict())
    assert again.config == model.config and model.config["feat_dim"] == 8


def test_unknown_name_lists_known_ones():
    with pytest.raises(FacepipeError, match="teacher"):
        create_model("no-such-net", K)


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError):
        register_model("teacher")(lambda num_classes, in_channels=3: None)


def test_feat_dim_below_num_classes_is_refused():
    with pytest.raises(ValueError):
        create_model("teacher-small", K, feat_dim=K - 1)


def test_parameter_counts():
    assert 13.0e6 <= n_params(create_model("bisenet-r18", 19)) <= 13.6e6
    assert 0.8e6 <= n_params(create_model("teacher", 11)) <= 3e6
    assert n_params(create_model("teacher-small", 11)) < n_params(create_model("teacher", 11)) / 3


def test_teacher_dilations_are_a_setting():
    model = create_model("teacher-small", K, dilations=(1, 2))
    rates = [m.dilation[0] for m in model.context.modules() if isinstance(m, torch.nn.Conv2d)]
    assert rates == [1, 2] and model.config["dilations"] == (1, 2)


def test_bisenet_aux_heads():
    model = create_model("bisenet-r18", K).train()
    logits, feats, aux = model(torch.randn(2, 3, 64, 64), return_features=True, return_aux=True)
    assert [a.shape for a in aux] == [logits.shape, logits.shape]


@pytest.mark.parametrize("name", list_models())
def test_batchnorm_folding_keeps_the_function(name):
    from facepipe.models.fold import fold_batchnorm

    torch.manual_seed(0)
    cin = 3 if name.startswith("bisenet") else 4
    m = create_model(name, num_classes=5, in_channels=cin).eval()
    for mod in m.modules():  # non-trivial statistics, so a wrong fold would show
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.uniform_(0.5, 1.5)
    f = fold_batchnorm(m)
    assert not any(isinstance(q, torch.nn.BatchNorm2d) for q in f.modules())
    x = torch.randn(2, cin, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(f(x), m(x), atol=1e-4, rtol=1e-4)


def test_teacher_refine_stage_joins_the_input_at_full_resolution():
    torch.manual_seed(0)
    m = create_model("teacher", num_classes=6, in_channels=4, width=8, refine=4).eval()
    assert m.config["refine"] == 4
    assert create_model("teacher", **m.config).config == m.config  # what a checkpoint rebuilds from
    first = m.refine[0][0]
    assert first.in_channels == 8 + 4 and first.stride == (1, 1)  # stride-2 features + the input pixels
    assert m(torch.zeros(1, 4, 32, 32)).shape == (1, 6, 32, 32)
    plain = create_model("teacher", num_classes=6, in_channels=4, width=8)
    assert plain.refine is None and plain.config["refine"] == 0


def test_student_global_context_reaches_beyond_the_local_field():
    """With `global_context` a change in one corner moves the logits in the opposite one, beyond the
    dilated blocks' receptive field; without it nothing there moves. Off by default, and then absent from
    the config, so checkpoints made before it load unchanged."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, 512, 512)
    y = x.clone()
    y[..., :128, :128] += 3.0  # 128 + 263 // 2 < 480: the local field of the far corner never sees it
    moved = {}
    for on in (False, True):
        m = create_model("student", K, in_channels=4, global_context=on).eval()
        with torch.no_grad():
            moved[on] = (m(y) - m(x))[..., -32:, -32:].abs().max().item()
        assert ("global_context" in m.config) == on
        assert create_model("student", **m.config).config == m.config
    assert moved[False] == 0.0 and moved[True] > 1e-4
    with pytest.raises(FacepipeError, match="global_context must be true or false"):
        create_model("student", K, in_channels=4, global_context="no")


def test_student_stem_width_and_relu_after_add_are_recorded_only_when_used():
    """The two settings of the fast default: a stem of its own width, and the context blocks' ReLU after
    the skip's add. Off, they stay out of the config (older checkpoints rebuild unchanged); on, the layer
    names are the same as without them, so `--init` moves weights across."""
    torch.manual_seed(0)
    plain = create_model("student", K, in_channels=4, widths=(8, 16, 32)).eval()
    assert "stem_width" not in plain.config and "relu_after_add" not in plain.config
    m = create_model("student", K, in_channels=4, widths=(8, 16, 32), stem_width=4, relu_after_add=True).eval()
    assert m.config["stem_width"] == 4 and m.config["relu_after_add"] is True
    assert create_model("student", **m.config).config == m.config
    assert m.stem[0].out_channels == 4 and m.down4[0].in_channels == 4 and m.down4[2][0].in_channels == 4
    assert m.state_dict().keys() == plain.state_dict().keys()
    # Each context block is relu(x + block(x)): nothing negative leaves it, and a block whose output is
    # pushed far below zero gives 0 there (the other form would give x back).
    block = m.context[0]
    x = torch.rand(1, 32, 6, 6)
    with torch.no_grad():
        block.block[-1][1].bias.fill_(-1e3)
        assert block(x).abs().max() == 0.0
    assert m(torch.randn(2, 4, 64, 48)).shape == (2, K, 64, 48)
    with pytest.raises(FacepipeError, match="relu_after_add must be true or false"):
        create_model("student", K, in_channels=4, relu_after_add=1)
    for bad in (0, 16.5, True):
        with pytest.raises(FacepipeError, match="stem_width must be a whole number of channels, at least 1"):
            create_model("student", K, in_channels=4, stem_width=bad)
    two = create_model("student", K, in_channels=4, widths=(8, 16, 32), stem_width=4, head_stride=2).eval()
    assert two(torch.randn(1, 4, 32, 32)).shape == (1, K, 32, 32)  # the stride-2 head reads the stem's width
