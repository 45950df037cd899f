"""Subnormal optimizer state: a grown unit that dies leaves momentum stalled in the subnormals.

``flush_subnormal_state`` sets those entries to 0 and nothing else; the Grower
does it every ``flush_subnormals_every`` steps once the model has grown.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchgrow import Grower
from torchgrow.how import Zero
from torchgrow.ops import flush_subnormal_state
from torchgrow.when import Every

TINY = torch.finfo(torch.float32).tiny


def _subnormal(opt: torch.optim.Optimizer) -> int:
    n = 0
    for st in opt.state.values():
        for v in st.values():
            if torch.is_tensor(v) and v.dim() > 0:
                n += int(((v != 0) & (v.abs() < TINY)).sum())
    return n


def _train(flush_every: int | None, steps: int = 1000) -> tuple[nn.Module, torch.optim.SGD]:
    """Feature 0 of the input is live for 10 steps, then always 0: the momentum of fc1's
    column 0 decays by 0.9 per step into the subnormals and stalls there."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    grower = Grower(
        model, opt, when=Every(1, times=1), how=Zero(), flush_subnormals_every=flush_every
    )
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        x = torch.randn(16, 4, generator=gen)
        if step >= 10:
            x[:, 0] = 0
        y = torch.randn(16, 2, generator=gen)
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        grower.step((x, y))
    return model, opt


def test_momentum_of_a_unit_without_gradient_stalls_in_the_subnormals():
    model, opt = _train(flush_every=None)
    col = opt.state[model[0].weight]["momentum_buffer"][:8, 0]  # row 8: the grown unit (0)
    assert torch.equal(col.abs(), torch.full((8,), 4 * 2.0**-149)), col  # stalled at 5.6e-45
    assert _subnormal(opt) >= 8


def test_the_grower_flushes_them_and_training_is_otherwise_the_same():
    model, opt = _train(flush_every=100)
    assert _subnormal(opt) == 0
    ref, ref_opt = _train(flush_every=None)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        # the flushed entries were below 1.2e-38: lr * momentum cannot move a weight visibly
        assert torch.allclose(p, q, rtol=0, atol=1e-30)


def test_flush_sets_only_subnormals_to_zero_and_counts_them():
    p = nn.Parameter(torch.zeros(6))
    opt = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.ones(6)
    opt.step()
    st = opt.state[p]
    values = torch.tensor([1e-3, -2e-40, 5.6e-45, 0.0, -1.0, TINY])
    st["exp_avg"].copy_(values)
    st["exp_avg_sq"].copy_(values.abs())
    step = st["step"].clone()
    assert flush_subnormal_state(opt) == 4  # two subnormals in each moment
    expected = torch.tensor([1e-3, 0.0, 0.0, 0.0, -1.0, TINY])
    assert torch.equal(st["exp_avg"], expected)
    assert torch.equal(st["exp_avg_sq"], expected.abs())
    assert torch.equal(st["step"], step)
    assert flush_subnormal_state(opt) == 0 and flush_subnormal_state(None) == 0


def test_flush_subnormals_every_is_validated():
    model = nn.Linear(2, 2)
    try:
        Grower(model, None, when=Every(1), flush_subnormals_every=0)
    except Exception as exc:  # noqa: BLE001
        assert "flush_subnormals_every" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("flush_subnormals_every=0 was accepted")
