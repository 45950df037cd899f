"""The Grower's optimizer policy, gradients carried through edits, checks outside autocast, and
warnings at the user's line."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from test_grower import data, small_mlp

from torchgrow import Grower
from torchgrow.errors import GrowthInputError
from torchgrow.how import GradMax, Random
from torchgrow.how.gradmax import GradMaxRankWarning
from torchgrow.ops import OptimizerPolicy
from torchgrow.size import Units
from torchgrow.when import Manual
from torchgrow.where import Layers


def _grower(model, opt, policy=None, how=None, layers=("fc1",), k=2):
    return Grower(
        model,
        opt,
        when=Manual(),
        where=Layers(list(layers)),
        how=how or Random(seed=0, zero_side="in"),
        size=Units(k),
        loss_fn=F.cross_entropy,
        policy=policy,
    )


def _train_step(model, opt, x, y):
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


def test_reset_drops_exactly_the_grown_parameters_state():
    x, y = data()
    model = small_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train_step(model, opt, x, y)
    kept = {n: opt.state[p]["exp_avg"].clone() for n, p in model.named_parameters()}
    _grower(model, opt, OptimizerPolicy(state="reset")).grow((x, y))
    grown = {"fc1.weight", "fc1.bias", "fc2.weight"}  # the unit's producer and consumer
    for n, p in model.named_parameters():
        if n in grown:
            assert p not in opt.state or not opt.state[p]
        else:
            assert torch.equal(opt.state[p]["exp_avg"], kept[n])


def test_rewarm_scales_the_new_entries_updates_and_leaves_the_old_ones():
    """Over 4 steps the new entries move by t/4 of what a plain carry moves them; old entries
    and every other parameter move exactly as without the policy."""
    x, y = data()
    base = small_mlp()
    base_opt = torch.optim.SGD(base.parameters(), lr=0.1)
    _train_step(base, base_opt, x, y)
    runs = {}
    for name, policy in (("plain", None), ("rewarm", OptimizerPolicy(rewarm_steps=4))):
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        _grower(model, opt, policy).grow((x, y))
        before = model.fc1.weight.detach().clone()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()  # the first step after growth: t = 1 of 4
        runs[name] = (before, model.fc1.weight.detach().clone(), model.fc3.weight.detach().clone())
    (b0, a0, o0), (b1, a1, o1) = runs["plain"], runs["rewarm"]
    assert torch.equal(b0, b1)
    new = slice(4, 6)  # fc1's two new rows
    assert torch.allclose(a1[new] - b1[new], 0.25 * (a0[new] - b0[new]), atol=1e-7)
    assert float((a0[new] - b0[new]).abs().max()) > 1e-4  # the new rows do move
    assert torch.allclose(a1[:4], a0[:4], atol=1e-7) and torch.allclose(o1, o0, atol=1e-7)


def test_the_policy_must_be_an_optimizer_policy():
    model = small_mlp()
    with pytest.raises(GrowthInputError, match="OptimizerPolicy, got str"):
        _grower(model, None, policy="reset")


def test_the_accumulated_gradient_follows_the_grown_parameters():
    """Growing between two micro-batches: old entries end with the same accumulated gradient as
    without growth (zero fan-in keeps the function), new entries with the second micro-batch's
    gradient alone (they start from 0)."""
    x, y = data()
    (x1, x2), (y1, y2) = x.chunk(2), y.chunk(2)
    plain = small_mlp()
    F.cross_entropy(plain(x1), y1).backward()
    F.cross_entropy(plain(x2), y2).backward()
    model = small_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    F.cross_entropy(model(x1), y1).backward()
    old_grad = model.fc1.weight.grad
    before = old_grad.clone()
    _grower(model, opt).grow((x, y))
    assert model.fc1.weight.grad.shape == (6, 8) and not model.fc1.weight.grad[4:].any()
    assert torch.equal(old_grad, before)  # the replaced parameter keeps its own gradient
    fresh = copy.deepcopy(model)
    F.cross_entropy(model(x2), y2).backward()
    fresh.zero_grad()
    F.cross_entropy(fresh(x2), y2).backward()
    for name in ("fc1.weight", "fc2.weight"):
        g, p = model.get_parameter(name).grad, plain.get_parameter(name).grad
        old = (slice(0, 4), slice(None)) if name == "fc1.weight" else (slice(None), slice(0, 4))
        assert torch.allclose(g[old], p, atol=1e-6)
    assert torch.allclose(model.fc1.weight.grad[4:], fresh.fc1.weight.grad[4:], atol=1e-7)
    assert float(fresh.fc1.weight.grad[4:].abs().max()) > 0


def test_a_growth_step_is_checked_in_the_models_own_precision_under_autocast():
    """A growth that changes the function (random fan-in and fan-out): the change reported under
    bfloat16 autocast is the float32 one (read in bfloat16 it is 0.0820 against 0.0816)."""
    x, y = data()
    deltas = []
    for autocast in (False, True):
        how = Random(seed=0, zero_side=None, scale=1.0)
        grower = _grower(small_mlp(), None, how=how)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            (event,) = grower.grow((x, y))
        deltas.append(event.max_abs_delta)
    assert deltas[0] > 1e-2 and deltas[1] == pytest.approx(deltas[0], rel=1e-6)


def test_a_library_warning_points_at_the_users_line():
    x, y = data()
    model = small_mlp()
    grower = _grower(model, None, how=GradMax(), k=9)  # more than the 8 directions there are
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grower.grow((x, y))
    ranks = [w for w in caught if issubclass(w.category, GradMaxRankWarning)]
    assert ranks and all(w.filename == __file__ for w in ranks)


@pytest.mark.parametrize("how", ["gradmax", "random"])
def test_transformers_conv1d_grows_as_the_linear_it_is(how):
    """GPT-2's Conv1D stores its weight (in, out); GradMax and Random give it the same new
    weights, transposed, as an equal pair of Linear layers."""
    pytorch_utils = pytest.importorskip("transformers.pytorch_utils")
    from torch import nn

    from torchgrow.nn import ReLU1

    torch.manual_seed(0)
    conv = nn.Sequential(pytorch_utils.Conv1D(6, 4), ReLU1(), pytorch_utils.Conv1D(3, 6))
    lin = nn.Sequential(nn.Linear(4, 6), ReLU1(), nn.Linear(6, 3))
    with torch.no_grad():
        for c, li in ((conv[0], lin[0]), (conv[2], lin[2])):
            li.weight.copy_(c.weight.t())
            li.bias.copy_(c.bias)
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(16, 4, generator=gen), torch.randint(0, 3, (16,), generator=gen)
    events = []
    for model in (conv, lin):
        init = GradMax() if how == "gradmax" else Random(seed=0, zero_side="in")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            events += _grower(model, None, how=init, layers=("0",), k=2).grow((x, y))
    assert torch.allclose(conv[0].weight.t(), lin[0].weight, atol=1e-7)
    assert torch.allclose(conv[2].weight.t(), lin[2].weight, atol=1e-7)
    assert float(conv[2].weight[6:].abs().max()) > 0  # the new fan-out is not zero
    assert events[0].grad_norm_fan_in == pytest.approx(events[1].grad_norm_fan_in, rel=1e-5)
