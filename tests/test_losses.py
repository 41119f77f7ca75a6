import pytest
import torch
import torch.nn.functional as F

from facepipe.learn.losses import CenterLoss, SCLoss, build_criterion, closest_pair, subspace_dist2
from facepipe.util.errors import FacepipeError


def toy(seed=0, n=1, k=3, d=4, h=4, w=4, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    target = torch.arange(h * w).reshape(1, h, w).repeat(n, 1, 1) % k
    feats = torch.randn(n, d, h, w, generator=g, dtype=dtype)
    return feats, target


def fixed_centers(loss, centers):
    loss.centers.copy_(centers)
    loss.seen[:] = True
    return loss


@pytest.mark.parametrize("variant", ["closest", "all"])
def test_gradient_matches_finite_differences(variant):
    feats, target = toy()
    target[0, 0, 0] = 255
    centers = torch.tensor([[0.0, 0.1, 0, 0], [0.3, 0.5, 0, 0], [0, 0, 0.9, 0]], dtype=torch.float64)
    loss = fixed_centers(SCLoss(3, 4, lam=1.0, margin=4.0, warmup=0, variant=variant).double(), centers)
    _, parts = loss(feats, target, update=False)
    assert parts["inter"] > 0  # the hinge is active, so its gradient is checked too
    feats.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: loss(f, target, update=False)[0], (feats,))
    assert torch.equal(loss.centers, centers)  # update=False leaves them alone


def test_intra_is_half_mean_squared_distance():
    feats, target = toy()
    centers = torch.randn(3, 4, dtype=torch.float64)
    loss = fixed_centers(CenterLoss(3, 4, lam=1.0, warmup=0).double(), centers)
    value, parts = loss(feats, target, update=False)
    x = feats[0].permute(1, 2, 0).reshape(-1, 4)
    expected = ((x - centers[target.reshape(-1)]) ** 2).sum() / (2 * len(x))
    assert value.item() == pytest.approx(expected.item()) and parts["inter"] == 0


def test_centers_converge_to_class_means():
    feats, target = toy(n=2, d=3)
    feats = feats + 5 * F.one_hot(target, 3).permute(0, 3, 1, 2)  # separable clusters
    loss = SCLoss(3, 3, warmup=10**6).double().train()
    for _ in range(60):
        loss(feats, target)
    x = feats.permute(0, 2, 3, 1).reshape(-1, 3)
    means = torch.stack([x[target.reshape(-1) == j].mean(0) for j in range(3)])
    assert torch.allclose(loss.centers, means, atol=1e-8)
    assert int(loss.iteration) == 60 and loss.seen.all()


def test_warmup_returns_zero_then_the_loss():
    feats, target = toy()
    loss = SCLoss(3, 4, warmup=2).double().train()
    for _ in range(2):
        value, parts = loss(feats, target)
        assert value.item() == 0 and parts["sc"] == 0
    value, _ = loss(feats, target)
    assert value.item() > 0


def test_closest_pair_uses_the_two_classes_own_axes():
    centers = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 10], [0, 0, 2, 0]])
    everyone = torch.ones(3, dtype=torch.bool)
    sub = subspace_dist2(centers)
    assert sub[0, 1] == 2 and sub[0, 2] == 5 and sub[1, 2] == 5
    assert closest_pair(sub, everyone) == (0, 1)
    assert closest_pair(torch.cdist(centers, centers) ** 2, everyone) == (0, 2)  # axis 3 counts there
    assert closest_pair(sub, torch.tensor([True, False, True])) == (0, 2)
    assert closest_pair(sub, torch.tensor([True, False, False])) is None


def test_closest_variant_hinges_the_closest_pair():
    centers = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 10], [0, 0, 2, 0]], dtype=torch.float64)
    loss = fixed_centers(SCLoss(3, 4, lam=1.0, margin=3.0, warmup=0, alpha=0.0).double(), centers)
    feats, target = toy()
    _, parts = loss(feats, target, update=False)  # alpha=0: centers do not move with this batch
    assert loss.last_pair == (0, 1) and parts["inter"].item() == pytest.approx(3.0 - 2.0)
    loss.variant = "all"
    _, parts = loss(feats, target, update=False)
    assert parts["inter"].item() == pytest.approx(1.0 + 0 + 0)


def test_ignored_pixels_change_nothing():
    feats, target = toy()
    ignored = target.clone()
    ignored[0, :, 0] = 255
    poisoned = feats.clone()
    poisoned[0, :, :, 0] = 1e6
    a = SCLoss(3, 4, warmup=0).double().train()
    b = SCLoss(3, 4, warmup=0).double().train()
    kept = (slice(None), slice(None), slice(1, None))
    for _ in range(3):
        va, _ = a(poisoned, ignored)
        vb, _ = b(feats[..., 1:].contiguous(), target[kept].contiguous())
    assert va.item() == pytest.approx(vb.item()) and torch.allclose(a.centers, b.centers)


def test_labels_are_nearest_resampled_to_the_feature_map():
    feats, _ = toy(h=4, w=4)
    target = torch.arange(64).reshape(1, 8, 8) % 3
    loss = CenterLoss(3, 4, warmup=0, lam=1.0).double().eval()
    fine, _ = loss(feats, target)
    coarse, _ = loss(feats, target[:, ::2, ::2].contiguous())
    assert fine.item() == pytest.approx(coarse.item())


def test_hard_aware_updates_centers_from_easy_pixels_only():
    feats = torch.zeros(1, 2, 1, 4, dtype=torch.float64)
    feats[0, 0] = torch.tensor([1.0, 1.0, 9.0, 9.0])
    target = torch.zeros(1, 1, 4, dtype=torch.long)
    ce = torch.tensor([[[0.1, 0.1, 2.0, 2.0]]], dtype=torch.float64)
    loss = CenterLoss(2, 2, alpha=1.0, hard_aware=True).double().train()
    loss(feats, target, ce=ce)
    assert loss.centers[0, 0].item() == pytest.approx(2 / 3)  # (0 - 0) - ((2*0 - 2) / 3)


@pytest.mark.parametrize("kind", ["ce", "center", "sc", "sc-all", "range"])
def test_build_criterion(kind):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    feats = torch.randn(2, 4, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, 0] = 255
    crit = build_criterion(kind, 3, 4, warmup=0) if kind != "ce" else build_criterion(kind, 3, 4)
    total, parts = crit(logits, feats, target)
    assert parts["ce"].item() == pytest.approx(F.cross_entropy(logits, target, ignore_index=255).item())
    assert parts["total"] == total.detach() and all(v.ndim == 0 for v in parts.values())
    total.backward()
    assert (kind == "ce") == (feats.grad is None)
    if kind != "ce":
        assert total.item() > parts["ce"].item()
        assert "extra.centers" in crit.state_dict()


def test_unknown_criterion():
    with pytest.raises(FacepipeError, match="sc-all"):
        build_criterion("focal", 3)
