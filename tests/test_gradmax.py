"""GradMax: the closed form against independent oracles, the iterative solver, the method's defaults."""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchgrow import Grower, methods, models
from torchgrow.graph import find_unit
from torchgrow.how import (
    GradMax,
    GradMaxFallbackWarning,
    GradMaxOpt,
    GradMaxRankWarning,
    LossDescent,
    Random,
    fan_out_block,
    fan_out_vectors,
)
from torchgrow.nn import ReLU1
from torchgrow.ops import DeadUnitWarning, check_consistent, widen
from torchgrow.size import Units
from torchgrow.when import Manual
from torchgrow.where import Layers


def fan_in_gradient(model, producer, consumer, vector, x, y, loss_fn=F.mse_loss):
    """Oracle: widen a copy by one unit with fan-out `vector`, return the autograd gradient of its
    zero fan-in (flattened). Independent of GradMax's own matrices."""
    m = copy.deepcopy(model)
    width = find_unit(m, producer).width
    cons = dict(m.named_modules())[consumer]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        widen(m, producer, 1, fan_out=fan_out_block(cons, vector[None]))
    loss = loss_fn(m(x), y)
    (g,) = torch.autograd.grad(loss, dict(m.named_modules())[producer].weight)
    return g[width:].flatten().double()


def operator_matrix(model, producer, consumer, x, y):
    """The matrix of the linear map fan-out -> gradient of the zero fan-in, probed column by column."""
    cons = dict(model.named_modules())[consumer]
    d = fan_out_vectors(cons).shape[1]
    cols = [fan_in_gradient(model, producer, consumer, torch.eye(d)[i], x, y) for i in range(d)]
    return torch.stack(cols, 1)  # (fan-in dim, fan-out dim)


def grow_once(model, how, x, y, k=1, layer=None, loss_fn=F.mse_loss):
    grower = Grower(
        model,
        None,
        when=Manual(),
        where=Layers([layer]) if layer else None,
        how=how,
        size=Units(k),
        loss_fn=loss_fn,
    )
    return grower.grow((x, y))


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(6, 4), act=ReLU1(), fc2=nn.Linear(4, 3)))


