"""NeST's connection-level policies: growth by dense gradient (Policy 1), magnitude pruning and
dead-unit removal (Policy 4)."""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchgrow.connections import (
    dead_units,
    dense_weight_gradients,
    effective_weight,
    grow_by_gradient,
    prune_by_magnitude,
    remove_dead_units,
)
from torchgrow.errors import GrowthInputError
from torchgrow.ops import apply_mask, check_consistent, is_masked, mask_of


def lenet_like(seed=0, bn=False):
    torch.manual_seed(seed)
    layers = [("fc1", nn.Linear(12, 10))]
    if bn:
        layers.append(("bn1", nn.BatchNorm1d(10)))
    layers += [
        ("act1", nn.ReLU()),
        ("fc2", nn.Linear(10, 8)),
        ("act2", nn.ReLU()),
        ("fc3", nn.Linear(8, 4)),
    ]
    return nn.Sequential(OrderedDict(layers))


def batch(n=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 12, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_dense_gradient_equals_autograd_of_an_unmasked_copy():
    model = lenet_like()
    x, y = batch()
    ref = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
    loss = F.cross_entropy(model(x), y)
    expected = torch.autograd.grad(loss, list(ref.values()))
    unmasked = lenet_like()
    got = dense_weight_gradients(unmasked, (x, y), F.cross_entropy)
    for name, g in zip(("fc1", "fc2", "fc3"), expected, strict=True):
        assert torch.allclose(got[name], g, atol=1e-6), name
    assert all(p.grad is None for p in unmasked.parameters())


def test_conv_dense_gradient_matches_autograd():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 2)
    )
    x, y = torch.randn(4, 2, 8, 8), torch.randint(0, 2, (4,))
    (expected,) = torch.autograd.grad(F.cross_entropy(model(x), y), model[0].weight)
    got = dense_weight_gradients(model, (x, y), F.cross_entropy, ["0"])
    assert torch.allclose(got["0"], expected, atol=1e-6)


def test_growth_activates_exactly_the_top_dormant_entries_by_gradient():
    model = lenet_like()
    for name in ("fc1", "fc2", "fc3"):
        apply_mask(getattr(model, name), density=0.3, generator=torch.Generator().manual_seed(3))
    x, y = batch()
    before = {n: mask_of(getattr(model, n)).clone() for n in ("fc1", "fc2", "fc3")}
    grads = dense_weight_gradients(model, (x, y), F.cross_entropy)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    counts = grow_by_gradient(model, (x, y), F.cross_entropy, fraction=0.25, lr=0.5, optimizer=opt)
    for n in ("fc1", "fc2", "fc3"):
        dormant = before[n] == 0
        k = math.ceil(0.25 * int(dormant.sum()))
        assert counts[n] == k
        new = (mask_of(getattr(model, n)) != 0) & dormant
        assert int(new.sum()) == k
        # every activated entry has |grad| >= every entry left dormant
        g = grads[n].abs()
        assert g[new].min() >= g[dormant & ~new].max()
        # and starts at one gradient step on the virtual weight
        w = getattr(model, n).weight.detach()
        assert torch.allclose(w[new], -0.5 * grads[n][new], atol=1e-6)
    check_consistent(model, opt)


def test_zero_init_growth_keeps_the_function_and_bad_input_changes_nothing():
    model = lenet_like()
    apply_mask(model.fc1, density=0.5, generator=torch.Generator().manual_seed(0))
    x, y = batch()
    y0 = model(x).detach()
    grow_by_gradient(model, (x, y), F.cross_entropy, fraction=0.5, init="zero", layers=["fc1"])
    assert torch.equal(model(x), y0)
    mask = mask_of(model.fc1).clone()
    for bad in (
        dict(fraction=0.0),
        dict(fraction=0.5, init="random"),
        dict(fraction=0.5, layers=["fc2"]),  # not masked
        dict(fraction=0.5, layers=["nope"]),
    ):
        with pytest.raises(GrowthInputError):
            grow_by_gradient(model, (x, y), F.cross_entropy, **bad)
    assert torch.equal(mask_of(model.fc1), mask)


