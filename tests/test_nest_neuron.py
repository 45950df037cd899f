"""NeST Policy 2: neurons from the bridging gradient (sign rule, birth strength, connections)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchgrow import Grower
from torchgrow.errors import GrowthInputError
from torchgrow.graph import growable_units
from torchgrow.how import NeSTNeuron, dense_pair_matrix
from torchgrow.ops import apply_mask, check_consistent, mask_of
from torchgrow.size import Units
from torchgrow.stats import CONSUMER_GRAD, PRODUCER_INPUT, gather
from torchgrow.when import Manual
from torchgrow.where import Layers


def net(masked=False):
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(8, 6),
            act=nn.ReLU(),
            fc2=nn.Linear(6, 5),
            act2=nn.ReLU(),
            fc3=nn.Linear(5, 3),
        )
    )
    if masked:
        for name in ("fc1", "fc2", "fc3"):
            apply_mask(
                getattr(model, name), density=0.4, generator=torch.Generator().manual_seed(1)
            )
    return model


def data():
    g = torch.Generator().manual_seed(2)
    return torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)


def bridging(model, x, y, unit="fc2"):
    units = [u for u in growable_units(model) if u.name == unit]
    stats = gather(model, (x, y), F.cross_entropy, units, {PRODUCER_INPUT, CONSUMER_GRAD})
    return (
        dense_pair_matrix(
            stats.producer_inputs[unit], stats.consumer_grads[units[0].consumers[0].name]
        ),
        units[0],
        stats,
    )


def test_single_selected_pair_follows_the_sign_rule():
    model = net()
    x, y = data()
    b, unit, stats = bridging(model, x, y)
    init = NeSTNeuron(alpha=0.5, beta=1e-9, seed=0).init(unit, 1, stats, model)  # one pair only
    w_in, w_out = init.fan_in["fc2"][0].double(), init.fan_out["fc3"][:, 0].double()
    m, n = divmod(int(b.abs().argmax()), b.shape[1])
    assert torch.count_nonzero(w_in) == 1 and w_in[n] != 0
    assert torch.count_nonzero(w_out) == 1 and w_out[m] != 0
    assert torch.sign(w_out[m] * w_in[n]) == -torch.sign(b[m, n])


@pytest.mark.parametrize("seed", range(5))
def test_isolated_pairs_oppose_the_gradient_and_alpha_sets_the_mean_magnitude(seed):
    model = net()
    x, y = data()
    b, unit, stats = bridging(model, x, y)
    how = NeSTNeuron(alpha=0.7, beta=0.15, seed=seed)
    init = how.init(unit, 2, stats, model)
    count = int(init.info["pairs"])
    thr = init.info["threshold"]
    selected = (b.abs() >= thr) & (b != 0)
    assert int(selected.sum()) == count
    rows, cols = selected.sum(1), selected.sum(0)
    for j in range(2):
        w_in, w_out = init.fan_in["fc2"][j].double(), init.fan_out["fc3"][:, j].double()
        for m, n in selected.nonzero().tolist():
            if rows[m] == 1 and cols[n] == 1:  # a path no other pair shares
                assert torch.sign(w_out[m] * w_in[n]) == -torch.sign(b[m, n])
        # birth strength: mean |new| = alpha * mean |existing non-zero|
        for new, old in ((w_in, model.fc2.weight), (w_out, model.fc3.weight)):
            old = old.detach()
            expected = 0.7 * old[old != 0].abs().mean()
            assert new[new != 0].abs().mean() == pytest.approx(float(expected), rel=1e-5)
        # only the selected inputs/outputs carry weight
        assert set(w_in.nonzero().flatten().tolist()) <= set(
            selected.any(0).nonzero().flatten().tolist()
        )


def test_grown_neuron_is_connected_exactly_by_its_nonzero_pattern():
    model = net(masked=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = data()
    grower = Grower(
        model,
        opt,
        when=Manual(),
        where=Layers(["fc2"]),
        how=NeSTNeuron(alpha=0.5, beta=0.1),
        size=Units(2),
    )
    (ev,) = grower.grow((x, y))
    assert model.fc2.out_features == 7
    new_rows = model.fc2.weight[5:].detach()
    assert torch.equal(mask_of(model.fc2)[5:] != 0, new_rows != 0)
    new_cols = model.fc3.weight[:, 5:].detach()
    assert torch.equal(mask_of(model.fc3)[:, 5:] != 0, new_cols != 0)
    assert torch.count_nonzero(model.fc2.bias[5:]) == 0
    assert (
        ev.max_abs_delta > 0
    )  # NeST neurons change the function on purpose; the event says how much
    check_consistent(model, opt)


def test_neuron_growth_refuses_conv_and_bad_settings():
    with pytest.raises(GrowthInputError):
        NeSTNeuron(alpha=0)
    with pytest.raises(GrowthInputError):
        NeSTNeuron(beta=0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 36, 3))
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 3, (4,))
    with pytest.raises(GrowthInputError, match="Linear"):
        Grower(model, None, when=Manual(), how=NeSTNeuron()).grow((x, y))