def data(shape, out, n=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randn(n, *out, generator=g)


def test_dense_fan_out_is_the_top_left_singular_vector_of_m():
    model = mlp()
    x, y = data((6,), (3,))
    before = copy.deepcopy(model)
    # independent M with numpy: gradient at fc2's output times fc1's input
    out = before(x)
    g = (2.0 / out.numel()) * (out - y).detach().numpy()
    m = g.T @ x.numpy()
    u, s, _ = np.linalg.svd(m.astype(np.float64))
    (ev,) = grow_once(model, GradMax(scale=0.5), x, y)
    new = model.fc2.weight[:, 4].detach().double().numpy()
    r = 0.5 * before.fc2.weight.detach().norm(dim=0).mean().item()
    assert np.allclose(np.abs(new), np.abs(u[:, 0]) * r, atol=1e-6)
    assert abs(np.abs(new @ u[:, 0]) - r) < 1e-6  # same direction up to sign
    assert ev.info["sigma_1"] == pytest.approx(s[0], rel=1e-6)
    # the gradient of the new fan-in right after growth is r * sigma_1 (autograd's, too) ...
    assert ev.grad_norm_fan_in == pytest.approx(r * s[0], rel=1e-5)
    oracle = fan_in_gradient(before, "fc1", "fc2", torch.from_numpy(new).float(), x, y)
    assert float(oracle.norm()) == pytest.approx(r * s[0], rel=1e-5)
    # ... and larger than with any random fan-out of the same norm
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        v = torch.randn(3, generator=gen)
        v = v / v.norm() * r
        assert fan_in_gradient(before, "fc1", "fc2", v, x, y).norm() <= ev.grad_norm_fan_in + 1e-6


@pytest.mark.parametrize("k", [3, 12, 40])
def test_a_wide_matrix_is_solved_through_its_thin_factors_as_by_the_full_svd(k):
    """n = 8 rows, dimensions 30 and 50: M = G^T H has rank 8. The thin route gives the
    same singular values and (up to sign) the same directions as the SVD of M; past the
    rank it completes them orthonormally, orthogonal to M's column space."""
    gen = torch.Generator().manual_seed(0)
    g, h = torch.randn(8, 30, generator=gen), torch.randn(8, 50, generator=gen)
    m = g.double().T @ h.double()
    u, s, _ = torch.linalg.svd(m)
    how = GradMax()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows, sv = how._dense_directions(h, g, k, "fc")
    assert bool(any(issubclass(w.category, GradMaxRankWarning) for w in caught)) == (k > 8)
    top = min(k, 8)
    assert torch.allclose(sv[:top], s[:top], rtol=1e-10)
    assert torch.allclose((rows[:top] @ u[:, :top]).abs(), torch.eye(top, dtype=torch.float64),
                          atol=1e-10)  # fmt: skip
    if k > 8:
        ortho = rows[: min(k, 30)]
        eye = torch.eye(ortho.shape[0], dtype=torch.float64)
        assert torch.allclose(ortho @ ortho.T, eye, atol=1e-10)
        assert float((rows[8 : min(k, 30)] @ m).abs().max()) < 1e-10  # zero gradient
        assert torch.allclose(rows.norm(dim=1), torch.ones(k, dtype=torch.float64))
        assert sv[8:].abs().max() < 1e-10


@pytest.mark.parametrize(
    "stride,padding,stride2,padding2", [(1, 1, 1, 1), (2, 1, 2, 0), (1, 0, 2, 2), (2, 2, 1, 0)]
)
def test_conv_fan_out_matches_the_probed_operator(stride, padding, stride2, padding2):
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(
            c1=nn.Conv2d(2, 3, 3, stride=stride, padding=padding),
            act=ReLU1(),
            c2=nn.Conv2d(3, 2, 3, stride=stride2, padding=padding2),
            flat=nn.Flatten(),
        )
    )
    x = torch.randn(5, 2, 9, 9)
    y = torch.randn_like(model(x)).detach()
    before = copy.deepcopy(model)
    a = operator_matrix(before, "c1", "c2", x, y)  # (2*9, 2*9)
    _, s, vh = torch.linalg.svd(a)
    (ev,) = grow_once(model, GradMax(scale=0.5), x, y)
    assert ev.info["solver"] == "svd"
    r = 0.5 * fan_out_vectors(before.c2).norm(dim=1).mean().item()
    new = fan_out_vectors(model.c2)[3].double()
    assert abs(abs(float(new @ vh[0])) - r) < 1e-5 * max(1.0, r)  # top right singular vector
    assert ev.grad_norm_fan_in == pytest.approx(r * float(s[0]), rel=1e-5)
    assert ev.max_abs_delta <= 1e-6


@pytest.mark.parametrize("out", [2, 4])  # the map's fan-out side 18 (= fan-in side), or 36
@pytest.mark.parametrize(("map_blocks", "solver"), [(0, "iterative"), (4, "map")])
def test_iterative_solver_through_max_pool_finds_the_top_subspace(map_blocks, solver, out):
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(
            c1=nn.Conv2d(2, 3, 3, padding=1),
            act=ReLU1(),
            pool=nn.MaxPool2d(2),
            c2=nn.Conv2d(3, out, 3, padding=1),
            flat=nn.Flatten(),
        )
    )
    x = torch.randn(6, 2, 8, 8)
    y = torch.randn_like(model(x)).detach()
    before = copy.deepcopy(model)
    a = operator_matrix(before, "c1", "c2", x, y)
    s = torch.linalg.svdvals(a)
    events = grow_once(model, GradMax(scale=0.5, map_blocks=map_blocks), x, y, k=2)
    (ev,) = events
    assert ev.info["solver"] == solver
    assert ev.info["sigma_1"] == pytest.approx(float(s[0]), rel=1e-4)
    assert ev.info["sigma_k"] == pytest.approx(float(s[1]), rel=1e-4)
    r = 0.5 * fan_out_vectors(before.c2).norm(dim=1).mean().item()
    expected = r * float(s[:2].norm())
    assert ev.grad_norm_fan_in == pytest.approx(expected, rel=1e-4)
    new = fan_out_vectors(model.c2)[3:].double()
    assert torch.allclose(new @ new.T, r**2 * torch.eye(2, dtype=torch.float64), atol=1e-5)


