"""when / where / size / how policies: each rule does what its docstring says."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from torchgrow.errors import GrowthInputError
from torchgrow.graph import growable_units
from torchgrow.how import Random, Zero, fan_in_vectors, fan_out_block, fan_out_vectors
from torchgrow.size import Fraction, Units
from torchgrow.when import Every, GrowthState, Manual, Plateau, Schedule
from torchgrow.where import AllAtOnce, Layers, RoundRobin


def fired_steps(trigger, n_steps: int) -> list[int]:
    state = GrowthState()
    fired = []
    for t in range(1, n_steps + 1):
        state.step = t
        if trigger.fires(state):
            fired.append(t)
            state.events += 1
    return fired


def test_every_matches_gradmax_schedule():
    # GradMax student-teacher: every 200 steps from 200, 5 times
    assert fired_steps(Every(200, start=200, times=5), 1500) == [200, 400, 600, 800, 1000]
    # CIFAR AllAtOnce: every 2500 from 10000, 12 times -> last at 37500
    steps = fired_steps(Every(2500, start=10000, times=12), 50000)
    assert steps[0] == 10000 and steps[-1] == 37500 and len(steps) == 12


def test_every_unbounded_and_start_not_multiple():
    assert fired_steps(Every(3, start=4), 12) == [6, 9, 12]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_every_rejects_bad_period(bad):
    with pytest.raises(GrowthInputError, match="steps"):
        Every(bad)


def test_schedule_fires_exactly_at_listed_steps():
    assert fired_steps(Schedule([5, 2, 9, 5]), 10) == [2, 5, 9]
    with pytest.raises(GrowthInputError):
        Schedule([])


def test_plateau_fires_after_patience_without_improvement_and_rearms():
    p = Plateau("val_loss", patience=2, min_delta=0.01)
    state = GrowthState()
    history = [1.0, 0.9, 0.895, 0.899, 0.5, 0.49, 0.495, 0.497]
    fired = []
    for i, v in enumerate(history):
        state.metrics.setdefault("val_loss", []).append(v)
        if p.fires(state):
            fired.append(i)
    # 0.895 and 0.899 do not beat 0.9 by 0.01 -> fires at index 3; after re-arming,
    # 0.5 is the new best, 0.49 (not by 0.01), 0.495 -> fires at index 6
    assert fired == [3, 6]


def test_plateau_max_mode_and_state_roundtrip():
    p = Plateau("acc", patience=1, mode="max")
    state = GrowthState(metrics={"acc": [0.5, 0.6]})
    assert not p.fires(state)
    saved = p.state_dict()
    q = Plateau("acc", patience=1, mode="max")
    q.load_state_dict(saved)
    state.metrics["acc"].append(0.55)
    assert q.fires(state)


def test_plateau_rejects_nan_metric():
    p = Plateau("val_loss", patience=1)
    with pytest.raises(GrowthInputError, match="nan"):
        p.fires(GrowthState(metrics={"val_loss": [float("nan")]}))


def test_manual_fires_once_per_trigger():
    m = Manual()
    state = GrowthState(step=1)
    assert not m.fires(state)
    m.trigger()
    assert m.fires(state)
    assert not m.fires(state)


def mlp3() -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(6, 5),
            a1=nn.Tanh(),
            fc2=nn.Linear(5, 4),
            a2=nn.Tanh(),
            fc3=nn.Linear(4, 3),
        )
    )


def test_where_selections():
    units = growable_units(mlp3())
    assert [u.name for u in units] == ["fc1", "fc2"]
    state = GrowthState()
    assert [u.name for u in AllAtOnce().select(units, state)] == ["fc1", "fc2"]
    assert [u.name for u in Layers(["fc2"]).select(units, state)] == ["fc2"]
    rr = RoundRobin()
    picked = [rr.select(units, state)[0].name for _ in range(5)]
    assert picked == ["fc1", "fc2", "fc1", "fc2", "fc1"]
    with pytest.raises(GrowthInputError, match="fc3"):
        Layers(["fc3"]).select(units, state)  # the output layer is not growable
    with pytest.raises(GrowthInputError):
        Layers("fc1")  # a string, not a list


def test_fraction_of_initial_width_is_fixed_at_first_use():
    model = mlp3()
    frac = Fraction(0.25)
    unit = growable_units(model)[0]  # width 5 -> 1 unit
    assert frac.units(unit) == 1
    from torchgrow.ops import widen

    widen(model, "fc1", 7)
    unit = growable_units(model)[0]  # width 12 now, but "initial" stays 5
    assert frac.units(unit) == 1
    assert Fraction(0.25, of="current").units(unit) == 3


def test_fraction_warns_when_rounding_to_zero_and_units_validates():
    unit = growable_units(mlp3())[1]  # width 4
    with pytest.warns(UserWarning, match="growing 1 unit"):
        assert Fraction(0.1).units(unit) == 1
    with pytest.raises(GrowthInputError):
        Units(0)
    with pytest.raises(GrowthInputError):
        Fraction(0)


def test_layout_helpers_roundtrip_linear_conv_and_flatten():
    lin = nn.Linear(12, 3)  # 4 units x factor 3 (after a flatten)
    vecs = fan_out_vectors(lin, factor=3)
    assert vecs.shape == (4, 9)
    assert torch.equal(fan_out_block(lin, vecs, factor=3), lin.weight.detach())
    conv = nn.Conv2d(5, 7, 3)
    vecs = fan_out_vectors(conv)
    assert vecs.shape == (5, 7 * 9)
    assert torch.equal(fan_out_block(conv, vecs), conv.weight.detach())
    assert fan_in_vectors(conv).shape == (7, 45)


def test_random_init_norms_and_sides():
    model = mlp3()
    unit = growable_units(model)[0]
    init = Random(scale=0.5, seed=1).init(unit, 3, None, model)
    assert "fc1" not in init.fan_in  # zero side "in"
    block = init.fan_out["fc2"]
    assert block.shape == (4, 3)
    existing = model.fc2.weight.detach().norm(dim=0).mean()
    assert torch.allclose(block.norm(dim=0), 0.5 * existing.expand(3), rtol=1e-5)
    assert (block >= 0).all()  # uniform [0, 1) directions, as in the official baseline
    both = Random(scale=2.0, zero_side=None, scale_method="fixed", distribution="normal", seed=0)
    init = both.init(unit, 2, None, model)
    assert torch.allclose(init.fan_in["fc1"].norm(dim=1), torch.full((2,), 2.0))
    assert torch.allclose(init.fan_out["fc2"].norm(dim=0), torch.full((2,), 2.0))


def test_random_is_seeded_and_state_roundtrips():
    model = mlp3()
    unit = growable_units(model)[0]
    a, b = Random(seed=3), Random(seed=3)
    assert torch.equal(
        a.init(unit, 2, None, model).fan_out["fc2"], b.init(unit, 2, None, model).fan_out["fc2"]
    )
    saved = a.state_dict()
    x1 = a.init(unit, 2, None, model).fan_out["fc2"]
    b.load_state_dict(saved)
    assert torch.equal(b.init(unit, 2, None, model).fan_out["fc2"], x1)


@pytest.mark.parametrize("kwargs", [{"scale": 0}, {"zero_side": "both"}, {"scale_method": "max"}])
def test_random_rejects_bad_settings(kwargs):
    with pytest.raises(GrowthInputError):
        Random(**kwargs)


def test_zero_init_is_empty():
    model = mlp3()
    init = Zero().init(growable_units(model)[0], 2, None, model)
    assert not init.fan_in and not init.fan_out
