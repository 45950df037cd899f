"""GradMax on a transformer's FFN (torchgrow's extension): zero fan-in, fan-out from the SVD."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchgrow import methods, models, ops
from torchgrow.errors import GrowthInputError
from torchgrow.ops.optim_state import check_consistent

VOCAB, T = 11, 8


def _setup(**kw):
    torch.manual_seed(0)
    model = models.gpt(VOCAB, context=T, n_layer=2, d_model=16, n_head=2, d_ff=24, **kw)
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, VOCAB, (6, T), generator=gen)
    y = torch.randint(0, VOCAB, (6, T), generator=gen)
    return model, x, y


def _loss(model, x, y):
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def _new_fan_in_grad_norms(model, x, y, k):
    model.zero_grad()
    _loss(model, x, y).backward()
    return [b.mlp.up.weight.grad[-k:].norm(dim=1) for b in model.blocks]


def test_gradmax_fan_out_keeps_the_function_and_maximises_the_new_units_gradient():
    model, x, y = _setup()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _loss(model, x, y).backward()
    opt.step()
    grads_before = {n: p.grad.clone() for n, p in model.named_parameters()}
    before = model(x).detach()
    k = 3
    records = methods.gradmax_ffn(model, lambda: _loss(model, x, y), k, optimizer=opt, example=x)
    # the growth's own backward leaves the parameters' .grad as they were
    for n, p in model.named_parameters():
        if "mlp" not in n:  # the FFN's parameters were replaced (grown)
            assert torch.equal(p.grad, grads_before[n]), n
    assert (model(x) - before).abs().max() <= 1e-6  # zero fan-in: GELU(0) = 0
    assert [r.details["max_abs_dout"] for r in records] == [0.0, 0.0]
    check_consistent(model, opt)
    norms = _new_fan_in_grad_norms(model, x, y, k)
    for b, r, got in zip(model.blocks, records, norms, strict=True):
        fan_out = b.mlp.down.weight.detach()[:, -k:]
        radius = fan_out.norm(dim=0)
        sv = torch.tensor(r.details["singular_values"], dtype=torch.float32)
        # the closed form: each new unit's fan-in gradient is GELU'(0) * r * sigma_i
        torch.testing.assert_close(got, 0.5 * radius * sv, rtol=1e-3, atol=1e-7)
    # and no fan-out of the same norms does better than the top singular directions
    model2, _, _ = _setup()
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-3)
    _loss(model2, x, y).backward()
    opt2.step()
    gen = torch.Generator().manual_seed(0)
    for i, b in enumerate(model.blocks):
        rand = torch.randn(16, k, generator=gen)
        rand = rand / rand.norm(dim=0) * b.mlp.down.weight.detach()[:, -k:].norm(dim=0)
        ops.grow_ffn(model2, k, block=i, fan_in="zero", fan_out=rand, example=x)
    random_norms = _new_fan_in_grad_norms(model2, x, y, k)
    assert sum(float(n.pow(2).sum()) for n in norms) > sum(
        float(n.pow(2).sum()) for n in random_norms
    )


def test_gradmax_ffn_grows_one_block_and_refuses_what_it_cannot_grow():
    model, x, y = _setup()
    methods.gradmax_ffn(model, lambda: _loss(model, x, y), 2, block=-1, example=x)
    assert [b.mlp.up.out_features for b in model.blocks] == [24, 26]
    gated, x, y = _setup(mlp="swiglu")
    state = {n: p.clone() for n, p in gated.state_dict().items()}
    with pytest.raises(GrowthInputError, match="gated"):
        methods.gradmax_ffn(gated, lambda: _loss(gated, x, y), 2)
    with pytest.raises(GrowthInputError, match="block"):
        methods.gradmax_ffn(model, lambda: _loss(model, x, y), 2, block=5)
    assert all(torch.equal(state[n], p) for n, p in gated.state_dict().items())
