"""Edits are atomic: any bad input, or a failure in the middle of a commit, changes nothing.

Each case checks that model and optimizer are exactly as before (byte-identical
state dicts, the same parameter and module objects, the same optimizer state
and param groups) and that the error names the problem.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import torchgrow.ops.optim_state as optim_state
from torchgrow.errors import (
    GraphError,
    GrowthInputError,
    OptimizerCarryError,
    TorchgrowError,
    UnsupportedLayerError,
)
from torchgrow.nn import ReLU1
from torchgrow.ops import (
    append_block,
    apply_mask,
    identity_conv,
    identity_linear,
    insert_after,
    shrink,
    widen,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread is faster, and robust to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- models
class Net(nn.Module):
    """conv -> BN -> ReLU -> conv -> ReLU -> flatten -> Linear -> tanh -> Linear (output)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc1 = nn.Linear(4 * 4 * 4, 8)
        self.fc2 = nn.Linear(8, 3)
        self.stage = nn.Sequential(nn.Linear(8, 8), nn.Tanh())

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        x = torch.tanh(self.fc1(torch.flatten(x, 1)))
        return self.fc2(self.stage(x))


class Residual(nn.Module):
    """Two producers (inp, fc_b) tied by a residual addition."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 4)
        self.fc_a = nn.Linear(4, 5)
        self.act = ReLU1()
        self.fc_b = nn.Linear(5, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.inp(x)
        h = h + self.fc_b(self.act(self.fc_a(h)))
        return self.out(torch.tanh(h))


class Cat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 2, 1)
        self.b = nn.Conv2d(3, 2, 1)
        self.c = nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.c(torch.cat([self.a(x), self.b(x)], 1)).mean((2, 3))


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.a(x)
        if h.sum() > 0:
            h = -h
        return self.b(h)


def grouped() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, groups=2),
        nn.ReLU(),
        nn.Conv2d(4, 2, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def groupnorm() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 1),
        nn.GroupNorm(2, 4),
        nn.ReLU(),
        nn.Conv2d(4, 2, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


INPUTS = {
    Net: (2, 3, 4, 4),
    Residual: (2, 3),
    Cat: (2, 3, 4, 4),
    Branchy: (2, 3),
    nn.Sequential: (2, 3, 4, 4),
}


def setup(factory: Callable[[], nn.Module] = Net, opt_kind=torch.optim.Adam):
    """A model trained two steps, so that the optimizer has non-trivial state."""
    torch.manual_seed(0)
    model = factory()
    x = torch.randn(*INPUTS[type(model)])
    opt = opt_kind(model.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()

        def closure():
            opt.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            return loss

        if isinstance(opt, torch.optim.LBFGS):
            opt.step(closure)
        else:
            closure()
            opt.step()
    model.eval()
    return model, opt, x


# ---------------------------------------------------------------- snapshots
def deep_clone(obj):
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: deep_clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [deep_clone(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(deep_clone(v) for v in obj)
    return copy.deepcopy(obj)


def deep_equal(a, b, path="") -> None:
    if isinstance(a, Tensor):
        assert isinstance(b, Tensor), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            deep_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            deep_equal(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert a == b, path


class Snapshot:
    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer | None, x: Tensor) -> None:
        self.model, self.opt, self.x = model, opt, x
        self.state = deep_clone(dict(model.state_dict()))
        self.params = list(model.named_parameters())
        self.modules = [(n, m) for n, m in model.named_modules()]
        self.repr = repr(model)
        with torch.no_grad():
            self.y = model(x)
        if opt is not None:
            self.osd = deep_clone(opt.state_dict())
            self.groups = [list(g["params"]) for g in opt.param_groups]
            self.hyper = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
            self.state_keys = list(opt.state.keys())
            self.state_values = {id(p): dict(s) for p, s in opt.state.items()}

    def check(self) -> None:
        model, opt = self.model, self.opt
        deep_equal(dict(model.state_dict()), self.state, "state_dict")
        now = list(model.named_parameters())
        assert [n for n, _ in now] == [n for n, _ in self.params]
        assert all(a is b for (_, a), (_, b) in zip(now, self.params, strict=True))
        mods = list(model.named_modules())
        assert [n for n, _ in mods] == [n for n, _ in self.modules]
        assert all(a is b for (_, a), (_, b) in zip(mods, self.modules, strict=True))
        assert repr(model) == self.repr  # plain attributes: in/out features, groups...
        with torch.no_grad():
            assert torch.equal(model(self.x), self.y)
        if opt is None:
            return
        deep_equal(opt.state_dict(), self.osd, "optimizer")
        assert [len(g["params"]) for g in opt.param_groups] == [len(g) for g in self.groups]
        for g, old in zip(opt.param_groups, self.groups, strict=True):
            assert all(a is b for a, b in zip(g["params"], old, strict=True))
        assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == (
            self.hyper
        )
        assert all(a is b for a, b in zip(opt.state.keys(), self.state_keys, strict=True))
        assert len(opt.state) == len(self.state_keys)
        for p, s in opt.state.items():
            old = self.state_values[id(p)]
            assert s.keys() == old.keys()
            assert all(s[k] is old[k] for k in s)  # the very same state tensors


# ---------------------------------------------------------------- bad inputs
def nan_like(shape, value=float("nan")):
    t = torch.randn(*shape)
    t.view(-1)[1] = value
    return t


CASES: list[tuple[str, Callable, Callable, type, str]] = [
    # (id, model factory, edit(model, opt), error type, regex the message must match)
    ("unknown-name", Net, lambda m, o: widen(m, "fc9", 2, optimizer=o), GrowthInputError, "fc9"),
    (
        "unknown-name-shrink",
        Net,
        lambda m, o: shrink(m, "conv7", [0], optimizer=o),
        GrowthInputError,
        "conv7",
    ),
    (
        "unknown-name-insert",
        Net,
        lambda m, o: insert_after(m, "nowhere", nn.ReLU(), optimizer=o),
        GrowthInputError,
        "nowhere",
    ),
    (
        "unknown-name-append",
        Net,
        lambda m, o: append_block(m, "stages", nn.Tanh(), optimizer=o),
        GrowthInputError,
        "stages",
    ),
    ("k=0", Net, lambda m, o: widen(m, "fc1", 0, optimizer=o), GrowthInputError, r"k must be"),
    ("k=-1", Net, lambda m, o: widen(m, "fc1", -1, optimizer=o), GrowthInputError, r"-1"),
    ("k=1.5", Net, lambda m, o: widen(m, "fc1", 1.5, optimizer=o), GrowthInputError, r"1\.5"),
    ("k=True", Net, lambda m, o: widen(m, "fc1", True, optimizer=o), GrowthInputError, "bool"),
    (
        "fan_in-shape",
        Net,
        lambda m, o: widen(m, "fc1", 2, fan_in=torch.randn(3, 64), optimizer=o),
        GrowthInputError,
        r"fan_in.*\(3, 64\).*\(2, 64\)",
    ),
    (
        "fan_in-shape-conv",
        Net,
        lambda m, o: widen(m, "conv1", 2, fan_in=torch.randn(2, 3, 1, 1), optimizer=o),
        GrowthInputError,
        r"fan_in.*expected \(2, 3, 3, 3\)",
    ),
    (
        "fan_out-shape",
        Net,
        lambda m, o: widen(m, "fc1", 2, fan_out=torch.randn(8, 3), optimizer=o),
        GrowthInputError,
        r"fan_out.*\(8, 3\).*\(8, 2\)",
    ),
    (
        "fan_out-shape-flatten",
        Net,
        # conv2 -> flatten -> fc1 hand-over: 16 features per new channel, not 1
        lambda m, o: widen(m, "conv2", 1, fan_out=torch.randn(8, 1), optimizer=o),
        GrowthInputError,
        r"fan_out.*fc1.*\(8, 16\)",
    ),
    (
        "fan_in-nan",
        Net,
        lambda m, o: widen(m, "fc1", 2, fan_in=nan_like((2, 64)), optimizer=o),
        GrowthInputError,
        "NaN",
    ),
    (
        "fan_in-inf",
        Net,
        lambda m, o: widen(m, "conv1", 1, fan_in=nan_like((1, 3, 3, 3), math.inf), optimizer=o),
        GrowthInputError,
        "Inf",
    ),
    (
        "fan_out-nan",
        Net,
        lambda m, o: widen(m, "conv1", 2, fan_out=nan_like((4, 2, 3, 3)), optimizer=o),
        GrowthInputError,
        "NaN",
    ),
    (
        "fan_out-inf",
        Net,
        lambda m, o: widen(m, "fc1", 1, fan_out=nan_like((8, 1), -math.inf), optimizer=o),
        GrowthInputError,
        "Inf",
    ),
    (
        "fan_in-not-a-tensor",
        Net,
        lambda m, o: widen(m, "fc1", 1, fan_in=[[0.0] * 64], optimizer=o),
        GrowthInputError,
        "fan_in",
    ),
    (
        "fan_in-tensor-for-tied-unit",
        Residual,
        lambda m, o: widen(m, "inp", 1, fan_in=torch.randn(1, 3), optimizer=o),
        GrowthInputError,
        r"dict.*inp.*fc_b|dict.*fc_b.*inp",
    ),
    (
        "fan_in-dict-second-producer-wrong",
        Residual,
        lambda m, o: widen(
            m, "inp", 1, fan_in={"inp": torch.randn(1, 3), "fc_b": torch.randn(1, 4)}, optimizer=o
        ),
        GrowthInputError,
        r"fc_b.*\(1, 4\).*\(1, 5\)",
    ),
    (
        "fan_out-dict-unknown-consumer",
        Residual,
        lambda m, o: widen(m, "inp", 1, fan_out={"fc_b": torch.randn(4, 1)}, optimizer=o),
        GrowthInputError,
        "fc_b",
    ),
    ("output-layer", Net, lambda m, o: widen(m, "fc2", 1, optimizer=o), GraphError, "output"),
    (
        "output-layer-shrink",
        Net,
        lambda m, o: shrink(m, "fc2", [0, 1], optimizer=o),
        GraphError,
        "output",
    ),
    (
        "not-a-producer",
        Net,
        lambda m, o: widen(m, "bn1", 1, optimizer=o),
        GraphError,
        "bn1.*BatchNorm2d",
    ),
    (
        "grouped-conv-feeding",
        grouped,
        lambda m, o: widen(m, "0", 1, optimizer=o),
        (GraphError, UnsupportedLayerError),
        r"'2'.*groups=2",
    ),
    (
        "grouped-conv-itself",
        grouped,
        lambda m, o: widen(m, "2", 1, optimizer=o),
        (GraphError, UnsupportedLayerError),
        "'2'",
    ),
    (
        "unknown-kind-in-unit",
        groupnorm,
        lambda m, o: widen(m, "0", 1, optimizer=o),
        (GraphError, UnsupportedLayerError),
        r"'1'.*GroupNorm",
    ),
    (
        "unknown-kind-in-unit-shrink",
        groupnorm,
        lambda m, o: shrink(m, "0", [0, 1], optimizer=o),
        (GraphError, UnsupportedLayerError),
        "GroupNorm",
    ),
    ("cat", Cat, lambda m, o: widen(m, "a", 1, optimizer=o), GraphError, r"\bcat\b"),
    ("cat-shrink", Cat, lambda m, o: shrink(m, "b", [0], optimizer=o), GraphError, r"\bcat\b"),
    ("untraceable", Branchy, lambda m, o: widen(m, "a", 1, optimizer=o), GraphError, "fx"),
    (
        "keep-empty-tensor",
        Net,
        lambda m, o: shrink(m, "fc1", torch.empty(0, dtype=torch.long), optimizer=o),
        GrowthInputError,
        "empty",
    ),
    (
        "keep-empty-list",
        Net,
        lambda m, o: shrink(m, "fc1", [], optimizer=o),
        GrowthInputError,
        "keep",
    ),
    (
        "keep-out-of-range",
        Net,
        lambda m, o: shrink(m, "fc1", [0, 8], optimizer=o),
        GrowthInputError,
        r"\[0, 8\)",
    ),
    (
        "keep-negative",
        Net,
        lambda m, o: shrink(m, "conv1", [-1, 0], optimizer=o),
        GrowthInputError,
        r"\[0, 4\)",
    ),
    (
        "keep-duplicates",
        Net,
        lambda m, o: shrink(m, "fc1", [1, 1, 2], optimizer=o),
        GrowthInputError,
        "repeated",
    ),
    (
        "keep-floats",
        Net,
        lambda m, o: shrink(m, "fc1", [0.0, 1.0], optimizer=o),
        GrowthInputError,
        "integer",
    ),
    (
        "keep-bools",
        Net,
        lambda m, o: shrink(m, "fc1", [True, False], optimizer=o),
        GrowthInputError,
        "integer",
    ),
    (
        "keep-2d",
        Net,
        lambda m, o: shrink(m, "fc1", [[0, 1]], optimizer=o),
        GrowthInputError,
        "1-D",
    ),
    (
        "keep-not-indices",
        Net,
        lambda m, o: shrink(m, "fc1", "ab", optimizer=o),
        GrowthInputError,
        "keep",
    ),
    (
        "insert-module-already-in-model",
        Net,
        lambda m, o: insert_after(m, "fc1", m.stage, optimizer=o),
        GrowthInputError,
        "already in the model",
    ),
    (
        "insert-part-already-in-model",
        Net,
        lambda m, o: insert_after(m, "fc1", nn.Sequential(nn.Tanh(), m.fc1), optimizer=o),
        GrowthInputError,
        "already in the model",
    ),
    (
        "insert-not-a-module",
        Net,
        lambda m, o: insert_after(m, "fc1", torch.eye(8), optimizer=o),
        GrowthInputError,
        "nn.Module",
    ),
    (
        "insert-nan-layer",
        Net,
        lambda m, o: insert_after(m, "stage.1", _nan_linear(), optimizer=o),
        GrowthInputError,
        "NaN",
    ),
    (
        "insert-bad-new-name",
        Net,
        lambda m, o: insert_after(m, "fc1", identity_linear(8), new_name="a.b", optimizer=o),
        GrowthInputError,
        "new_name",
    ),
    (
        "insert-taken-new-name",
        Net,
        lambda m, o: insert_after(m, "stage.0", identity_linear(8), new_name="1", optimizer=o),
        GrowthInputError,
        "already has",
    ),
    (
        "append-to-non-sequential",
        Net,
        lambda m, o: append_block(m, "fc1", nn.Tanh(), optimizer=o),
        GrowthInputError,
        r"fc1.*Linear.*not an nn\.Sequential",
    ),
    (
        "append-to-model-root",
        Net,
        lambda m, o: append_block(m, "", nn.Tanh(), optimizer=o),
        GrowthInputError,
        "no module",
    ),
    (
        "append-block-already-in-model",
        Net,
        lambda m, o: append_block(m, "stage", m.stage[0], optimizer=o),
        GrowthInputError,
        "already in the model",
    ),
    (
        "bad-unknown_optimizer-value",
        Net,
        lambda m, o: widen(m, "fc1", 1, optimizer=o, unknown_optimizer="ignore"),
        ValueError,
        "unknown_optimizer",
    ),
    (
        "optimizer-not-an-optimizer",
        Net,
        lambda m, o: widen(m, "fc1", 1, optimizer=[o]),
        OptimizerCarryError,
        "list",
    ),
]


def _nan_linear() -> nn.Linear:
    layer = identity_linear(8)
    with torch.no_grad():
        layer.bias[3] = float("nan")
    return layer


@pytest.mark.parametrize(
    ("factory", "edit", "error", "pattern"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bad_input_changes_nothing(factory, edit, error, pattern):
    model, opt, x = setup(factory)
    snap = Snapshot(model, opt, x)
    with pytest.raises(error) as info:
        edit(model, opt)
    assert re.search(pattern, str(info.value)), str(info.value)
    assert isinstance(info.value, TorchgrowError)
    snap.check()


@pytest.mark.parametrize("keep", [[], (), range(0)], ids=["list", "tuple", "range"])
def test_empty_keep_message_says_empty(keep):
    model, opt, x = setup(Net)
    snap = Snapshot(model, opt, x)
    with pytest.raises(GrowthInputError, match="empty"):
        shrink(model, "fc1", keep, optimizer=opt)
    snap.check()


class CustomOpt(torch.optim.Optimizer):
    """A user's own optimizer: its state layout is unknown to torchgrow."""

    def __init__(self, params, lr: float = 0.1) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    avg = self.state[p].setdefault("avg", torch.zeros_like(p))
                    avg.mul_(0.9).add_(p.grad)
                    p.add_(avg, alpha=-group["lr"])