def test_rank_deficient_matrix_warns_and_stays_orthonormal():
    model = mlp()
    x, y = data((6,), (3,), n=1)  # one example: M has rank 1
    with pytest.warns(GradMaxRankWarning, match="rank 1"):
        grow_once(model, GradMax(scale=1.0, scale_method="fixed"), x, y, k=3)
    new = model.fc2.weight[:, 4:].detach()
    assert torch.allclose(new.T @ new, torch.eye(3), atol=1e-5)


@pytest.mark.filterwarnings("ignore::torchgrow.how.GradMaxFallbackWarning")
def test_function_preserved_for_mlp_vgg_with_bn_and_conv_to_linear():
    cases = [
        (models.mlp([20, 8, 8, 5], activation="relu1"), (20,)),
        (
            models.vgg_small(
                (4, "M", 8, 8, "M"), input_size=12, batchnorm=True, activation="relu1"
            ),
            (1, 12, 12),
        ),
        (models.lenet5(width_mult=0.2, activation="relu1"), (1, 28, 28)),  # conv -> flatten -> fc
    ]
    for model, shape in cases:
        torch.manual_seed(0)
        model.eval()
        x = torch.randn(8, *shape)
        y = torch.randint(0, 5 if shape == (20,) else 10, (8,))
        y0 = model(x).detach()
        events = grow_once(model, GradMax(), x, y, k=2, loss_fn=F.cross_entropy)
        assert events and max(e.max_abs_delta for e in events) <= 1e-6
        assert (model(x) - y0).abs().max() <= 1e-6


def test_conv_to_linear_falls_back_to_random_with_a_warning_or_solves_it():
    torch.manual_seed(0)
    model = models.lenet5(width_mult=0.2, activation="relu1")
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    with pytest.warns(GradMaxFallbackWarning, match="falling back to random"):
        (ev,) = grow_once(model, GradMax(), x, y, layer="conv2", loss_fn=F.cross_entropy)
    assert ev.info["solver"] == "random-fallback"
    model = models.lenet5(width_mult=0.2, activation="relu1")
    (ev,) = grow_once(
        model, GradMax(mixed="iterative"), x, y, layer="conv2", loss_fn=F.cross_entropy
    )
    assert ev.info["solver"] == "iterative" and ev.grad_norm_fan_in > 0


def test_gradmax_beats_random_and_gradmaxopt_approaches_it():
    x, y = data((6,), (3,))
    norms = {}
    for name, how in {
        "random": Random(scale=0.5, seed=0),
        "gradmax": GradMax(scale=0.5),
        "opt": GradMaxOpt(scale=0.5, seed=0, lr=0.05),
    }.items():
        (ev,) = grow_once(mlp(), how, x, y)
        norms[name] = ev.grad_norm_fan_in
        assert ev.max_abs_delta <= 1e-6
    assert norms["gradmax"] > norms["random"]
    assert norms["random"] < norms["opt"] <= norms["gradmax"] * (1 + 1e-4)


def test_loss_descent_lowers_the_loss_and_reports_the_change():
    model = mlp()
    x, y = data((6,), (3,))
    before = F.mse_loss(model(x), y).item()
    (ev,) = grow_once(model, LossDescent(scale=0.5, in_scale=0.5, seed=0, lr=0.05), x, y, k=2)
    after = F.mse_loss(model(x), y).item()
    assert after < before
    assert ev.max_abs_delta > 0  # not function-preserving, and the event says by how much


def test_method_defaults_schedule_scaling_and_relu_warning():
    model = models.mlp([20, 16, 16, 5], activation="relu1")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    grower = methods.GradMax(model, opt, batch_size=256)
    assert (grower.when.steps, grower.when.start, grower.when.times) == (1250, 5000, 12)
    assert grower.size.initial == {"fc1": 16, "fc2": 16}
    assert grower.description["name"] == "GradMax"
    rr = methods.GradMax(models.mlp([20, 16, 16, 5], activation="relu1"), None, where="round_robin")
    assert (rr.when.steps, rr.when.start, rr.when.times) == (150, 10000, 24)  # 12 cycles x 2 layers
    with pytest.warns(DeadUnitWarning, match="ReLU1"):
        methods.GradMax(models.mlp([20, 16, 5], activation="relu"), None)


