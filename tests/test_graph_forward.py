"""The analysis of a recorded forward: models people write, op rules, and edits that stay correct."""

from __future__ import annotations

import copy
import warnings

import graph_models as G
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchgrow import Grower, models
from torchgrow.errors import EditVerificationError, GraphError, GrowthInputError
from torchgrow.graph import analyse, find_unit, growable_units, register_op, rules, set_example
from torchgrow.graph.fx_trace import analyse_fx
from torchgrow.how import Random
from torchgrow.ops import check_consistent, shrink, widen
from torchgrow.when import Every

ZOO = {
    "mlp": (lambda: models.mlp([20, 16, 12, 5]), (20,)),
    "lenet5": (models.lenet5, (1, 28, 28)),
    "cifar_resnet": (lambda: models.cifar_resnet((1, 1, 1), (8, 16, 32)), (3, 16, 16)),
    "cifar_bottleneck": (
        lambda: models.cifar_resnet((1, 1, 1), (16, 32, 64), block="bottleneck"),
        (3, 16, 16),
    ),
    "vgg_small": (models.vgg_small, (1, 28, 28)),
    "residual_mlp": (lambda: models.residual_mlp(in_features=20), (20,)),
    "wide_resnet": (lambda: models.wide_resnet(depth=10, k=1), (3, 16, 16)),
    "mobilenet_v1": (lambda: models.mobilenet_v1(width_mult=0.25), (3, 32, 32)),
}


def _outputs(model, x):
    with torch.no_grad():
        out = model(x)
    return out["logits"] if isinstance(out, dict) else out


@pytest.mark.parametrize("name", sorted(ZOO))
def test_recorded_forward_finds_what_fx_finds_on_the_zoo(name):
    build, shape = ZOO[name]
    torch.manual_seed(0)
    model = build().eval()
    traced = analyse_fx(model)
    set_example(model, torch.randn(2, *shape))
    recorded = analyse(model)
    assert recorded.units == traced.units
    assert set(recorded.blocked) == set(traced.blocked)


def _state(model, opt):
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optim = {
        id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
        for p, s in opt.state.items()
    }
    return params, [id(p) for g in opt.param_groups for p in g["params"]], optim


def _train_step(model, opt, x):
    opt.zero_grad()
    out = model(x)
    out = out["logits"] if isinstance(out, dict) else out
    out.square().mean().backward()
    opt.step()