@pytest.mark.parametrize(
    "edit",
    [
        lambda m, o: widen(m, "fc1", 2, optimizer=o),
        lambda m, o: shrink(m, "conv1", [0, 2], optimizer=o),
        lambda m, o: insert_after(m, "fc1", identity_linear(8), optimizer=o),
        lambda m, o: append_block(m, "stage", nn.Sequential(nn.Linear(8, 8)), optimizer=o),
    ],
    ids=["widen", "shrink", "insert_after", "append_block"],
)
@pytest.mark.parametrize("kind", [torch.optim.LBFGS, CustomOpt], ids=["LBFGS", "CustomOpt"])
def test_unknown_optimizer_changes_nothing(edit, kind):
    model, opt, x = setup(Net, kind)
    snap = Snapshot(model, opt, x)
    with pytest.raises(OptimizerCarryError, match=kind.__name__):
        edit(model, opt)
    snap.check()


def test_errors_derive_from_the_builtin_exceptions():
    model, opt, x = setup(Net)
    with pytest.raises(ValueError):
        widen(model, "fc1", 0)
    with pytest.raises(ValueError):
        widen(model, "fc2", 1)
    with pytest.raises(TypeError):
        widen(model, "fc1", 1, optimizer=torch.optim.LBFGS(model.parameters()))


