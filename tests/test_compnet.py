"""CompNet's building blocks: exact insertion (identity and morphism equation), group lasso, trim."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchgrow import data, methods, models
from torchgrow.errors import GrowthInputError
from torchgrow.graph import find_unit
from torchgrow.how.compnet import (
    compact_factors,
    identity_layer,
    morphism_factors,
    prox_group_lasso,
    unit_group_norms,
)
from torchgrow.methods.compnet import deepen
from torchgrow.ops import check_consistent, insert_after, shrink


def trained_mlp(seed: int = 0) -> tuple[nn.Sequential, torch.optim.Optimizer, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(12, 16), act1=nn.ReLU(), fc2=nn.Linear(16, 5)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(64, 12), torch.randint(0, 5, (64,))
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt, x


def test_identity_insertion_preserves_an_mlp_and_keeps_the_optimizer_consistent():
    model, opt, x = trained_mlp()
    y = model(x)
    insert_after(model, "act1", identity_layer(model.fc1), new_name="deep", optimizer=opt)
    assert (model(x) - y).abs().max() <= 1e-6
    assert model.deep.fc.weight.shape == (16, 16)
    check_consistent(model, opt)


def test_identity_insertion_preserves_a_cnn_with_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 6, 3, padding=1),
            bn1=nn.BatchNorm2d(6),
            act1=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc=nn.Linear(6, 4),
        )
    )
    x = torch.randn(8, 3, 7, 7)
    model.train()
    model(x)  # non-trivial running statistics
    model.eval()
    y = model(x)
    insert_after(model, "act1", identity_layer(model.conv1, batchnorm=True), new_name="deep")
    assert not model.deep.training  # takes the model's mode
    assert (model(x) - y).abs().max() <= 1e-6


def test_morphism_factors_are_exact_for_inputs_of_any_sign_and_narrower():
    torch.manual_seed(0)
    w = torch.randn(5, 16, dtype=torch.float64)
    a, w_next = morphism_factors(w)
    assert a.shape == (10, 16) and w_next.shape == (5, 10)  # 2 * rank 5 < 16
    h = torch.randn(32, 16, dtype=torch.float64)  # negative entries too
    assert torch.allclose(F.relu(h @ a.T) @ w_next.T, h @ w.T, atol=1e-10)
    # a lower rank is the best approximation of that rank (Eckart-Young)
    a2, w2 = morphism_factors(w, rank=2)
    s = torch.linalg.svdvals(w)
    err = torch.linalg.matrix_norm(w2[:, :2] @ a2[:2] - w)
    assert err == pytest.approx(float(s[2:].pow(2).sum().sqrt()), rel=1e-9)
    with pytest.raises(GrowthInputError, match="rank"):
        morphism_factors(w, rank=6)


def test_morphism_variant_in_a_network_preserves_the_function():
    model, _, x = trained_mlp()
    y = model(x)
    a, w_next = morphism_factors(model.fc2.weight)
    child = nn.Sequential(
        OrderedDict(
            fc1=model.fc1,
            act1=nn.ReLU(),
            new=nn.Linear(16, a.shape[0], bias=False),
            act_new=nn.ReLU(),
            fc2=nn.Linear(a.shape[0], 5),
        )
    )
    with torch.no_grad():
        child.new.weight.copy_(a)
        child.fc2.weight.copy_(w_next)
        child.fc2.bias.copy_(model.fc2.bias)
    assert a.shape[0] == 10 < 16  # narrower than the layer it follows
    assert (child(x) - y).abs().max() <= 1e-5


def test_prox_zeroes_exactly_the_small_groups_and_shrinks_the_rest():
    torch.manual_seed(0)
    new, nxt = nn.Linear(6, 8), nn.Linear(8, 3)
    with torch.no_grad():
        new.weight[:3].mul_(0.01)  # three small groups
        new.bias[:3].mul_(0.01)
        nxt.weight[:, :3].mul_(0.01)
    before = unit_group_norms(new, nxt)
    step = float(before[:3].max()) * 1.01
    assert bool((before[3:] > step).all())
    old_w = new.weight.detach().clone()
    after = prox_group_lasso(new, nxt, step)
    assert bool((after[:3] == 0).all())
    assert torch.equal(new.weight[:3], torch.zeros_like(new.weight[:3]))
    assert torch.equal(nxt.weight[:, :3], torch.zeros_like(nxt.weight[:, :3]))
    assert torch.allclose(after[3:], before[3:] - step, atol=1e-6)
    factor = (1 - step / before[3:])[:, None]
    assert torch.allclose(new.weight[3:], old_w[3:] * factor, atol=1e-7)
    assert torch.allclose(unit_group_norms(new, nxt), after, atol=1e-6)


def test_batchnorm_joins_the_groups():
    new, bn, nxt = nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)
    with torch.no_grad():
        new.weight.zero_()
        new.bias.zero_()
        nxt.weight.zero_()
    # only the BN's scale (1) is left in every group
    assert torch.allclose(unit_group_norms(new, nxt, bn), torch.ones(4))
    prox_group_lasso(new, nxt, 2.0, bn)
    assert torch.equal(bn.weight, torch.zeros(4)) and torch.equal(bn.bias, torch.zeros(4))


def test_trimming_zeroed_units_preserves_the_function_and_the_optimizer():
    model, opt, x = trained_mlp()
    insert_after(model, "act1", identity_layer(model.fc1), new_name="deep", optimizer=opt)
    new, nxt = model.deep.fc, model.fc2
    norms = unit_group_norms(new, nxt)
    step = float(norms.sort().values[10])  # zeroes the 11 weakest of 16 units
    after = prox_group_lasso(new, nxt, step)
    y = model(x)
    keep = torch.nonzero(after > 0).flatten()
    assert len(keep) == 5
    shrink(model, find_unit(model, "deep.fc").name, keep, optimizer=opt)
    assert new.out_features == 5 and nxt.in_features == 5
    assert (model(x) - y).abs().max() <= 1e-6
    check_consistent(model, opt)


def test_bad_pairs_are_refused():
    with pytest.raises(GrowthInputError, match="reads"):
        unit_group_norms(nn.Linear(3, 4), nn.Linear(5, 2))
    with pytest.raises(GrowthInputError, match="Linear/Conv2d"):
        unit_group_norms(nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(GrowthInputError, match="step"):
        prox_group_lasso(nn.Linear(3, 4), nn.Linear(4, 2), -1.0)


# ---------------------------------------------------------------- deepen and the driver
def small_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 6, 3, padding=1),
            act1=nn.ReLU(),
            conv2=nn.Conv2d(6, 4, 3, padding=1),
            act2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc=nn.Linear(4, 3),
        )
    )


@pytest.mark.parametrize("variant", ["identity", "morphism"])
def test_deepen_is_exact_for_mlps_and_cnns(variant):
    model, opt, x = trained_mlp()
    y = model(x)
    name = deepen(model, "fc1", variant=variant, optimizer=opt)
    assert (model(x) - y).abs().max() <= 1e-6  # morphism: float32 rounding, 1.2e-7 here
    width = dict(model.named_modules())[name].out_features
    assert width == (16 if variant == "identity" else 10)  # 2 x rank(fc2 weight) = 10 < 16
    check_consistent(model, opt)
    cnn = small_cnn()
    opt = torch.optim.SGD(cnn.parameters(), lr=0.1, momentum=0.9)
    xc = torch.randn(4, 1, 6, 6)
    y = cnn(xc)
    deepen(cnn, "conv1", variant=variant, optimizer=opt)
    assert (cnn(xc) - y).abs().max() <= 1e-6
    check_consistent(cnn, opt)


def test_morphism_deepening_is_exact_to_float64_precision():
    # in float32 the paired factors reproduce W h up to rounding (a few ulps of the outputs)
    model, _, x = trained_mlp()
    model, x = model.double(), x.double()
    y = model(x)
    deepen(model, "fc1", variant="morphism")
    assert (model(x) - y).abs().max() <= 1e-10


def test_deepen_refuses_a_layer_without_a_relu_module_and_changes_nothing():
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(4, 5), act=nn.Tanh(), fc2=nn.Linear(5, 2)))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(GrowthInputError, match="ReLU"):
        deepen(model, "fc1")
    with pytest.raises(GrowthInputError, match="variant"):
        deepen(model, "fc1", variant="wider")
    assert [n for n, _ in model.named_children()] == ["fc1", "act", "fc2"]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.fixture(scope="module")
def digits():
    return data.digits()


def test_compnet_deepens_compactly_and_keeps_the_optimizer_consistent(digits):
    torch.manual_seed(0)
    model = models.mlp([64, 32, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cn = methods.CompNet(
        model,
        opt,
        digits,
        lam=0.5,
        delta=1e-3,
        parent_epochs=15,
        sparse_epochs=4,
        finetune_epochs=2,
        tolerance=-1.0,  # keep the deeper net whatever its accuracy: the test is the mechanics
    )
    out = cn.run()
    (d,) = out["deepenings"]
    assert d["max_abs_delta"] <= 1e-5  # preserved at insertion
    assert d["width_at_insertion"] == 32 and d["width"] < 32  # the penalty removed units
    assert d["kept"] and d["width"] == dict(cn.model.named_modules())[d["new_layer"]].out_features
    phases = [r["phase"] for r in cn.history]
    assert phases[0] == "parent" and "sparse" in phases and phases[-1] == "finetune"
    check_consistent(cn.model, cn.optimizer)


def test_compnet_restores_the_parent_when_deepening_does_not_pay(digits):
    torch.manual_seed(0)
    model = models.mlp([64, 16, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cn = methods.CompNet(
        model, opt, digits, parent_epochs=3, sparse_epochs=1, finetune_epochs=0, tolerance=1.0
    )
    out = cn.run()
    assert not out["deepenings"][0]["kept"]
    assert out["parameters"] == cn.parent["parameters"]  # the parent is back
    assert [n for n, _ in cn.model.named_children()] == ["flatten", "fc1", "act1", "fc2"]
    check_consistent(cn.model, cn.optimizer)


def test_compact_factors_drop_weak_directions_and_keep_the_pairing():
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(20, 6, dtype=torch.float64))
    s = torch.tensor([5.0, 4.0, 3.0, 0.01, 0.01, 0.01], dtype=torch.float64)
    w = u @ torch.diag(s) @ v.T  # three strong directions, three weak ones
    a, w_next = morphism_factors(w)
    assert a.shape[0] == 12
    a2, w2, rel = compact_factors(w, a, w_next, lam=0.5)
    assert a2.shape[0] == 6 and w2.shape[1] == 6  # the three weak pairs are gone
    assert torch.equal(a2[3:], -a2[:3]) and torch.equal(w2[:, 3:], -w2[:, :3])
    h = torch.randn(16, 20, dtype=torch.float64)
    assert torch.allclose(F.relu(h @ a2.T) @ w2.T, h @ (w2[:, :3] @ a2[:3]).T, atol=1e-10)
    assert 0 < rel < 0.2
    with pytest.raises(GrowthInputError, match="smaller"):
        compact_factors(w, a, w_next, lam=100.0)
    assert float(torch.linalg.matrix_norm(w - w2[:, :3] @ a2[:3])) == pytest.approx(
        rel * float(torch.linalg.matrix_norm(w))
    )


@pytest.mark.filterwarnings("error::torchgrow.ops.DeadUnitWarning")
def test_factorise_route_inserts_a_compact_morphism_layer(digits):
    torch.manual_seed(0)
    model = models.mlp([64, 32, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cn = methods.CompNet(
        model,
        opt,
        digits,
        variant="morphism",
        route="factorise",
        lam=1.0,
        parent_epochs=8,
        sparse_epochs=1,
        finetune_epochs=1,
        tolerance=-1.0,
    )
    (d,) = cn.run()["deepenings"]
    assert 0 < d["width_at_insertion"] < 20  # fewer than 2 x rank(10) paired units
    assert d["max_abs_delta"] > 0  # approximate at insertion: the factorisation's residual
    with pytest.raises(GrowthInputError, match="morphism"):
        methods.CompNet(model, opt, digits, route="factorise")


def test_compnet_on_a_cnn_groups_the_flattened_fan_out(digits):
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 6, 3, padding=1),
            act1=nn.ReLU(),
            flat=nn.Flatten(),
            fc=nn.Linear(6 * 64, 10),
        )
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    cn = methods.CompNet(
        model, opt, digits, lam=2.0, parent_epochs=3, sparse_epochs=3, finetune_epochs=1,
        tolerance=-1.0,
    )  # fmt: skip
    (d,) = cn.run()["deepenings"]
    assert d["max_abs_delta"] <= 1e-5 and d["width_at_insertion"] == 6
    new = dict(cn.model.named_modules())[d["new_layer"]]
    assert isinstance(new, nn.Conv2d) and new.out_channels == d["width"] < 6
    assert cn.model.fc.in_features == d["width"] * 64
    check_consistent(cn.model, cn.optimizer)


def test_finetune_lr_applies_from_the_first_deepening(digits):
    torch.manual_seed(0)
    model = models.mlp([64, 16, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cn = methods.CompNet(
        model, opt, digits, parent_epochs=2, sparse_epochs=1, finetune_epochs=1,
        finetune_lr=0.01, tolerance=-1.0,
    )  # fmt: skip
    cn.run()
    assert all(g["lr"] == 0.01 for g in cn.optimizer.param_groups)
    with pytest.raises(GrowthInputError, match="finetune_lr"):
        methods.CompNet(model, opt, digits, finetune_lr=0.0)


def test_repeated_deepening_stacks_compacted_layers(digits):
    torch.manual_seed(0)
    model = models.mlp([64, 16, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cn = methods.CompNet(
        model, opt, digits, lam=0.2, parent_epochs=3, sparse_epochs=2, finetune_epochs=1,
        max_deepenings=3, tolerance=-1.0,
    )  # fmt: skip
    out = cn.run()
    assert [d["kept"] for d in out["deepenings"]] == [True, True, True]
    linears = [m for m in cn.model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 5  # fc1, three added layers, fc2
    assert [d["width_at_insertion"] for d in out["deepenings"]] == [16, 16, 16]
    check_consistent(cn.model, cn.optimizer)


def test_training_flops_count_every_training_step(digits):
    from torchgrow.why import flops_per_example

    torch.manual_seed(0)
    model = models.mlp([64, 16, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cn = methods.CompNet(model, opt, digits, parent_epochs=2, patience=5, max_deepenings=0)
    out = cn.run()
    n = len(cn.train_set.x_train)
    assert out["training_flops"] == 2 * 3 * flops_per_example(model, digits.x_test[:2]) * n
    assert [r["training_flops"] for r in cn.history] == [out["training_flops"] // 2] + [
        out["training_flops"]
    ]