def test_pruning_removes_the_smallest_active_magnitudes():
    model = lenet_like()
    w = model.fc2.weight.detach().abs().clone()
    pruned = prune_by_magnitude(model, 0.25, layers=["fc2"])
    k = math.floor(0.25 * w.numel())
    assert pruned == {"fc2": k}
    gone = mask_of(model.fc2) == 0
    assert int(gone.sum()) == k and w[gone].max() <= w[~gone].min()
    assert torch.count_nonzero(model.fc2.weight[gone]) == 0
    # a second step prunes among the still-active ones only
    prune_by_magnitude(model, 0.25, layers=["fc2"])
    assert int((mask_of(model.fc2) == 0).sum()) == k + math.floor(0.25 * (w.numel() - k))


def test_pruning_judges_the_effective_weight_behind_batchnorm():
    model = lenet_like(bn=True).eval()
    with torch.no_grad():
        model.bn1.weight.copy_(torch.linspace(0.01, 2.0, 10))  # unit 0 is almost switched off
    eff = effective_weight(model.fc1, model.bn1).abs()
    prune_by_magnitude(model, 0.1, layers=["fc1"])
    gone = mask_of(model.fc1) == 0
    assert eff[gone].max() <= eff[~gone].min()
    assert gone[0].sum() > gone[9].sum()  # the small-gamma unit loses the most


def test_masked_weights_stay_zero_while_training_with_momentum_and_adam():
    for make in (
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
        lambda p: torch.optim.Adam(p, lr=1e-2),
    ):
        model = lenet_like()
        prune_by_magnitude(model, 0.5)
        opt = make(model.parameters())
        x, y = batch()
        for _ in range(10):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        for name in ("fc1", "fc2", "fc3"):
            m = getattr(model, name)
            assert torch.count_nonzero(m.weight[mask_of(m) == 0]) == 0


def test_dead_units_are_found_and_removed_exactly_with_the_optimizer_consistent():
    model = lenet_like()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = batch()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    # unit 2 of fc1 loses all its fan-out; unit 5 of fc2 all its fan-in and its bias
    where = torch.zeros_like(model.fc2.weight, dtype=torch.bool)
    where[:, 2] = True
    where[5, :] = True
    from torchgrow.ops import prune_connections

    prune_connections(model.fc2, where, optimizer=opt)
    with torch.no_grad():
        model.fc2.bias[5] = 0
    assert dead_units(model) == {"fc1": [2], "fc2": [5]}
    model.eval()
    y0 = model(x).detach()
    removed = remove_dead_units(model, optimizer=opt)
    assert removed == {"fc1": 1, "fc2": 1}
    assert model.fc1.out_features == 9 and model.fc2.out_features == 7
    assert (model(x) - y0).abs().max() <= 1e-6
    check_consistent(model, opt)
    assert dead_units(model) == {}


def test_no_fan_in_unit_with_batchnorm_or_bias_is_not_dead():
    model = lenet_like(bn=True)
    with torch.no_grad():
        model.fc1.weight[3] = 0
        model.fc1.bias[3] = 0
    assert "fc1" not in dead_units(model)  # BatchNorm's shift makes it a constant, not zero


def test_dense_gradient_of_masked_layers_includes_dormant_entries():
    model = lenet_like()
    for name in ("fc1", "fc2"):
        apply_mask(getattr(model, name), density=0.2, generator=torch.Generator().manual_seed(0))
    twin = lenet_like()
    twin.load_state_dict(
        {k: v for k, v in model.state_dict().items() if "weight_mask" not in k}, strict=False
    )
    with torch.no_grad():
        for name in ("fc1", "fc2"):
            getattr(twin, name).weight.copy_(getattr(model, name).weight)  # effective weights
    x, y = batch()
    expected = torch.autograd.grad(F.cross_entropy(twin(x), y), [twin.fc1.weight, twin.fc2.weight])
    got = dense_weight_gradients(model, (x, y), F.cross_entropy, ["fc1", "fc2"])
    for name, g in zip(("fc1", "fc2"), expected, strict=True):
        dormant = mask_of(getattr(model, name)) == 0
        assert torch.count_nonzero(g[dormant]) > 0  # the virtual weights do get gradient
        assert torch.allclose(got[name], g, atol=1e-6), name


def test_remove_mask_on_a_deep_copy_leaves_the_original_masked():
    from torchgrow.ops import remove_mask

    layer = nn.Linear(6, 4)
    apply_mask(layer, density=0.5, generator=torch.Generator().manual_seed(0))
    twin = copy.deepcopy(layer)
    remove_mask(twin)
    assert not is_masked(twin) and is_masked(layer)
    x = torch.randn(3, 6)
    assert torch.equal(layer(x), twin(x))  # the copy bakes in the same effective weight
    assert int((layer.weight == 0).sum()) >= 12