@pytest.mark.parametrize("name", sorted(G.ALL))
def test_every_unit_of_models_people_write_grows_and_shrinks_back(name):
    torch.manual_seed(0)
    model, x, growable = G.ALL[name]()
    model.eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    _train_step(model, opt, x)  # momentum buffers exist
    units = growable_units(model, x)
    assert growable <= {u.name for u in units}
    for unit in units:
        y0 = _outputs(model, x)
        before = copy.deepcopy(model.state_dict())
        g = torch.Generator().manual_seed(1)
        fan_out = {
            c.name: 0.1 * torch.randn(c_shape, generator=g)
            for c in unit.consumers
            for c_shape in [_fan_out_shape(model, c, 2)]
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            widen(model, unit.name, 2, fan_out=fan_out, optimizer=opt)
        check_consistent(model, opt)
        grown = find_unit(model, unit.name)
        assert grown.width == unit.width + 2
        moved = (_outputs(model, x) - y0).abs().max()
        if not {"LayerNorm", "RMSNorm"} & {
            type(model.get_submodule(p)).__name__ for p in unit.per_channel
        }:
            assert moved < 1e-5, (unit.name, float(moved))
        shrink(model, unit.name, range(unit.width), optimizer=opt)
        check_consistent(model, opt)
        assert (_outputs(model, x) - y0).abs().max() < 1e-6
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k
    _train_step(model, opt, x)


def _fan_out_shape(model, consumer, k):
    from torchgrow.ops.registry import lookup

    m = model.get_submodule(consumer.name)
    return lookup(m).fan_out_shape(m, k, consumer.factor)


def test_cat_skip_puts_new_columns_at_the_unit_offset():
    model, x, _ = G.unet()
    set_example(model, x)
    unit = find_unit(model, "mid")  # read by dec1 through cat([up(mid), enc1])
    (dec,) = [c for c in unit.consumers if c.name == "dec1"]
    assert dec.layout is not None
    old = model.dec1.weight.detach().clone()
    block = torch.ones(model.dec1.out_channels, 3, 3, 3)
    widen(model, "mid", 3, fan_out={"dec1": block})
    w = model.dec1.weight.detach()
    assert w.shape[1] == old.shape[1] + 3
    assert torch.equal(w[:, :8], old[:, :8])  # mid's old channels
    assert torch.equal(w[:, 8:11], block)  # its new ones right after them
    assert torch.equal(w[:, 11:], old[:, 8:])  # enc1's channels, shifted


def test_linear_on_tokens_then_flatten_interleaves_new_columns():
    model, x, _ = G.tokens_flatten()
    y0 = _outputs(model, x)
    set_example(model, x)
    widen(model, "fc1", 2, fan_out={"fc2": torch.randn(3, 2 * 4)})
    # zero fan-in: the new features are 0 whatever their fan-out, at the right columns
    assert (_outputs(model, x) - y0).abs().max() < 1e-6
    assert model.fc2.in_features == 4 * 8


def test_per_channel_parameter_and_buffer_grow_with_the_unit():
    model, x, _ = G.layer_scale()
    gamma, shift = model.gamma.detach().clone(), model.shift.clone()
    set_example(model, x)
    unit = find_unit(model, "fc1")
    assert {t[0] for t in unit.tensors} == {"gamma", "shift"}
    widen(model, "fc1", 3)
    assert model.gamma.shape == (13,) and model.shift.shape == (1, 13)
    assert torch.equal(model.gamma[:10], gamma) and torch.equal(model.gamma[10:], torch.ones(3))
    assert torch.equal(model.shift[:, :10], shift) and not model.shift[:, 10:].any()


def test_module_called_twice_grows_once_for_both_calls():
    model, x, _ = G.called_twice()
    y0 = _outputs(model, x)
    set_example(model, x)
    widen(model, "shared", 2, fan_out={"fc": torch.randn(3, 4)})
    assert model.fc.in_features == 18
    assert (_outputs(model, x) - y0).abs().max() < 1e-6


def test_tied_weights_grow_together_and_stay_tied():
    model = G.Tied().eval()
    x = torch.randn(3, 4)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    _train_step(model, opt, x)
    set_example(model, x)
    unit = find_unit(model, "fc2")  # fc3.weight = fc2.weight: fc1, fc2, fc3 make one unit
    assert set(unit.producers) == {"fc1", "fc2", "fc3"}
    y0 = _outputs(model, x)
    widen(model, "fc1", 2, optimizer=opt)
    assert model.fc3.weight is model.fc2.weight and model.fc2.weight.shape == (8, 8)
    assert (_outputs(model, x) - y0).abs().max() < 1e-5
    check_consistent(model, opt)
    _train_step(model, opt, x)
    assert model.fc3.weight is model.fc2.weight


def test_different_blocks_for_the_two_sides_of_a_tie_are_refused():
    model = G.Tied().eval()
    x = torch.randn(3, 4)
    set_example(model, x)
    before = copy.deepcopy(model.state_dict())
    fan_in = {"fc1": torch.zeros(2, 4), "fc2": torch.ones(2, 6), "fc3": torch.zeros(2, 6)}
    with pytest.raises(GrowthInputError, match="tied"):
        widen(model, "fc1", 2, fan_in=fan_in)
    assert model.fc3.weight is model.fc2.weight
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


class _NoRule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(torch.logit(torch.sigmoid(self.fc1(x)), eps=1e-6))


def test_op_without_rule_names_itself_and_the_rule_to_register():
    model = _NoRule()
    set_example(model, torch.randn(3, 4))
    with pytest.raises(GraphError, match=r"no op rule for 'logit'.*register_op"):
        find_unit(model, "fc1")
    register_op(torch.logit, rules.same_as_input)
    try:
        assert find_unit(model, "fc1").consumers[0].name == "fc2"
    finally:
        from torchgrow.graph.rules import _RULES

        _RULES.pop(torch.logit)


class _HardCoded(nn.Module):
    """A slice that is the whole tensor now, but not after growth."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x))[:, :6])


def test_edit_that_breaks_the_forward_is_rolled_back_byte_for_byte():
    model = _HardCoded()
    x = torch.randn(3, 4)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    _train_step(model, opt, x)
    set_example(model, x)
    before = _state(model, opt)
    with pytest.raises(EditVerificationError, match="rolled back"):
        widen(model, "fc1", 2, optimizer=opt)
    after = _state(model, opt)
    assert before[1] == after[1] and before[2].keys() == after[2].keys()
    for k, v in before[0].items():
        assert torch.equal(v, after[0][k])
    for pid, s in before[2].items():
        for key, v in s.items():
            assert (
                torch.equal(v, after[2][pid][key])
                if torch.is_tensor(v)
                else v == after[2][pid][key]
            )
    _outputs(model, x)


def test_grower_grows_a_unet_and_keeps_its_function():
    torch.manual_seed(0)
    model, x, growable = G.unet()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    grower = Grower(model, opt, when=Every(1, times=1), how=Random(seed=0))
    y = torch.randn(3, 2, 8, 8)
    events = grower.step((x, y), loss_fn=lambda out, t: F.mse_loss(out, t))
    assert {e.unit for e in events} == growable
    assert all(e.max_abs_delta is not None and e.max_abs_delta < 1e-5 for e in events)
    check_consistent(model, opt)


def test_a_measuring_pass_that_raises_rolls_the_step_back():
    model, x, _ = G.functional_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    grower = Grower(model, opt, when=Every(1, times=1))
    widths = {n: m.weight.shape for n, m in model.named_modules() if hasattr(m, "weight")}

    def loss(out, t):  # Zero growth needs no statistics: the only loss is the measuring pass
        raise RuntimeError("loss broke")

    with pytest.raises(RuntimeError, match="loss broke"):
        grower.step((x, torch.tensor([0, 1, 2])), loss_fn=loss)
    assert {n: m.weight.shape for n, m in model.named_modules() if hasattr(m, "weight")} == widths
    assert grower.state.step == 0 and not grower.events
    check_consistent(model, opt)


def test_frozen_batchnorm_stays_frozen_through_analysis_and_growth():
    model, x, _ = G.mobilenet_v3ish()
    model.train()
    model.blocks[0].bn2.eval()
    set_example(model, x)
    widen(model, "blocks.0.expand", 2)
    assert model.training and not model.blocks[0].bn2.training
    assert model.blocks[0].bn1.training


@pytest.mark.parametrize("kind", ["weight_norm", "spectral_norm", "prune", "parametrized"])
def test_reparametrized_weights_are_refused_and_nothing_changes(kind):
    import torch.nn.utils.prune as prune
    from torch.nn.utils import parametrizations

    from torchgrow.errors import UnsupportedLayerError

    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "weight_norm":
            nn.utils.weight_norm(model[2])
        elif kind == "spectral_norm":
            nn.utils.spectral_norm(model[2])
        elif kind == "prune":
            prune.l1_unstructured(model[2], "weight", 0.3)
        else:
            parametrizations.weight_norm(model[2])
    model.eval()  # spectral_norm's power iteration runs in train mode
    x = torch.randn(3, 4)
    set_example(model, x)
    y0 = _outputs(model, x)
    with pytest.raises((GraphError, UnsupportedLayerError), match="cannot"):
        widen(model, "0", 2)
    assert model[0].out_features == 6 and model[2].in_features == 6
    assert torch.equal(_outputs(model, x), y0)


def test_growth_step_keeps_modes_flags_and_module_hooks():
    torch.manual_seed(0)
    model, x, _ = G.mobilenet_v3ish()
    model.train()
    model.bn.eval()  # a frozen BatchNorm
    for p in model.stem.parameters():
        p.requires_grad_(False)  # a frozen stem
    calls = []
    model.head.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    grower = Grower(model, opt, when=Every(1, times=1), how=Random(seed=0))
    grower.step((x, torch.tensor([0, 1, 2])))
    assert model.training and not model.bn.training
    assert all(not p.requires_grad for p in model.stem.parameters())
    assert model.stem.out_channels > 8  # the frozen stem still grew (its new rows frozen too)
    n = len(calls)
    model(x)
    assert len(calls) == n + 1


class _Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, a recorded forward does not care."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x, *, scale: float = 1.0):
        h = torch.tanh(self.fc1(x))
        if x.mean() > 0:  # a Python branch on a tensor value
            h = h * 2
        return {"out": self.fc2(h * scale)}


def test_control_flow_keywords_and_dict_outputs_do_not_matter():
    model = _Branchy()
    x = torch.randn(3, 4)
    with pytest.raises(GraphError, match="fx could not trace"):
        find_unit(model, "fc1")
    set_example(model, x, scale=0.5)
    unit = find_unit(model, "fc1")
    assert unit.consumers[0].name == "fc2"
    y0 = model(x, scale=0.5)["out"]
    widen(model, "fc1", 3, fan_out=torch.randn(2, 3))
    assert (model(x, scale=0.5)["out"] - y0).abs().max() < 1e-6
