import pytest
from torch import nn

from facepipe.analysis.receptive_field import best_dilations, layer_table, receptive_field, rnorm
from facepipe.util.errors import FacepipeError


def conv(k=3, s=1, d=1, cin=2, cout=2, groups=1):
    return nn.Conv2d(cin, cout, k, s, d * (k - 1) // 2, dilation=d, groups=groups)


class TwoBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.small = conv()
        self.large = nn.Sequential(conv(), nn.ReLU(), conv(d=3))  # 3 + 6 = 9

    def forward(self, x):
        return self.small(x) + self.large(x)


HAND = [
    (nn.Sequential(conv()), 3),
    (nn.Sequential(conv(), conv()), 5),
    (nn.Sequential(conv(s=2), conv()), 7),
    (nn.Sequential(conv(d=2)), 5),
    (nn.Sequential(conv(), nn.ReLU(), nn.MaxPool2d(2), conv()), 8),  # 3, +1, +2*2
]


@pytest.mark.parametrize("net, r", HAND)
def test_hand_computed(net, r):
    assert layer_table(net)[-1]["r"] == r
    assert receptive_field(net)["r"] == r


def test_larger_branch_decides():
    assert receptive_field(TwoBranch())["r"] == 9


SEQUENTIAL = [
    [conv(7, 2), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(3, 2, 1), conv(), conv(s=2), conv(d=2)],
    [conv(5), nn.AvgPool2d(2), conv(d=4), conv(s=2), conv(1), conv(3, d=3)],
    [conv(3, 2), conv(3, 2), conv(3, 2), conv(d=2), conv(d=4), conv(d=8)],
    [conv(groups=2), nn.GELU(), conv(5, 2, groups=2), conv(d=2)],  # grouped: full-width path
]


@pytest.mark.parametrize("layers", SEQUENTIAL)
def test_gradient_agrees_with_layer_table(layers):
    net = nn.Sequential(*layers)
    rows = layer_table(net)
    assert rows[-1]["r"] == 1 + sum((r["dilation"] * (r["k"] - 1)) * r["jump"] for r in rows)
    assert receptive_field(net)["r"] == rows[-1]["r"]


def test_layer_table_rows():
    rows = layer_table(nn.Sequential(conv(s=2), nn.MaxPool2d(2), conv(d=2)))
    assert [(r["jump"], r["r"]) for r in rows] == [(1, 3), (2, 5), (4, 21)]


def test_collapsed_and_full_width_agree_on_a_real_model():
    from facepipe.models import create_model

    model = create_model("teacher-small", 3, dilations=(1, 2))
    fast = receptive_field(model, probes=2, collapse=True)
    full = receptive_field(model, probes=2, collapse=False)
    assert fast["r"] == full["r"] and not fast["clipped"]


def test_teacher_r_follows_the_context_dilations():
    # Each context conv sits at stride 8: one more unit of dilation adds (3 - 1) * 8 = 16 pixels.
    base = rnorm("teacher-small", 256, dilations=(1, 1, 1, 1))
    wider = rnorm("teacher-small", 256, dilations=(1, 2, 4, 8))
    assert wider["r"] - base["r"] == 16 * (15 - 4)
    default = rnorm("teacher-small", 256)
    assert default["r"] == 315 and default["r_norm"] == pytest.approx(315 / 256)


def test_bisenet_has_a_finite_local_field_plus_global_context():
    out = rnorm("bisenet-r18", 256, probes=1)
    assert out["global_context"] and not out["clipped"]
    assert out["r"] > 435  # the ResNet-18 stride-32 features alone see 435 pixels


def test_clipped_when_the_cap_is_too_small():
    out = receptive_field(nn.Sequential(conv(s=2), conv(s=2), conv(d=8)), start=32, cap=64)
    assert out["clipped"]


def test_best_dilations_picks_the_closest():
    cands = [(1, 1, 1, 1), (1, 2, 4, 8), (2, 4, 8, 16)]  # r = 139, 315, 555
    out = best_dilations("teacher-small", 256, target=1.1, candidates=cands)
    assert out["dilations"] == (1, 2, 4, 8) and out["r"] == 315 and len(out["table"]) == 3


def test_best_dilations_needs_a_dilations_setting():
    with pytest.raises(FacepipeError):
        best_dilations("bisenet-r18", 256, 1.0, candidates=[(1,)])


def test_best_dilations_ranks_with_the_exact_r_of_every_candidate():
    # the analytic-plus-offset ranking must give the r an exact measurement gives, for each candidate
    cands = [(1, 1, 1), (1, 2, 4), (2, 4, 8), (4, 4, 4), (1, 8, 8)]
    out = best_dilations("student-tiny", 128, target=1.5, candidates=cands)
    for row in out["table"]:
        assert row["r"] == rnorm("student-tiny", 128, dilations=row["dilations"])["r"]
    assert out["dilations"] == min(out["table"], key=lambda t: abs(t["r_norm"] - 1.5))["dilations"]
