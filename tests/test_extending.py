"""The registry extension example of docs/extending.md works as documented."""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from torchgrow.errors import GraphError
from torchgrow.ops import check_consistent, shrink, widen
from torchgrow.ops.registry import _REGISTRY

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


@pytest.fixture()
def channel_scale():
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # the documented snippet, verbatim
    kind = namespace["ChannelScale"]
    yield kind
    _REGISTRY.pop(kind, None)


def build(kind):
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(fc1=nn.Linear(5, 4), scale=kind(4), act=nn.Tanh(), fc2=nn.Linear(4, 3))
    )


def test_documented_kind_grows_and_shrinks(channel_scale):
    model = build(channel_scale)
    with torch.no_grad():
        model.scale.scale.uniform_(0.5, 2.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(8, 5)
    model(x).sum().backward()
    opt.step()
    y0 = model(x).detach()
    rec = widen(model, "fc1", 3, fan_out=torch.randn(3, 3), optimizer=opt)
    assert "scale" in rec.modules
    assert model.scale.scale.shape == (7,)
    assert torch.equal(model.scale.scale[4:].detach(), torch.ones(3))
    assert (model(x) - y0).abs().max() <= 1e-6
    check_consistent(model, opt)
    assert torch.equal(opt.state[model.scale.scale]["exp_avg"][4:], torch.zeros(3))
    shrink(model, "fc1", range(4), optimizer=opt)
    assert (model(x) - y0).abs().max() <= 1e-6


def test_unregistered_modules_are_traced_through_or_refused():
    class Doubler(nn.Module):  # channel-wise: fx sees `x * 2` and allows growth
        def forward(self, x):
            return x * 2

    class Reverser(nn.Module):  # permutes channels: growth through it would be wrong
        def forward(self, x):
            return x.flip(1)

    model = nn.Sequential(OrderedDict(fc1=nn.Linear(5, 4), odd=Doubler(), fc2=nn.Linear(4, 3)))
    x = torch.randn(6, 5)
    y0 = model(x).detach()
    widen(model, "fc1", 2, fan_out=torch.randn(3, 2))
    assert (model(x) - y0).abs().max() <= 1e-6

    model = nn.Sequential(OrderedDict(fc1=nn.Linear(5, 4), odd=Reverser(), fc2=nn.Linear(4, 3)))
    with pytest.raises(GraphError, match=r"cannot be widened.*flip"):
        widen(model, "fc1", 1)


class _RunningMax(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.fc1 = nn.Linear(3, 5)
        self.fc2 = nn.Linear(5, 2)

    def forward(self, x):
        return self.fc2(torch.cummax(torch.tanh(self.fc1(x)), dim=self.dim).values)


def test_documented_op_rule_teaches_the_analysis():
    from torchgrow.graph import set_example
    from torchgrow.graph.rules import _RULES

    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    model = _RunningMax(dim=1)
    x = torch.randn(2, 4, 3)
    set_example(model, x)
    with pytest.raises(GraphError, match="no op rule for 'cummax'"):
        widen(model, "fc1", 2)
    exec(compile(blocks[1], str(DOC), "exec"), {})  # the documented rule, verbatim
    try:
        y0 = model(x)
        widen(model, "fc1", 2)
        assert model.fc2.in_features == 7
        assert torch.allclose(model(x), y0, atol=1e-6)
        across = _RunningMax(dim=-1)
        set_example(across, x)
        with pytest.raises(GraphError, match="cummax over the channels"):
            widen(across, "fc1", 2)
    finally:
        _RULES.pop(torch.cummax, None)