# ---------------------------------------------------------------- failures in the middle of a commit
def _masked_net() -> nn.Module:
    model = Net()
    apply_mask(model.fc1, density=0.5, generator=torch.Generator().manual_seed(0))
    apply_mask(model.conv2, density=0.5, generator=torch.Generator().manual_seed(1))
    return model


MID_COMMIT = [
    ("widen-conv-flatten", Net, lambda m, o: widen(m, "conv2", 2, fan_out=torch.randn(8, 32), optimizer=o)),
    ("widen-bn", Net, lambda m, o: widen(m, "conv1", 3, fan_in=torch.randn(3, 3, 3, 3), optimizer=o)),
    ("widen-residual", Residual, lambda m, o: widen(m, "fc_b", 2, optimizer=o)),
    ("widen-masked", _masked_net, lambda m, o: widen(m, "conv2", 1, optimizer=o)),
    ("shrink", Net, lambda m, o: shrink(m, "conv1", [1, 3], optimizer=o)),
    ("shrink-masked", _masked_net, lambda m, o: shrink(m, "fc1", [0, 5, 7], optimizer=o)),
    ("insert-in-sequential", Net, lambda m, o: insert_after(m, "stage.0", identity_linear(8), optimizer=o)),
    ("insert-wrapping", Net, lambda m, o: insert_after(m, "conv2", identity_conv(4, batchnorm=True), optimizer=o)),
    ("append-block", Net, lambda m, o: append_block(m, "stage", nn.Sequential(nn.Linear(8, 8)), optimizer=o)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("factory", "edit"), [c[1:] for c in MID_COMMIT], ids=[c[0] for c in MID_COMMIT]
)
def test_failure_in_optimizer_carry_rolls_the_model_back(monkeypatch, factory, edit):
    model, opt, x = setup(factory)
    snap = Snapshot(model, opt, x)
    seen = {}

    def broken_carry(optimizer, remaps, **kwargs):
        # the model has been modified by now: prove it, then fail
        seen["changed"] = repr(model) != snap.repr or any(
            a is not b
            for (_, a), (_, b) in zip(model.named_parameters(), snap.params, strict=False)
        )
        raise RuntimeError("carry exploded")

    monkeypatch.setattr(optim_state, "carry", broken_carry)
    with pytest.raises(RuntimeError, match="carry exploded"):
        edit(model, opt)
    assert seen == {"changed": True}
    snap.check()
    monkeypatch.undo()
    # and the very same edit works afterwards
    edit(model, opt)
    optim_state.check_consistent(model, opt)


def test_real_carry_failure_rolls_back():
    """A state entry of a shape torchgrow cannot remap fails inside the commit."""
    model, opt, x = setup(Net)
    opt.state[model.fc1.weight]["odd"] = torch.zeros(3)
    snap = Snapshot(model, opt, x)
    with pytest.raises(OptimizerCarryError, match="odd"):
        widen(model, "fc1", 2, optimizer=opt)
    snap.check()


class _SelfResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 4)
        self.lin = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.inp(x)
        h = h + self.lin(torch.tanh(h))
        return self.out(h)


INPUTS[_SelfResidual] = (2, 3)


def test_self_residual_linear_is_widened_or_rejected_atomically():
    torch.manual_seed(0)
    model, _, x = setup(_SelfResidual)
    snap = Snapshot(model, None, x)
    try:
        widen(model, "inp", 2)
    except TorchgrowError:
        snap.check()
        return
    assert model.lin.weight.shape == (6, 6)
    with torch.no_grad():
        assert (model(x) - snap.y).abs().max() <= 1e-6
