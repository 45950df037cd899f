"""TrialGrowth: the new units alone where their path is independent of the old ones."""

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchgrow.errors import GrowthInputError
from torchgrow.graph import analyse
from torchgrow.nn import ReLU1
from torchgrow.stats import gather
from torchgrow.trial import TrialGrowth


def _pooled(bn: bool, depthwise: bool) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [nn.Conv2d(2, 6, 3, padding=1)]
    layers += [nn.BatchNorm2d(6)] if bn else []  # training mode: per-channel batch statistics
    layers += [nn.Conv2d(6, 6, 3, padding=1, groups=6)] if depthwise else []
    layers += [ReLU1(), nn.MaxPool2d(2), nn.Conv2d(6, 3, 3), nn.Flatten()]
    return nn.Sequential(*layers)


def _layer_norm_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(fc1=nn.Linear(5, 6), ln=nn.LayerNorm(6), act=nn.GELU(), fc2=nn.Linear(6, 3))
    )


def _gradients(model: nn.Module, x: torch.Tensor, local: bool, k: int = 4):
    y = torch.randn(model(x).shape, generator=torch.Generator().manual_seed(2))
    unit = analyse(model).units[0]
    stats = gather(model, (x, y), F.mse_loss, [unit], {"producer_input", "consumer_grad"})
    trial = TrialGrowth(model, unit, k, local=local)
    g = torch.Generator().manual_seed(1)
    fan_out = {c: torch.randn(k, d, generator=g) for c, d in trial.fan_out_dims.items()}
    with torch.enable_grad():
        grads = trial.fan_in_gradient(
            (x, y), F.mse_loss, fan_out, create_graph=False, consumer_grads=stats.consumer_grads
        )
    return trial, grads, (x, y)


@pytest.mark.parametrize(("bn", "depthwise"), [(False, False), (True, False), (False, True)])
def test_new_units_alone_give_the_same_fan_in_gradient(bn, depthwise):
    x = torch.randn(8, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    model = _pooled(bn, depthwise)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    alone, got, batch = _gradients(model, x, local=True)
    whole, want, _ = _gradients(model, x, local=False)
    assert alone.alone and not whole.alone
    assert alone.modules["0"].out_channels == 4 and whole.modules["0"].out_channels == 10
    for name, g in want.items():
        assert g.abs().max() > 0
        torch.testing.assert_close(got[name], g, rtol=1e-5, atol=1e-7)
    assert all(not p.requires_grad for p in alone.copy.parameters())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # untouched
    with pytest.raises(GrowthInputError, match="new units alone"):
        alone.loss(batch, F.mse_loss, {}, {})


def test_a_normalisation_over_the_channels_keeps_the_whole_model():
    """LayerNorm mixes the channels: the trial keeps the old units, and its gradient is the
    one the whole model gives."""
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    trial, got, batch = _gradients(_layer_norm_mlp(), x, local=True)
    _, want, _ = _gradients(_layer_norm_mlp(), x, local=False)
    assert not trial.alone and trial.modules["fc1"].out_features == 10
    for name, g in want.items():
        torch.testing.assert_close(got[name], g)
    assert torch.isfinite(trial.loss(batch, F.mse_loss, {}, {}))
