"""NeST Policy 3: the best of r random feature maps by the loss on the growth batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchgrow import Grower, models
from torchgrow.errors import GrowthInputError
from torchgrow.how import NeSTFeatureMap
from torchgrow.ops import apply_mask, check_consistent, mask_of
from torchgrow.size import Units
from torchgrow.when import Manual
from torchgrow.where import Layers


def grow(r, seed=0, masked=False):
    torch.manual_seed(0)
    model = models.lenet5(width_mult=0.3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if masked:  # NeST's dense-over-sparse seed: every layer at 30 % connectivity
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                apply_mask(
                    m, density=0.3, generator=torch.Generator().manual_seed(2), optimizer=opt
                )
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g)
    grower = Grower(
        model,
        opt,
        when=Manual(),
        where=Layers(["conv1"]),
        how=NeSTFeatureMap(r=r, seed=seed),
        size=Units(2),
    )
    (ev,) = grower.grow((x, y))
    return model, opt, ev, F.cross_entropy(model(x), y).item()


def test_best_candidate_is_kept_and_is_at_least_as_good_as_the_average():
    model, opt, ev, loss = grow(r=8)
    assert model.conv1.out_channels == 6 + 2 and model.conv2.in_channels == 8
    assert ev.info["best_loss"] <= ev.info["mean_candidate_loss"]
    # the model now computes exactly the chosen candidate's loss
    assert abs(loss - ev.info["best_loss"]) < 1e-5
    check_consistent(model, opt)


def test_masked_layers_grow_and_compute_the_chosen_candidates_loss():
    model, opt, ev, loss = grow(r=4, masked=True)
    assert model.conv1.out_channels == 8 and model.conv2.in_channels == 8
    assert abs(loss - ev.info["best_loss"]) < 1e-5
    # old dormant connections stay dormant; the new map's connections are all active
    assert bool((mask_of(model.conv1)[6:] == 1).all())
    assert float(mask_of(model.conv1)[:6].mean()) < 0.5
    check_consistent(model, opt)


def test_more_candidates_never_do_worse_with_the_same_draws():
    # the first candidate of r=8 is the single candidate of r=1 (same seed)
    _, _, one, _ = grow(r=1)
    _, _, eight, _ = grow(r=8)
    assert eight.info["best_loss"] <= one.info["best_loss"] + 1e-7


def test_feature_map_growth_refuses_linear_units():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    with pytest.raises(GrowthInputError, match="Conv2d"):
        Grower(model, None, when=Manual(), how=NeSTFeatureMap()).grow((x, y))
