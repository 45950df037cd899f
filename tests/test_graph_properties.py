"""Property-based tests over random models built from the op kinds the analysis follows.

Each model is a random stack of blocks on ``(B, T, F)`` tensors: dense layers,
residual additions, two branches joined by ``torch.cat``, a per-channel scale
and shift used by hand, a layer called twice, a squeeze-excite gate, and a
``(B, T, F)`` flatten into the head. For every unit the analysis finds:
zero fan-in and zero fan-out widening preserve the function, shrinking back
restores the model exactly, and refused edits leave model and optimizer
byte-identical.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from torchgrow.errors import GraphError, GrowthInputError
from torchgrow.graph import analyse, set_example
from torchgrow.ops import check_consistent, shrink, widen
from torchgrow.ops.registry import lookup

PROPS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KINDS = ("dense", "residual", "cat", "scale", "twice", "gate")
T_STEPS, F_IN = 3, 4


class RandomBlock(nn.Module):
    def __init__(self, kind: str, w: int, out: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "dense":
            self.fc = nn.Linear(w, out)
        elif kind in ("residual", "twice"):
            self.fc = nn.Linear(w, w)
        elif kind == "cat":
            self.a = nn.Linear(w, out)
            self.b = nn.Linear(w, 2)
        elif kind == "scale":
            self.gamma = nn.Parameter(torch.rand(w) + 0.5)
            self.register_buffer("shift", 0.1 * torch.randn(w))
        elif kind == "gate":
            self.fc = nn.Linear(w, w)

    @staticmethod
    def width_after(kind: str, w: int, out: int) -> int:
        return {"dense": out, "cat": out + 2}.get(kind, w)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        k = self.kind
        if k == "dense":
            return torch.tanh(self.fc(h))
        if k == "residual":
            return h + self.fc(torch.tanh(h))
        if k == "cat":
            return torch.cat([torch.tanh(self.a(h)), torch.tanh(self.b(h))], dim=-1)
        if k == "scale":
            return h * self.gamma + self.shift
        if k == "twice":
            return torch.tanh(self.fc(h) + self.fc(h.flip(1)))
        return h * torch.sigmoid(self.fc(h.mean(1, keepdim=True)))


class RandomNet(nn.Module):
    def __init__(self, kinds: list[str], widths: list[int]) -> None:
        super().__init__()
        self.inp = nn.Linear(F_IN, widths[0])
        w = widths[0]
        blocks = []
        for kind, out in zip(kinds, widths[1:], strict=False):
            blocks.append(RandomBlock(kind, w, out))
            w = RandomBlock.width_after(kind, w, out)
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(T_STEPS * w, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        for block in self.blocks:
            h = block(h)
        return self.head(h.flatten(1))


@st.composite
def random_nets(draw):
    n = draw(st.integers(1, 4))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=n, max_size=n))
    widths = draw(st.lists(st.integers(2, 5), min_size=n + 1, max_size=n + 1))
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    return RandomNet(kinds, widths).eval(), torch.randn(3, T_STEPS, F_IN)


def _blocks(model, unit, k, side, seed):
    g = torch.Generator().manual_seed(seed)
    if side == "in":
        return {
            p: torch.randn(lookup(m).fan_in_shape(m, k), generator=g)
            for p in unit.producers
            for m in [model.get_submodule(p)]
        }
    return {
        c.name: torch.randn(lookup(m).fan_out_shape(m, k, c.factor), generator=g)
        for c in unit.consumers
        for m in [model.get_submodule(c.name)]
    }


def _snapshot(model, opt):
    return (
        copy.deepcopy(model.state_dict()),
        [id(p) for g in opt.param_groups for p in g["params"]],
        {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()},
    )


def _same(a, b) -> bool:
    if a[1] != b[1] or a[0].keys() != b[0].keys() or a[2].keys() != b[2].keys():
        return False
    if any(not torch.equal(v, b[0][k]) for k, v in a[0].items()):
        return False
    return all(torch.equal(v, b[2][p][k]) for p, s in a[2].items() for k, v in s.items())


@PROPS
@given(net=random_nets(), side=st.sampled_from(["in", "out"]), seed=st.integers(0, 99))
def test_widening_preserves_and_shrinking_restores(net, side, seed):
    model, x = net
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model(x).square().mean().backward()
    opt.step()
    set_example(model, x)
    wiring = analyse(model)
    assert wiring.units, "every random net has at least its input layer to grow"
    for unit in wiring.units:
        y0 = model(x).detach()
        start = _snapshot(model, opt)
        k = 1 + seed % 3
        blocks = _blocks(model, unit, k, "in" if side == "in" else "out", seed)
        kwargs = {"fan_in": blocks} if side == "in" else {"fan_out": blocks}
        if side == "in":  # zero fan-out: any fan-in preserves
            kwargs["fan_in"] = blocks
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            widen(model, unit.name, k, optimizer=opt, **kwargs)
        check_consistent(model, opt)
        assert (model(x) - y0).abs().max() < 1e-5
        shrink(model, unit.name, range(unit.width), optimizer=opt)
        check_consistent(model, opt)
        end = _snapshot(model, opt)
        assert end[0].keys() == start[0].keys()
        assert all(torch.equal(v, start[0][k2]) for k2, v in end[0].items())
        assert torch.equal(model(x), y0) or (model(x) - y0).abs().max() < 1e-6


@PROPS
@given(net=random_nets(), seed=st.integers(0, 99))
def test_refused_edits_leave_model_and_optimizer_byte_identical(net, seed):
    model, x = net
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(x).square().mean().backward()
    opt.step()
    set_example(model, x)
    wiring = analyse(model)
    before = _snapshot(model, opt)
    with pytest.raises(GraphError):  # the head feeds the output: its width is fixed
        widen(model, "head", 1, optimizer=opt)
    unit = wiring.units[seed % len(wiring.units)]
    bad = _blocks(model, unit, 2, "in", seed)
    bad[unit.producers[0]][0, 0] = float("nan")
    with pytest.raises(GrowthInputError):
        widen(model, unit.name, 2, fan_in=bad, optimizer=opt)
    wrong = {p: t[:, :-1] for p, t in _blocks(model, unit, 2, "in", seed).items()}
    with pytest.raises(GrowthInputError):
        widen(model, unit.name, 2, fan_in=wrong, optimizer=opt)
    assert _same(before, _snapshot(model, opt))
