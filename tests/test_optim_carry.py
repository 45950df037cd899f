"""The optimizer is carried across every edit, for every supported optimizer kind.

After an edit the optimizer holds exactly the live parameters, in the same
param groups with the same hyper-parameters; old state entries are copied,
new ones start at zero (Adagrad: at its initial accumulator value), step
counters are kept, and the next step trains the new weights. Connection masks
keep dormant weights at exactly zero under training.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from torchgrow.errors import OptimizerCarryError
from torchgrow.nn import ReLU1
from torchgrow.ops import (
    SUPPORTED_OPTIMIZERS,
    append_block,
    apply_mask,
    check_consistent,
    grow_connections,
    identity_linear,
    insert_after,
    mask_of,
    prune_connections,
    remove_mask,
    shrink,
    weight_parameter,
    widen,
)

ADAGRAD_INIT = 0.25


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread is faster, and robust to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# name -> factory over a list of param groups
OPTIMIZERS: dict[str, Callable[[list[dict]], torch.optim.Optimizer]] = {
    "sgd": lambda g: torch.optim.SGD(g, lr=0.05),
    "sgd_momentum": lambda g: torch.optim.SGD(g, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "sgd_nesterov": lambda g: torch.optim.SGD(g, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda g: torch.optim.Adam(g, lr=1e-2),
    "adam_amsgrad": lambda g: torch.optim.Adam(g, lr=1e-2, amsgrad=True),
    "adamw": lambda g: torch.optim.AdamW(g, lr=1e-2, weight_decay=0.1),
    "rmsprop": lambda g: torch.optim.RMSprop(g, lr=1e-2),
    "rmsprop_centered_momentum": lambda g: torch.optim.RMSprop(
        g, lr=1e-2, momentum=0.9, centered=True
    ),
    "adagrad": lambda g: torch.optim.Adagrad(g, lr=0.1, initial_accumulator_value=ADAGRAD_INIT),
    "adamax": lambda g: torch.optim.Adamax(g, lr=1e-2),
    "nadam": lambda g: torch.optim.NAdam(g, lr=1e-2),
    "radam": lambda g: torch.optim.RAdam(g, lr=1e-2),
}


def test_every_supported_kind_is_covered():
    assert {type(f([{"params": [nn.Parameter(torch.zeros(1))]}])) for f in OPTIMIZERS.values()} == (
        set(SUPPORTED_OPTIMIZERS)
    )


# ---------------------------------------------------------------- fixtures and helpers
def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            [
                ("fc1", nn.Linear(4, 6)),
                ("act1", nn.Tanh()),
                ("fc2", nn.Linear(6, 5)),
                ("act2", ReLU1()),
                ("fc3", nn.Linear(5, 3)),
            ]
        )
    )


def two_groups(model: nn.Sequential, first: list[str]) -> list[dict]:
    """Group 0: the parameters of the modules ``first``; group 1: the rest.

    Group 1 carries an extra user key, which must survive the edits untouched.
    """
    g0 = [p for n in first for p in model.get_submodule(n).parameters()]
    ids = {id(p) for p in g0}
    g1 = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": g0}, {"params": g1, "user_tag": "rest"}]


def make_optimizer(kind: str, groups: list[dict]) -> torch.optim.Optimizer:
    opt = OPTIMIZERS[kind](groups)
    # a distinct learning rate in group 1, to see which group new parameters join
    opt.param_groups[1]["lr"] = opt.param_groups[0]["lr"] / 2
    return opt


DATA_X = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
DATA_Y = torch.randn(16, 3, generator=torch.Generator().manual_seed(2))


def step(model: nn.Module, opt: torch.optim.Optimizer, n: int = 1) -> None:
    for _ in range(n):
        opt.zero_grad()
        loss = (model(DATA_X) - DATA_Y).pow(2).mean()
        loss.backward()
        opt.step()


def names_of(model: nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in model.named_parameters()}


def group_names(model: nn.Module, opt: torch.optim.Optimizer) -> list[list[str]]:
    ids = names_of(model)
    return [[ids[id(p)] for p in g["params"]] for g in opt.param_groups]


def hyper(opt: torch.optim.Optimizer) -> list[dict]:
    return [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]


def state_by_name(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, dict]:
    out = {}
    for n, p in model.named_parameters():
        if p in opt.state:
            out[n] = {
                k: v.detach().clone() if isinstance(v, Tensor) else copy.deepcopy(v)
                for k, v in opt.state[p].items()
            }
    return out


def fill_value(opt: torch.optim.Optimizer, key: str) -> float:
    return ADAGRAD_INIT if isinstance(opt, torch.optim.Adagrad) and key == "sum" else 0.0


def check_state_slices(
    opt: torch.optim.Optimizer,
    before: dict[str, dict],
    after: dict[str, dict],
    old_slice: dict[str, Callable[[Tensor], Tensor]],
    new_slice: dict[str, Callable[[Tensor], Tensor]],
    shapes: dict[str, torch.Size],
) -> None:
    """Old state entries are copied, new ones start at the fill value, counters kept."""
    assert before.keys() == after.keys()
    for name, st in before.items():
        assert st.keys() == after[name].keys(), name
        for key, old in st.items():
            new = after[name][key]
            if isinstance(old, Tensor) and old.dim() > 0:
                assert new.shape == shapes.get(name, old.shape), (name, key)
                get_old = old_slice.get(name, lambda t: t)
                assert torch.equal(get_old(new), old), (name, key)
                if name in new_slice:
                    fresh = new_slice[name](new)
                    assert fresh.numel() > 0
                    assert torch.all(fresh == fill_value(opt, key)), (name, key)
            elif isinstance(old, Tensor):  # step counters and other scalars
                assert torch.equal(new, old), (name, key)
            else:
                assert new == old, (name, key)


def assert_not_held(opt: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
    held = [p for g in opt.param_groups for p in g["params"]]
    for old in params:
        assert all(p is not old for p in held)
        assert old not in opt.state


KINDS = sorted(OPTIMIZERS)


# ---------------------------------------------------------------- widen
@pytest.mark.parametrize("kind", KINDS)
def test_widen_carries_state(kind):
    model = mlp()
    opt = make_optimizer(kind, two_groups(model, ["fc1"]))
    step(model, opt, 3)
    before_state = state_by_name(model, opt)
    before_hyper = hyper(opt)
    before_groups = group_names(model, opt)
    old_params = dict(model.named_parameters())
    old_w1 = old_params["fc1.weight"].detach().clone()
    torch.manual_seed(5)
    widen(model, "fc1", 2, fan_in=torch.randn(2, 4), fan_out=torch.randn(5, 2), optimizer=opt)

    check_consistent(model, opt)
    assert hyper(opt) == before_hyper
    assert group_names(model, opt) == before_groups  # positions kept
    assert_not_held(opt, [old_params[n] for n in ("fc1.weight", "fc1.bias", "fc2.weight")])
    for n in ("fc2.bias", "fc3.weight", "fc3.bias"):  # untouched parameters: same objects
        assert dict(model.named_parameters())[n] is old_params[n]
    shapes = {n: p.shape for n, p in model.named_parameters()}
    assert shapes["fc1.weight"] == (8, 4) and shapes["fc2.weight"] == (5, 8)
    check_state_slices(
        opt,
        before_state,
        state_by_name(model, opt),
        old_slice={
            "fc1.weight": lambda t: t[:6],
            "fc1.bias": lambda t: t[:6],
            "fc2.weight": lambda t: t[:, :6],
        },
        new_slice={
            "fc1.weight": lambda t: t[6:],
            "fc1.bias": lambda t: t[6:],
            "fc2.weight": lambda t: t[:, 6:],
        },
        shapes=shapes,
    )

    # the next step trains the new fan-in and fan-out (no stale parameter in the optimizer)
    w1 = model.fc1.weight.detach().clone()
    w2 = model.fc2.weight.detach().clone()
    step(model, opt)
    assert not torch.equal(model.fc1.weight[6:], w1[6:])
    assert not torch.equal(model.fc2.weight[:, 6:], w2[:, 6:])
    # the replaced parameter objects are not stepped any more
    assert torch.equal(old_params["fc1.weight"].detach(), old_w1)
    check_consistent(model, opt)


def test_widen_new_entries_train_with_group_lr():
    """SGD, no momentum: the first step on a new entry is exactly -lr * grad of its group."""
    model = mlp()
    opt = make_optimizer("sgd", two_groups(model, ["fc1"]))
    step(model, opt, 2)
    torch.manual_seed(5)
    widen(model, "fc1", 2, fan_in=torch.randn(2, 4), fan_out=torch.randn(5, 2), optimizer=opt)
    opt.zero_grad()
    (model(DATA_X) - DATA_Y).pow(2).mean().backward()
    g1 = model.fc1.weight.grad.clone()
    g2 = model.fc2.weight.grad.clone()
    w1 = model.fc1.weight.detach().clone()
    w2 = model.fc2.weight.detach().clone()
    opt.step()
    assert torch.allclose(model.fc1.weight.detach(), w1 - 0.05 * g1)
    assert torch.allclose(model.fc2.weight.detach(), w2 - 0.025 * g2)
    assert g1[6:].abs().sum() > 0 and g2[:, 6:].abs().sum() > 0


@pytest.mark.parametrize("kind", ["sgd_momentum", "adam_amsgrad", "adagrad", "nadam"])
def test_carried_state_dict_round_trips_into_a_fresh_optimizer(kind):
    """After an edit, opt.state_dict() loads into a new optimizer that then steps identically."""
    model = mlp()
    opt = make_optimizer(kind, two_groups(model, ["fc1"]))
    step(model, opt, 3)
    torch.manual_seed(5)
    widen(model, "fc1", 2, fan_in=torch.randn(2, 4), fan_out=torch.randn(5, 2), optimizer=opt)
    shrink(model, "fc2", keep=[0, 1, 3], optimizer=opt)
    twin = copy.deepcopy(model)
    opt2 = make_optimizer(kind, two_groups(twin, ["fc1"]))
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # no shared buffers
    step(model, opt, 2)
    step(twin, opt2, 2)
    for (n, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q), n


# ---------------------------------------------------------------- shrink
@pytest.mark.parametrize("kind", KINDS)
def test_shrink_carries_state(kind):
    model = mlp()
    opt = make_optimizer(kind, two_groups(model, ["fc1"]))
    step(model, opt, 3)
    before_state = state_by_name(model, opt)
    before_hyper = hyper(opt)
    before_groups = group_names(model, opt)
    old_params = dict(model.named_parameters())
    keep = torch.tensor([0, 2, 4])
    shrink(model, "fc2", keep=[4, 0, 2], optimizer=opt)

    check_consistent(model, opt)
    assert hyper(opt) == before_hyper
    assert group_names(model, opt) == before_groups
    assert_not_held(opt, [old_params[n] for n in ("fc2.weight", "fc2.bias", "fc3.weight")])
    shapes = {n: p.shape for n, p in model.named_parameters()}
    assert shapes["fc2.weight"] == (3, 6) and shapes["fc3.weight"] == (3, 3)
    after = state_by_name(model, opt)
    # kept entries are the old ones at ``keep``; compare against the old state sliced
    sliced = {
        name: {
            k: (
                v[keep]
                if name in ("fc2.weight", "fc2.bias") and isinstance(v, Tensor) and v.dim() > 0
                else v[:, keep]
                if name == "fc3.weight" and isinstance(v, Tensor) and v.dim() > 0
                else v
            )
            for k, v in st.items()
        }
        for name, st in before_state.items()
    }
    check_state_slices(opt, sliced, after, {}, {}, shapes)
    w = model.fc2.weight.detach().clone()
    step(model, opt)
    assert not torch.equal(model.fc2.weight, w)
    check_consistent(model, opt)


# ---------------------------------------------------------------- insert_after
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("after", "group"), [("fc1", 0), ("fc2", 1)])
def test_insert_after_joins_the_group_of_the_module_it_follows(kind, after, group):
    model = mlp()
    opt = make_optimizer(kind, two_groups(model, ["fc1"]))
    step(model, opt, 3)
    before_state = state_by_name(model, opt)
    before_hyper = hyper(opt)
    before_groups = group_names(model, opt)
    old_ids = {id(p) for p in model.parameters()}
    y0 = model(DATA_X).detach()
    width = model.get_submodule(after).out_features
    record = insert_after(model, after, identity_linear(width), optimizer=opt)
    new = record.details["new"]
    assert new == f"{after}_next"
    assert torch.allclose(model(DATA_X), y0, atol=1e-6)

    check_consistent(model, opt)
    assert hyper(opt) == before_hyper
    expected = copy.deepcopy(before_groups)
    expected[group] += [f"{new}.weight", f"{new}.bias"]
    assert group_names(model, opt) == expected
    added_ids = {id(p) for p in record.added}
    assert all(id(p) in old_ids for p in model.parameters() if id(p) not in added_ids)
    assert len(added_ids) == 2 and not added_ids & old_ids
    # old state untouched, the new layer has no (or zero) state
    after_state = state_by_name(model, opt)
    new_state = {n: after_state.pop(n) for n in list(after_state) if n.startswith(new)}
    check_state_slices(opt, before_state, after_state, {}, {}, {})
    for st in new_state.values():
        for key, v in st.items():
            if isinstance(v, Tensor) and v.dim() > 0:
                assert torch.all(v == fill_value(opt, key))

    layer = model.get_submodule(new)
    w = layer.weight.detach().clone()
    step(model, opt)
    assert not torch.equal(layer.weight, w)
    check_consistent(model, opt)


# ---------------------------------------------------------------- append_block
def block() -> nn.Sequential:
    return nn.Sequential(OrderedDict([("lin", nn.Linear(6, 6)), ("act", nn.Tanh())]))


def staged() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            [
                ("inp", nn.Linear(4, 6)),
                ("act", nn.Tanh()),
                ("stage", nn.Sequential(block(), block())),
                ("out", nn.Linear(6, 3)),
            ]
        )
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stage_group", [0, 1])
def test_append_block_joins_the_group_of_the_stage(kind, stage_group):
    model = staged()
    first = ["stage"] if stage_group == 0 else ["inp", "out"]
    opt = make_optimizer(kind, two_groups(model, first))
    step(model, opt, 3)
    before_state = state_by_name(model, opt)
    before_hyper = hyper(opt)
    before_groups = group_names(model, opt)
    torch.manual_seed(3)
    record = append_block(model, "stage", block(), optimizer=opt)
    assert record.details["new"] == "stage.2"
    assert len(model.stage) == 3
    assert len(record.added) == 2

    check_consistent(model, opt)
    assert hyper(opt) == before_hyper
    expected = copy.deepcopy(before_groups)
    expected[stage_group] += ["stage.2.lin.weight", "stage.2.lin.bias"]
    assert group_names(model, opt) == expected
    after_state = state_by_name(model, opt)
    for n in list(after_state):
        if n.startswith("stage.2."):
            after_state.pop(n)
    check_state_slices(opt, before_state, after_state, {}, {}, {})
    w = model.stage[2].lin.weight.detach().clone()
    step(model, opt)
    assert not torch.equal(model.stage[2].lin.weight, w)
    check_consistent(model, opt)


# ---------------------------------------------------------------- edits chained
@pytest.mark.parametrize("kind", ["sgd_momentum", "adam", "adagrad", "rmsprop_centered_momentum"])
def test_chained_edits_keep_the_optimizer_consistent(kind):
    model = mlp()
    opt = make_optimizer(kind, two_groups(model, ["fc1"]))
    step(model, opt, 2)
    torch.manual_seed(9)
    widen(model, "fc1", 2, fan_in=torch.randn(2, 4), fan_out=torch.randn(5, 2), optimizer=opt)
    check_consistent(model, opt)
    step(model, opt, 2)
    insert_after(model, "fc2", identity_linear(5), optimizer=opt)
    check_consistent(model, opt)
    step(model, opt, 2)
    widen(model, "fc2", 1, fan_in=torch.randn(1, 8), fan_out=torch.randn(5, 1), optimizer=opt)
    assert model.fc2_next.weight.shape == (5, 6)
    check_consistent(model, opt)
    step(model, opt, 2)
    shrink(model, "fc1", keep=range(7), optimizer=opt)
    shrink(model, "fc2", keep=[0, 1, 2, 4, 5], optimizer=opt)
    check_consistent(model, opt)
    assert [len(g["params"]) for g in opt.param_groups] == [2, 6]
    params = {id(p) for p in model.parameters()}
    assert all(id(p) in params for p in opt.state)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step(model, opt, 2)
    check_consistent(model, opt)
    for n, p in model.named_parameters():
        assert torch.isfinite(p).all()
        assert not torch.equal(p, before[n]), n


# ---------------------------------------------------------------- unknown optimizers
class PlainSGD(torch.optim.Optimizer):
    """A custom optimizer whose state layout torchgrow cannot know."""

    def __init__(self, params, lr: float = 0.1) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("buf", torch.zeros_like(p))
                buf.mul_(0.5).add_(p.grad)
                p.add_(buf, alpha=-group["lr"])


def full_snapshot(model: nn.Module, opt: torch.optim.Optimizer):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [p for p in model.parameters()],
        copy.deepcopy(opt.state_dict()),
        [list(g["params"]) for g in opt.param_groups],
    )


def assert_same(model, opt, snap) -> None:
    sd, params, osd, groups = snap
    now = model.state_dict()
    assert now.keys() == sd.keys()
    assert all(torch.equal(now[k], v) for k, v in sd.items())
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    assert [list(g["params"]) for g in opt.param_groups] == groups
    assert all(
        a is b
        for g, old in zip(opt.param_groups, groups, strict=True)
        for a, b in zip(g["params"], old, strict=True)
    )
    assert_deep_equal(opt.state_dict(), osd)


def assert_deep_equal(a, b) -> None:
    if isinstance(a, Tensor):
        assert isinstance(b, Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            assert_deep_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_deep_equal(x, y)
    else:
        assert a == b


def lbfgs(model):
    return torch.optim.LBFGS(model.parameters(), lr=0.1)


def custom(model):
    return PlainSGD(model.parameters(), lr=0.05)


class MyAdam(torch.optim.Adam):
    pass


@pytest.mark.parametrize("make", [lbfgs, custom], ids=["LBFGS", "PlainSGD"])
@pytest.mark.parametrize("edit", ["widen", "shrink", "insert_after"])
def test_unknown_optimizer_raises_and_changes_nothing(make, edit):
    model = mlp()
    opt = make(model)
    if isinstance(opt, torch.optim.LBFGS):

        def closure():
            opt.zero_grad()
            loss = (model(DATA_X) - DATA_Y).pow(2).mean()
            loss.backward()
            return loss

        opt.step(closure)
    else:
        step(model, opt, 2)
    snap = full_snapshot(model, opt)
    with pytest.raises(OptimizerCarryError, match=type(opt).__name__):
        if edit == "widen":
            widen(model, "fc1", 2, optimizer=opt)
        elif edit == "shrink":
            shrink(model, "fc1", keep=[0, 1], optimizer=opt)
        else:
            insert_after(model, "fc1", identity_linear(6), optimizer=opt)
    assert_same(model, opt, snap)
    assert model.fc1.out_features == 6 and isinstance(model.act1, nn.Tanh)


def test_unknown_optimizer_reset_warns_and_works():
    model = mlp()
    opt = PlainSGD(model.parameters(), lr=0.05)
    step(model, opt, 2)
    kept = {n: opt.state[p]["buf"].clone() for n, p in model.named_parameters()}
    with pytest.warns(UserWarning, match="PlainSGD"):
        record = widen(
            model,
            "fc1",
            2,
            fan_in=torch.randn(2, 4),
            fan_out=torch.randn(5, 2),
            optimizer=opt,
            unknown_optimizer="reset",
        )
    check_consistent(model, opt)
    # edited parameters lost their state; the others kept theirs
    for old, new in record.replaced.items():
        assert new not in opt.state or not opt.state[new]
        assert old not in opt.state
    for n in ("fc2.bias", "fc3.weight", "fc3.bias"):
        p = model.get_submodule(n.rsplit(".", 1)[0]).get_parameter(n.rsplit(".", 1)[1])
        assert torch.equal(opt.state[p]["buf"], kept[n])
    w = model.fc1.weight.detach().clone()
    step(model, opt)
    assert not torch.equal(model.fc1.weight[6:], w[6:])
    assert not torch.equal(model.fc1.weight[:6], w[:6])


def test_subclass_of_a_supported_optimizer_is_not_assumed_supported():
    model = mlp()
    opt = MyAdam(model.parameters())
    step(model, opt, 1)
    snap = full_snapshot(model, opt)
    with pytest.raises(OptimizerCarryError, match="MyAdam"):
        widen(model, "fc1", 1, optimizer=opt)
    assert_same(model, opt, snap)


def test_lbfgs_is_refused_even_in_reset_mode_and_nothing_changes():
    """LBFGS keeps flattened history over all parameters: no per-parameter carry or reset."""
    model = mlp()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=2)

    def closure():
        opt.zero_grad()
        loss = (model(DATA_X) - DATA_Y).pow(2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    weights = [p.detach().clone() for p in model.parameters()]
    params = list(opt.param_groups[0]["params"])
    for mode in ("raise", "reset"):
        with pytest.raises(OptimizerCarryError, match="LBFGS.*new optimizer"):
            widen(model, "fc1", 2, optimizer=opt, unknown_optimizer=mode)
    assert all(a is b for a, b in zip(params, opt.param_groups[0]["params"], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True))
    assert opt._params is opt.param_groups[0]["params"]  # LBFGS's alias is intact


# ---------------------------------------------------------------- connection masks
def masked_model(density: float = 0.3) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict([("fc1", nn.Linear(4, 10)), ("act", nn.Tanh()), ("fc2", nn.Linear(10, 3))])
    )
    apply_mask(model.fc1, density=density, generator=torch.Generator().manual_seed(7))
    return model


@pytest.mark.parametrize(
    "make",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
        lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
        lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True, weight_decay=1e-2),
        lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.9, weight_decay=1e-2),
        lambda p: torch.optim.Adagrad(p, lr=0.1, weight_decay=1e-2, initial_accumulator_value=0.1),
        lambda p: torch.optim.Adamax(p, lr=1e-2, weight_decay=1e-2),
        lambda p: torch.optim.NAdam(p, lr=1e-2, weight_decay=1e-2),
        lambda p: torch.optim.RAdam(p, lr=1e-2, weight_decay=1e-2),
    ],
    ids=[
        "sgd_momentum_wd",
        "adam_wd",
        "adamw",
        "sgd_nesterov",
        "adam_amsgrad",
        "rmsprop",
        "adagrad",
        "adamax",
        "nadam",
        "radam",
    ],  # fmt: skip
)
def test_dormant_weights_stay_exactly_zero(make):
    model = masked_model()
    mask = mask_of(model.fc1).clone()
    assert mask.sum().item() == round(0.3 * 40)
    raw = weight_parameter(model.fc1)
    opt = make(model.parameters())
    w0 = raw.detach().clone()
    x = torch.randn(16, 4)
    for _ in range(5):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
    dormant = mask == 0
    assert torch.all(raw.detach()[dormant] == 0)
    assert torch.all(model.fc1.weight.detach()[dormant] == 0)
    assert not torch.equal(raw.detach()[~dormant], w0[~dormant])  # the active ones train


def test_the_mask_follows_the_weight_through_edits_and_copies():
    """The forward reads the weight itself; its gradient is masked, on the Parameter a widen
    swapped in and on a deep copy's as well."""
    model = masked_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert model.fc1.weight is weight_parameter(model.fc1)  # no recomputed weight * mask
    widen(model, "fc1", 2, optimizer=opt)  # a new Parameter, the mask grown (new ones active)
    twin = copy.deepcopy(model)
    x = torch.randn(16, 4)
    for m in (model, twin):
        mask = mask_of(m.fc1)
        assert mask.shape == (12, 4) and torch.all(mask[10:] == 1)
        m(x).pow(2).sum().backward()
        g = m.fc1.weight.grad
        assert torch.all(g[mask == 0] == 0) and g[mask != 0].abs().sum() > 0
    remove_mask(twin.fc1)
    twin.zero_grad()
    twin(x).pow(2).sum().backward()
    assert bool((twin.fc1.weight.grad[mask_of(model.fc1) == 0] != 0).any())  # plain again
    assert mask_of(model.fc1) is not None  # the original keeps its mask


