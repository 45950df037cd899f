"""The engine: triggers, statistics, events, atomic growth steps."""

from __future__ import annotations

import warnings
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchgrow
from torchgrow import Grower
from torchgrow.errors import GrowthInputError
from torchgrow.graph import growable_units
from torchgrow.how import How, Init, Random, Zero
from torchgrow.nn import ReLU1
from torchgrow.ops import check_consistent
from torchgrow.size import Units
from torchgrow.stats import CONSUMER_GRAD, PRODUCER_INPUT, gather
from torchgrow.when import Every, Manual, Plateau
from torchgrow.where import Layers, RoundRobin


def small_mlp(act=ReLU1) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(8, 4), a1=act(), fc2=nn.Linear(4, 4), a2=act(), fc3=nn.Linear(4, 3)
        )
    )


def data(n=64):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def train(model, opt, grower, steps, x, y):
    events = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        events += grower.step((x, y))
    return events


def test_grows_on_schedule_with_events_and_consistent_optimizer():
    model = small_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    grower = Grower(model, opt, when=Every(5, start=5, times=2), how=Random(seed=0), size=Units(3))
    x, y = data()
    events = train(model, opt, grower, 20, x, y)
    assert [(e.step, e.unit) for e in events] == [(5, "fc1"), (5, "fc2"), (10, "fc1"), (10, "fc2")]
    assert model.fc1.out_features == 10 and model.fc2.out_features == 10
    for e in events:
        assert e.units_added == 3 and e.width_after == e.width_before + 3
        assert e.params_after > e.params_before
        assert e.max_abs_delta <= 1e-6  # zero fan-in: function preserved
        assert e.grad_norm_fan_in > 0  # ReLU1: the new fan-in receives gradient
    check_consistent(model, opt)


def test_step_counts_and_state_dict_roundtrip():
    model = small_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    grower = Grower(model, opt, when=Every(3, times=1), where=RoundRobin(), how=Zero())
    x, y = data()
    train(model, opt, grower, 4, x, y)
    state = grower.state_dict()
    assert state["step"] == 4 and state["events_count"] == 1 and len(state["events"]) == 1
    clone = Grower(model, opt, when=Every(3, times=1), where=RoundRobin(), how=Zero())
    clone.load_state_dict(state)
    assert clone.state.step == 4 and clone.where.position == 1
    assert clone.events[0].unit == grower.events[0].unit


def test_dead_relu_warning_and_no_gradient_into_new_units():
    model = small_mlp(act=nn.ReLU)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    grower = Grower(model, opt, when=Manual(), where=Layers(["fc1"]), how=Random(seed=0))
    x, y = data()
    with pytest.warns(torchgrow.ops.DeadUnitWarning, match="never train"):
        (ev,) = grower.grow((x, y))
    assert ev.grad_norm_fan_in == 0.0  # the failure mode the warning is about


def test_trigger_without_batch_is_a_clear_error():
    model = small_mlp()
    grower = Grower(model, None, when=Every(1))
    with pytest.raises(GrowthInputError, match="no growth batch"):
        grower.step()


class Exploding(How):
    """Returns a valid init for the first unit, a wrongly shaped one for the second."""

    def init(self, unit, k, stats, model):
        if unit.name == "fc2":
            return Init(fan_out={"fc3": torch.ones(1, 1)})
        return Init()


def test_failed_growth_step_is_rolled_back():
    model = small_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = data()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shapes = {k: v.shape for k, v in before.items()}
    grower = Grower(model, opt, when=Manual(), how=Exploding(), size=Units(2))
    with pytest.raises(GrowthInputError, match="fan_out"):
        grower.grow((x, y))
    after = model.state_dict()
    assert {k: v.shape for k, v in after.items()} == shapes
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert grower.state.events == 0 and not grower.events
    check_consistent(model, opt)


def test_gather_collects_only_what_is_needed_and_has_no_side_effects():
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(fc1=nn.Linear(8, 5), bn=nn.BatchNorm1d(5), a=ReLU1(), fc2=nn.Linear(5, 3))
    )
    x, y = data()
    units = growable_units(model)
    buffers = [b.clone() for b in model.buffers()]
    stats = gather(model, (x, y), F.cross_entropy, units, {PRODUCER_INPUT, CONSUMER_GRAD})
    assert torch.equal(stats.producer_inputs["fc1"], x)
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers(), strict=True))
    # gradient at fc2's output equals the autograd gradient of the loss w.r.t. the logits
    logits = model(x).detach().requires_grad_()  # train mode, as gather ran
    (expected,) = torch.autograd.grad(F.cross_entropy(logits, y), logits)
    assert torch.allclose(stats.consumer_grads["fc2"], expected, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())
    only = gather(model, (x, y), F.cross_entropy, units, {PRODUCER_INPUT})
    assert not only.consumer_grads


