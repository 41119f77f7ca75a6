"""models.widen: a narrower network of the same arch loaded into a wider one computes the same function.
models.narrow: the other way, the leading channels of every layer."""
import torch
from torch import nn

from facepipe.models import create_model
from facepipe.models.narrow import narrow
from facepipe.models.widen import widen


def test_widened_student_gives_the_same_outputs_and_its_new_channels_can_learn():
    torch.manual_seed(0)
    narrow = create_model("student", num_classes=6, in_channels=4, widths=(8, 16, 32))
    narrow.train()
    with torch.no_grad():  # BatchNorm statistics that are not the defaults, so that they must be copied
        for _ in range(3):
            narrow(torch.randn(2, 4, 64, 64))
    wide = create_model("student", num_classes=6, in_channels=4, widths=(12, 24, 48))
    assert widen(narrow, wide, in_channels=4)
    narrow.eval(), wide.eval()
    x = torch.randn(3, 4, 96, 80)
    with torch.no_grad():
        assert (wide(x) - narrow(x)).abs().max() < 1e-5
    # The zeros where old channels read new ones must not stay zero: their gradient is not.
    wide.train()
    wide(torch.randn(2, 4, 64, 64)).square().mean().backward()
    g = wide.classifier.weight.grad
    assert g[:, 16:].abs().sum() > 0 and wide.classifier.weight[:, 16:].abs().sum() == 0


def test_widen_refuses_what_it_cannot_make_exact():
    # The teacher's refine stage concatenates features with the input: old and new channels interleave.
    a = create_model("teacher", num_classes=6, in_channels=4, width=8, refine=4)
    b = create_model("teacher", num_classes=6, in_channels=4, width=12, refine=4)
    assert not widen(a, b, in_channels=4)
    # Narrower than the source, or another network altogether.
    assert not widen(create_model("student", num_classes=6, in_channels=4, widths=(12, 24, 48)),
                     create_model("student", num_classes=6, in_channels=4, widths=(8, 16, 32)), in_channels=4)
    assert not widen(nn.Sequential(nn.Conv2d(4, 4, 1)), nn.Sequential(nn.Conv2d(4, 8, 1), nn.ReLU()), in_channels=4)


def test_narrow_takes_the_leading_channels_and_undoes_a_widening():
    torch.manual_seed(0)
    small = create_model("student", num_classes=6, in_channels=4, widths=(8, 16, 32))
    small.train()
    with torch.no_grad():
        for _ in range(3):
            small(torch.randn(2, 4, 64, 64))
    wide = create_model("student", num_classes=6, in_channels=4, widths=(12, 24, 48))
    assert widen(small, wide, in_channels=4)
    back = create_model("student", num_classes=6, in_channels=4, widths=(8, 16, 32))
    assert narrow(wide, back)
    for k, v in small.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    # Only the stem narrower (the fast default's cut): its first channels, and the columns reading them.
    cut = create_model("student", num_classes=6, in_channels=4, widths=(12, 24, 48), stem_width=6)
    assert narrow(wide, cut)
    assert torch.equal(cut.stem[0].weight, wide.stem[0].weight[:6])
    assert torch.equal(cut.down4[2][0].weight, wide.down4[2][0].weight[:, :6])
    assert torch.equal(cut.context[0].block[-1][0].weight, wide.context[0].block[-1][0].weight)


def test_narrow_refuses_a_wider_layer_or_other_names():
    a = create_model("student", num_classes=6, in_channels=4, widths=(8, 16, 32))
    b = create_model("student", num_classes=6, in_channels=4, widths=(4, 16, 64))  # one narrower, one wider
    before = {k: v.clone() for k, v in b.state_dict().items()}
    assert not narrow(a, b)
    assert all(torch.equal(before[k], v) for k, v in b.state_dict().items())  # nothing half-loaded
    assert not narrow(nn.Sequential(nn.Conv2d(4, 8, 1)), nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 1)))