def test_apply_mask_zeroes_existing_optimizer_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 10), nn.Tanh(), nn.Linear(10, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(16, 4)
    for _ in range(3):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
    mask = apply_mask(model[0], density=0.3, optimizer=opt).clone()
    raw = weight_parameter(model[0])
    dormant = mask == 0
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.all(opt.state[raw][key][dormant] == 0)
        assert opt.state[raw][key][~dormant].abs().sum() > 0
    for _ in range(3):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
    assert torch.all(raw.detach()[dormant] == 0)


def test_grow_and_prune_connections():
    model = masked_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    raw = weight_parameter(model.fc1)
    x = torch.randn(16, 4)

    def train(n=3):
        for _ in range(n):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()

    train()
    mask = mask_of(model.fc1)
    dormant = (mask == 0).nonzero()
    where = torch.zeros_like(mask, dtype=torch.bool)
    where[tuple(dormant[:3].T)] = True
    where[tuple((mask == 1).nonzero()[:1].T)] = True  # one already active: not counted
    n = grow_connections(model.fc1, where, values=0.5, optimizer=opt)
    assert n == 3
    assert torch.all(mask[where] == 1)
    assert torch.all(raw.detach()[where] == 0.5)
    assert torch.all(opt.state[raw]["momentum_buffer"][where] == 0)
    train()
    assert torch.all(raw.detach()[where] != 0.5)  # the grown connections train

    active = (mask == 1).nonzero()
    prune = torch.zeros_like(mask, dtype=torch.bool)
    prune[tuple(active[:4].T)] = True
    assert prune_connections(model.fc1, prune, optimizer=opt) == 4
    assert torch.all(mask[prune] == 0)
    assert torch.all(raw.detach()[prune] == 0)
    assert torch.all(opt.state[raw]["momentum_buffer"][prune] == 0)
    train()
    assert torch.all(raw.detach()[prune] == 0)
    assert torch.all(raw.detach()[mask == 0] == 0)


@pytest.mark.parametrize("kind", ["sgd_momentum", "adam", "adagrad"])
def test_widen_keeps_masks_in_sync(kind):
    model = masked_model()
    apply_mask(model.fc2, density=0.5, generator=torch.Generator().manual_seed(3))
    opt = make_optimizer(kind, two_groups(model, ["fc1"]))
    step_x = torch.randn(16, 4)

    def train(n):
        for _ in range(n):
            opt.zero_grad()
            model(step_x).pow(2).sum().backward()
            opt.step()

    train(3)
    m1, m2 = mask_of(model.fc1).clone(), mask_of(model.fc2).clone()
    raw1 = weight_parameter(model.fc1)
    old_state = opt.state[raw1]
    torch.manual_seed(4)
    widen(model, "fc1", 3, fan_in=torch.randn(3, 4), fan_out=torch.randn(3, 3), optimizer=opt)
    check_consistent(model, opt)
    n1, n2 = mask_of(model.fc1), mask_of(model.fc2)
    assert n1.shape == weight_parameter(model.fc1).shape == (13, 4)
    assert n2.shape == weight_parameter(model.fc2).shape == (3, 13)
    assert torch.equal(n1[:10], m1) and torch.all(n1[10:] == 1)
    assert torch.equal(n2[:, :10], m2) and torch.all(n2[:, 10:] == 1)
    new_raw1 = weight_parameter(model.fc1)
    assert new_raw1 is not raw1
    for key, v in old_state.items():
        if isinstance(v, Tensor) and v.dim() > 0:
            assert torch.equal(opt.state[new_raw1][key][:10], v)
    train(3)
    assert torch.all(weight_parameter(model.fc1).detach()[n1 == 0] == 0)
    assert torch.all(weight_parameter(model.fc2).detach()[n2 == 0] == 0)
    # the new (active) connections train
    assert weight_parameter(model.fc1).grad[10:].abs().sum() > 0
    shrink(model, "fc1", keep=range(10), optimizer=opt)
    assert torch.equal(mask_of(model.fc1), m1) and torch.equal(mask_of(model.fc2), m2)
    check_consistent(model, opt)