def test_gather_refuses_nan_statistics():
    model = small_mlp()
    x, y = data()
    x[0, 0] = float("nan")
    with pytest.raises(GrowthInputError, match="NaN"):
        gather(model, (x, y), F.cross_entropy, growable_units(model), {PRODUCER_INPUT})


def test_plateau_driven_growth():
    model = small_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    grower = Grower(model, opt, when=Plateau("val_loss", patience=2), how=Zero())
    x, y = data()
    for v in [1.0, 1.0]:
        grower.observe(val_loss=v)
        assert grower.step((x, y)) == []
    grower.observe(val_loss=1.0)
    events = grower.step((x, y))
    assert {e.unit for e in events} == {"fc1", "fc2"}


def test_grown_network_trains_new_units_and_keeps_learning():
    """Grown units with zero fan-in move away from zero once training resumes (ReLU1)."""
    model = small_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    grower = Grower(model, opt, when=Every(10, times=1), where=Layers(["fc1"]), how=Random(seed=0))
    x, y = data()
    train(model, opt, grower, 10, x, y)
    assert model.fc1.out_features == 5
    new_row = model.fc1.weight[4].detach().clone()
    assert torch.count_nonzero(new_row) == 0
    train(model, opt, grower, 5, x, y)
    assert torch.count_nonzero(model.fc1.weight[4]) > 0


@pytest.mark.parametrize("zero_side", ["out", None, "in"])
def test_all_at_once_with_adjacent_units_pads_later_blocks(zero_side):
    """fc1's growth adds inputs to fc2; fc2's init (computed before the step) is padded with zeros."""
    model = small_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = data()
    y0 = model(x).detach()
    grower = Grower(
        model, opt, when=Manual(), how=Random(zero_side=zero_side, seed=0), size=Units(2)
    )
    events = grower.grow((x, y))
    assert [e.unit for e in events] == ["fc1", "fc2"]
    assert model.fc2.weight.shape == (6, 6)
    # the weights between fc1's new units and fc2's new units are zero
    assert torch.count_nonzero(model.fc2.weight[4:, 4:]) == 0
    if zero_side is not None:
        assert (model(x) - y0).abs().max() <= 1e-6
    check_consistent(model, opt)


def test_all_at_once_on_a_resnet_with_residual_groups():
    from torchgrow import models

    torch.manual_seed(0)
    model = models.cifar_resnet((1, 1, 1), (4, 8, 8), in_channels=1, activation="relu1").eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.rand(4, 1, 12, 12), torch.tensor([0, 1, 2, 3])
    y0 = model(x).detach()
    n_units = len(growable_units(model))
    assert n_units == 6  # stem+stage1 stream, stage2 stream, stage3 stream, three inner convs
    grower = Grower(model, opt, when=Manual(), how=Random(seed=0), size=Units(2))
    events = grower.grow((x, y))
    assert len(events) == n_units
    assert max(e.max_abs_delta for e in events) <= 1e-6
    assert (model(x) - y0).abs().max() <= 1e-6
    check_consistent(model, opt)


