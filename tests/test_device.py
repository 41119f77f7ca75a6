"""Mixed precision choice and its effect on one training step."""
import pytest
import torch

from facepipe.models import create_model
from facepipe.util.device import amp_dtype, channels_last


def test_bf16_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("FACEPIPE_CPU_BF16", "0")
    assert amp_dtype(torch.device("cpu")) is None
    assert amp_dtype(torch.device("cuda")) == torch.float16


def test_channels_last_keeps_values():
    x = torch.randn(2, 3, 8, 8)
    y = channels_last(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, y)
    assert channels_last(torch.zeros(3)).shape == (3,)


@pytest.mark.skipif(amp_dtype(torch.device("cpu")) is None, reason="this CPU has no native bf16")
def test_bf16_step_follows_the_fp32_step():
    # A bf16 forward pass must give nearly the fp32 loss and gradients pointing the same way; a broken
    # cast (e.g. logits left in bf16 through the softmax) shows up as a larger gap.
    torch.manual_seed(0)
    m = channels_last(create_model("teacher-small", 6, 4))
    x, y = channels_last(torch.randn(2, 4, 64, 64)), torch.randint(0, 6, (2, 64, 64))
    losses, grads = [], []
    for on in (False, True):
        m.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=on):
            logits = m(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    assert abs(losses[0] - losses[1]) < 0.01 * losses[0]
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], 0) > 0.98
