"""The CPU dropout (tvae.model.dropout): torch's dropout in distribution, from fewer draws."""

import pytest
import torch

from tvae.model.dropout import LEVELS, Dropout, dropout, keep_scale


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_drop_rate_and_scale_match_p(p):
    torch.manual_seed(0)
    mask = keep_scale(torch.Size([400, 1000]), p, torch.float32)  # 400k elements
    dropped = (mask == 0).float().mean().item()
    assert abs(dropped - p) < 4e-3  # binomial sd at 400k draws is <= 8e-4
    kept = mask[mask != 0]
    cut = round(p * LEVELS)
    assert torch.allclose(kept, torch.full_like(kept, LEVELS / (LEVELS - cut)))
    assert abs(mask.mean().item() - 1.0) < 1e-2  # expectation: the identity


def test_lanes_are_independent_across_a_word():
    """The four 16-bit lanes of one draw drop independently: neighbours are uncorrelated."""
    torch.manual_seed(1)
    keep = (keep_scale(torch.Size([200_000, 4]), 0.5, torch.float32) > 0).float()
    both = (keep[:, 0] * keep[:, 1]).mean().item()
    assert abs(both - 0.25) < 5e-3
    assert abs(keep[:, 3].mean().item() - 0.5) < 5e-3  # the top lane is not biased


def test_eval_mode_and_zero_p_are_the_identity():
    x = torch.randn(3, 5, 7)
    layer = Dropout(0.1).eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(dropout(x, 0.0, True), x)


def test_odd_sizes_and_gradients():
    torch.manual_seed(2)
    x = torch.randn(3, 5, 7, requires_grad=True)  # 105 elements: not a multiple of 4 lanes
    layer = Dropout(0.5).train()
    y = layer(x)
    y.sum().backward()
    kept = y.detach() != 0
    assert torch.allclose(y.detach()[kept], x.detach()[kept] * 2, atol=1e-3)
    assert torch.allclose(x.grad, (y.detach() / x.detach()).nan_to_num(0.0), atol=1e-3)
    assert 0 < kept.sum() < 105


def test_seeded_draws_repeat():
    torch.manual_seed(5)
    a = keep_scale(torch.Size([64, 33, 256]), 0.1, torch.float32)
    torch.manual_seed(5)
    b = keep_scale(torch.Size([64, 33, 256]), 0.1, torch.float32)
    assert torch.equal(a, b)


@pytest.mark.parametrize("how", ["mask", "causal", "none"])
def test_cpu_attention_path_is_torchs_attention(how):
    """Without dropout, the step-by-step attention that training on the CPU uses is torch's
    scaled_dot_product_attention; with it, a share p of the weights is dropped."""
    import torch.nn.functional as F

    from tvae.model.modules import attend_with_dropout

    torch.manual_seed(3)
    q, k, v = (torch.randn(2, 4, 5, 8) for _ in range(3))
    mask = torch.rand(2, 1, 5, 5) > 0.4 if how == "mask" else None
    if mask is not None:
        mask |= torch.eye(5, dtype=torch.bool)
    causal = how == "causal"
    expect = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    torch.testing.assert_close(attend_with_dropout(q, k, v, mask, causal, 0.0), expect)
    torch.manual_seed(4)
    weights = attend_with_dropout(torch.zeros(1, 1, 200, 8), torch.zeros(1, 1, 200, 8),
                                  torch.eye(200)[None, None], None, False, 0.25)
    dropped = (weights == 0).float().mean().item()
    assert weights.shape == (1, 1, 200, 200) and abs(dropped - 0.25) < 0.01


def test_traced_by_torch_compile_takes_torchs_dropout(monkeypatch):
    """Under torch.compile the cheap CPU mask (a draw sized by the batch's shape, which dynamo
    cannot trace with dynamic shapes: `tvae train --compile` failed on the CPU) gives way to
    torch's own dropout; outside it the cheap mask is used."""
    import torch.nn.functional as F

    from tvae.model import dropout as module

    calls, torch_dropout = [], F.dropout

    def spy(x, p, training):
        calls.append(p)
        return torch_dropout(x, p, training)

    monkeypatch.setattr(module.F, "dropout", spy)
    x = torch.ones(8, 16)
    module.dropout(x, 0.1, True)
    assert calls == []  # eager CPU: the cheap mask
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    module.dropout(x, 0.1, True)
    assert calls == [0.1]