def _one_step(model, how, measure, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    grower = Grower(model, opt, when=Every(1, times=1), how=how, size=Units(2), measure=measure)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GELU's and ReLU's notices are not what is tested here
        return grower.step((x, y))


def _conv_pair(bn: bool = False, batch_stats: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [nn.Conv2d(2, 4, 3, padding=1)]
    layers += [nn.BatchNorm2d(4).train(batch_stats)] if bn else []
    layers += [ReLU1(), nn.Conv2d(4, 3, 3, stride=2), nn.Flatten()]
    return nn.Sequential(*layers)


@pytest.mark.parametrize(
    "build,shape,exact",
    [
        (small_mlp, (8,), True),  # ReLU1 between dense pairs: the closed form is the gradient
        (lambda: small_mlp(nn.GELU), (8,), False),  # GELU'(0) = 1/2: measured instead
        (_conv_pair, (2, 7, 7), True),
        (lambda: _conv_pair(bn=True), (2, 7, 7), True),  # a BatchNorm between: closed form too
        (lambda: _conv_pair(bn=True, batch_stats=True), (2, 7, 7), True),  # with batch statistics
    ],
)
def test_gradmax_gradient_norms_are_exact_without_the_measuring_backward(build, shape, exact):
    from torchgrow.how import GradMax

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, *shape, generator=g)
    y = torch.randn_like(build()(x)).detach()
    cheap = _one_step(build(), GradMax(), True, x, y)
    full = _one_step(build(), GradMax(), "full", x, y)
    assert len(cheap) == len(full) > 0
    for a, b in zip(cheap, full, strict=True):
        assert ("grad_norm_fan_in" in a.info) == exact
        assert b.grad_norm_fan_in > 0
        assert a.grad_norm_fan_in == pytest.approx(b.grad_norm_fan_in, rel=1e-4)
        assert a.grad_norm_fan_out == pytest.approx(b.grad_norm_fan_out, abs=1e-6)
        assert a.max_abs_delta <= 1e-6 and b.max_abs_delta <= 1e-6  # zero fan-in preserves


def test_only_the_units_without_exact_norms_are_measured(monkeypatch):
    """fc1 (ReLU1 after it) has its norms from the closed form, fc2 (GELU after it) has not:
    the measuring backward is asked for fc2 alone, and both agree with measuring everything."""
    from torchgrow.how import GradMax

    def build():
        torch.manual_seed(0)
        return nn.Sequential(OrderedDict(fc1=nn.Linear(8, 4), a1=ReLU1(), fc2=nn.Linear(4, 4),
                                         a2=nn.GELU(), fc3=nn.Linear(4, 3)))  # fmt: skip

    import torchgrow.grower as engine

    measured: list[list[str]] = []
    real = engine.measure_gradients

    def spy(model, events, *args):
        measured.append([e.unit for e in events])
        return real(model, events, *args)

    monkeypatch.setattr(engine, "measure_gradients", spy)
    x, y = data()
    cheap = _one_step(build(), GradMax(), True, x, y)
    assert measured == [["fc2"]]
    full = _one_step(build(), GradMax(), "full", x, y)
    assert measured[1] == ["fc1", "fc2"]
    assert [e.unit for e in cheap] == ["fc1", "fc2"]
    assert "grad_norm_fan_in" in cheap[0].info and "grad_norm_fan_in" not in cheap[1].info
    for a, b in zip(cheap, full, strict=True):
        assert b.grad_norm_fan_in > 0
        assert a.grad_norm_fan_in == pytest.approx(b.grad_norm_fan_in, rel=1e-4)
        assert a.grad_norm_fan_out == pytest.approx(b.grad_norm_fan_out, abs=1e-6)


def test_output_change_is_read_on_the_first_rows_of_the_growth_batch():
    """A growth that changes the function: the change reported is the largest over the first
    rows (the forward that verifies the step computes it); "full" reads it on the whole batch."""
    from torchgrow.grower import EXAMPLE_ROWS

    x, y = data()

    def how():
        return Random(scale=1.0, zero_side=None, seed=0)

    cheap = _one_step(small_mlp(), how(), True, x, y)[0]
    full = _one_step(small_mlp(), how(), "full", x, y)[0]
    grown = small_mlp()
    _one_step(grown, how(), False, x, y)
    with torch.no_grad():
        moved = (grown(x) - small_mlp()(x)).abs().amax(dim=1)
    assert cheap.max_abs_delta == pytest.approx(float(moved[:EXAMPLE_ROWS].max()), rel=1e-5)
    assert full.max_abs_delta == pytest.approx(float(moved.max()), rel=1e-5)
    assert 0 < cheap.max_abs_delta <= full.max_abs_delta


def test_measure_is_validated():
    with pytest.raises(GrowthInputError, match="measure"):
        Grower(small_mlp(), None, when=Every(1), measure="fast")


def _pooled_pair(bn: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [nn.Conv2d(2, 4, 3, padding=1)]
    layers += [nn.BatchNorm2d(4)] if bn else []  # training mode: batch statistics
    layers += [ReLU1(), nn.MaxPool2d(2), nn.Conv2d(4, 3, 3), nn.Flatten()]
    return nn.Sequential(*layers)


@pytest.mark.parametrize(("map_blocks", "solver"), [(0, "iterative"), (4, "map")])
@pytest.mark.parametrize("bn", [False, True])
def test_iterative_gradmax_reports_the_gradient_norm_it_computed(bn, map_blocks, solver):
    """Through a max pool (and a training-mode BatchNorm) the solver's Ritz values are the
    real gradient norms of its directions: they match the measuring backward."""
    from torchgrow.how import GradMax

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 2, 8, 8, generator=g)
    y = torch.randn_like(_pooled_pair(bn)(x)).detach()
    (cheap,) = _one_step(_pooled_pair(bn), GradMax(map_blocks=map_blocks), True, x, y)
    (full,) = _one_step(_pooled_pair(bn), GradMax(map_blocks=map_blocks), "full", x, y)
    assert cheap.info["solver"] == solver and "grad_norm_fan_in" in cheap.info
    assert cheap.info.get("iterations", 0) <= 8
    assert cheap.grad_norm_fan_in == pytest.approx(full.grad_norm_fan_in, rel=1e-4)
    assert full.grad_norm_fan_out == pytest.approx(0.0, abs=1e-6) == cheap.grad_norm_fan_out