def test_method_grows_a_quarter_of_initial_width_and_keeps_the_optimizer():
    torch.manual_seed(0)
    model = models.mlp([10, 8, 8, 3], activation="relu1")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    grower = methods.GradMax(
        model, opt, update_frequency=3, start_iteration=3, n_growth_steps=3, loss_fn=F.cross_entropy
    )
    x, y = torch.randn(32, 10), torch.randint(0, 3, (32,))
    events = []
    for _ in range(12):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        events += grower.step((x, y))
    assert [e.step for e in events] == [3, 3, 6, 6, 9, 9]
    assert all(e.units_added == 2 for e in events)  # 25% of 8, fixed at construction
    assert model.fc1.out_features == 14 and model.fc2.out_features == 14
    assert max(e.max_abs_delta for e in events) <= 1e-6
    check_consistent(model, opt)


@pytest.mark.parametrize(
    "kwargs", [{"scale": 0}, {"scale_method": "max"}, {"mixed": "no"}, {"iterations": 0}]
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        GradMax(**kwargs)


def test_gradmax_grower_round_trips_through_a_checkpoint(tmp_path):
    import torchgrow

    torch.manual_seed(0)
    model = models.mlp([10, 8, 8, 3], activation="relu1")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    grower = methods.GradMax(model, opt, update_frequency=2, start_iteration=2, n_growth_steps=2)
    x, y = torch.randn(16, 10), torch.randint(0, 3, (16,))
    for _ in range(2):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        grower.step((x, y), F.cross_entropy)
    torchgrow.save(tmp_path / "gm.pt", model, opt, grower)
    ckpt = torchgrow.load(tmp_path / "gm.pt", loss_fn=F.cross_entropy)
    assert ckpt.model.fc1.out_features == 10
    assert ckpt.grower.description["name"] == "GradMax"
    assert isinstance(ckpt.grower.how, GradMax) and ckpt.grower.state.events == 1
    assert ckpt.grower.size.initial == {"fc1": 8, "fc2": 8}  # the fixed 25 % survives


def test_baselines_default_to_the_official_adam_rate():
    # the official code builds tf.keras.optimizers.Adam() (lr 0.001) for both baselines
    assert GradMaxOpt().lr == 0.001
    assert LossDescent().lr == 0.001


def test_train_mode_batchnorm_between_the_pair_warns_and_the_gradient_differs():
    from torchgrow.how import GradMaxBatchNormWarning

    def run(train: bool):
        torch.manual_seed(0)
        model = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(12, 8), bn=nn.BatchNorm1d(8), act=ReLU1(), fc2=nn.Linear(8, 4)
            )
        )
        model.train(train)
        x, y = torch.randn(64, 12), torch.randint(0, 4, (64,))
        g = Grower(model, None, when=Manual(), how=GradMax(), size=Units(1),
                   loss_fn=F.cross_entropy)  # fmt: skip
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (ev,) = g.grow((x, y))
        r = 0.5 * float(model.fc2.weight[:, :8].detach().norm(dim=0).mean())
        return ev, r, [w.category for w in caught]

    ev, r, caught = run(train=False)
    assert GradMaxBatchNormWarning not in caught
    assert ev.grad_norm_fan_in == pytest.approx(r * ev.info["sigma_1"], rel=1e-3)  # exact
    ev, r, caught = run(train=True)
    assert GradMaxBatchNormWarning in caught
    # batch statistics of a zero channel: the real gradient is ~1/sqrt(eps) the closed form's
    assert ev.grad_norm_fan_in > 100 * r * ev.info["sigma_1"]


def test_zero_fan_in_through_an_activation_nonzero_at_zero_warns_and_changes_the_function():
    from torchgrow.ops import FunctionChangeWarning

    for act, warns in ((nn.Sigmoid(), True), (nn.Softplus(), True), (nn.Tanh(), False)):
        torch.manual_seed(0)
        model = nn.Sequential(OrderedDict(fc1=nn.Linear(6, 5), act=act, fc2=nn.Linear(5, 3)))
        x, y = torch.randn(16, 6), torch.randn(16, 3)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            grower = methods.GradMax(model, None, layers=["fc1"], loss_fn=F.mse_loss)
            (ev,) = grower.grow((x, y))
        categories = [w.category for w in caught]
        assert (FunctionChangeWarning in categories) == warns, act
        if warns:
            assert ev.max_abs_delta > 0.05  # f(0) times the new fan-out reaches the output
        else:
            assert ev.max_abs_delta <= 1e-6
