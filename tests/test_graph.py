"""Graph analysis on the library's model families, and the patterns it must refuse."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchgrow import models
from torchgrow.errors import GraphError, GrowthInputError
from torchgrow.graph import analyse, find_unit, growable_units
from torchgrow.ops import widen


def randomise_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g))


ZOO = {
    "mlp_bn": (lambda: models.mlp([40, 32, 16, 10], batchnorm=True), (40,)),
    "lenet_300_100": (models.lenet_300_100, (1, 28, 28)),
    "lenet5": (models.lenet5, (1, 28, 28)),
    "resnet_basic": (
        lambda: models.cifar_resnet((2, 1, 1), (8, 16, 32), in_channels=1),
        (1, 28, 28),
    ),
    "resnet_bottleneck": (
        lambda: models.cifar_resnet((1, 2, 1), (16, 32, 64), block="bottleneck", in_channels=1),
        (1, 16, 16),
    ),
    "vgg_small": (models.vgg_small, (1, 28, 28)),
}


def test_lenet5_conv_to_linear_handover_factor():
    units = growable_units(models.lenet5(), torch.randn(2, 1, 28, 28), strict=True)
    by = {u.name: u for u in units}
    assert set(by) == {"conv1", "conv2", "fc1"}
    assert [(c.name, c.factor) for c in by["conv2"].consumers] == [("fc1", 16)]  # 50 ch x 4x4


def test_resnet_residual_groups():
    model = models.cifar_resnet((2, 1, 1), (8, 16, 32), in_channels=1)
    units = {u.name: u for u in growable_units(model, strict=True)}
    stream = units["stem.conv"]
    # the stem and every block's last conv of stage 1 write the same residual stream
    assert set(stream.producers) == {"stem.conv", "stage1.0.conv2", "stage1.1.conv2"}
    assert {"stage1.0.bn2", "stage1.1.bn2"} <= set(stream.per_channel)
    assert {c.name for c in stream.consumers} == {
        "stage1.0.conv1",
        "stage1.1.conv1",
        "stage2.0.conv1",
        "stage2.0.shortcut.conv",
    }
    # a block's first conv is a unit of its own
    inner = units["stage1.0.conv1"]
    assert inner.producers == ("stage1.0.conv1",) and [c.name for c in inner.consumers] == [
        "stage1.0.conv2"
    ]
    # the last stage feeds the classifier: growable, with fc as consumer
    last = find_unit(model, "stage3.0.conv2")
    assert [c.name for c in last.consumers] == ["fc"]
    assert "fc" in analyse(model).blocked


@pytest.mark.filterwarnings("ignore::torchgrow.ops.DeadUnitWarning")
@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_unit_of_every_zoo_model_widens_preserving_function(name):
    build, shape = ZOO[name]
    torch.manual_seed(0)
    model = build()
    randomise_bn(model)
    model.eval()
    x = torch.randn(3, *shape)
    y0 = model(x).detach()
    for unit in growable_units(model, x, strict=True):
        gen = torch.Generator().manual_seed(1)
        mods = dict(model.named_modules())
        fan_out = {}
        for c in unit.consumers:
            w = mods[c.name].weight
            shape_out = (
                (w.shape[0], 2 * c.factor) if w.dim() == 2 else (w.shape[0], 2, *w.shape[2:])
            )
            fan_out[c.name] = torch.randn(shape_out, generator=gen)
        widen(model, unit.name, 2, fan_out=fan_out)
        assert (model(x) - y0).abs().max() <= 1e-6, unit.name
    # and every unit is now 2 wider
    for before, after in zip(growable_units(build(), x), growable_units(model, x), strict=True):
        assert after.width == before.width + 2


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(4, 3)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], dim=1))


class Functional(nn.Module):
    """Functional activations and a view-based flatten are understood."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc1 = nn.Linear(4 * 4 * 4, 8)
        self.fc2 = nn.Linear(8, 2)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.conv(x)), 2)
        h = h.view(h.size(0), -1)
        return self.fc2(torch.tanh(self.fc1(h)))


class Unknown(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.mystery = nn.GRUCell(4, 4)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(self.mystery(self.fc1(x)))


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


def test_concat_is_refused_with_the_reason():
    with pytest.raises(GraphError, match="cat"):
        find_unit(Concat(), "a")
    with pytest.raises(GraphError, match="cat"):
        growable_units(Concat(), strict=True)
    assert growable_units(Concat()) == []


@pytest.mark.filterwarnings("ignore::torchgrow.ops.DeadUnitWarning")
def test_functional_ops_and_view_flatten():
    model = Functional()
    units = {u.name: u for u in growable_units(model, torch.randn(2, 1, 10, 10), strict=True)}
    assert [(c.name, c.factor) for c in units["conv"].consumers] == [("fc1", 16)]
    assert "relu" in units["conv"].between
    x = torch.randn(2, 1, 10, 10)
    y0 = model(x)
    widen(model, "conv", 3, fan_out=torch.randn(8, 48))
    assert (model(x) - y0).abs().max() <= 1e-6


def test_unknown_module_kind_named_in_error():
    with pytest.raises(GraphError, match="mystery.*GRUCell"):
        find_unit(Unknown(), "fc1")


def test_untraceable_model_gives_a_clear_error():
    with pytest.raises(GraphError, match="torch.fx could not trace DataDependent"):
        find_unit(DataDependent(), "fc")


def test_unknown_name_suggests_close_names():
    with pytest.raises(GrowthInputError, match="fc1"):
        find_unit(models.lenet_300_100(), "fc")


def test_not_a_producer():
    with pytest.raises(GraphError, match="not a producer"):
        find_unit(models.lenet_300_100(), "act1")
