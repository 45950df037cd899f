"""GradMax's directions from the short side's Gram matrix agree with the SVD's."""

from __future__ import annotations

import warnings

import pytest
import torch

from torchgrow.how.gradmax import GradMax, GradMaxRankWarning, fix_signs


def _svd_reference(mat: torch.Tensor, k: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(mat.double(), full_matrices=False)
    basis = u.T if left else vh
    return fix_signs(basis[:k]), s[:k]


@pytest.mark.parametrize(("shape", "left"), [((12, 40), True), ((40, 12), False), ((7, 7), True)])
def test_gram_directions_equal_the_svd_on_random_matrices(
    shape: tuple[int, int], left: bool
) -> None:
    gen = torch.Generator().manual_seed(3)
    mat = torch.randn(*shape, generator=gen, dtype=torch.float64)
    k = 5
    rows, sv = GradMax()._directions(mat, k, "u", left=left)
    ref_rows, ref_sv = _svd_reference(mat, k, left)
    assert torch.allclose(sv, ref_sv, rtol=0, atol=1e-10 * float(ref_sv[0]))
    assert torch.allclose(rows, ref_rows, rtol=0, atol=1e-12)
    # orthonormal rows in the fan-out space
    assert torch.allclose(rows @ rows.T, torch.eye(k, dtype=rows.dtype), atol=1e-12)


def test_the_long_side_still_goes_through_the_svd_with_complete_factors() -> None:
    gen = torch.Generator().manual_seed(4)
    mat = torch.randn(30, 6, generator=gen, dtype=torch.float64)  # 30 fan-out directions, rank 6
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows, sv = GradMax()._directions(mat, 9, "u", left=True)
    assert any(issubclass(w.category, GradMaxRankWarning) for w in caught)
    assert torch.allclose(rows @ rows.T, torch.eye(9, dtype=rows.dtype), atol=1e-12)
    assert torch.all(sv[6:] == 0) and torch.all(sv[:6] > 0)


def test_gram_rank_is_judged_on_the_eigenvalues() -> None:
    """A rank-2 short side: rounding leaves eigenvalues near eps * top, whose square roots look
    like ~1e-8 * top singular values; they must count as zero (the rank warning fires at k=3)."""
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    mat = a @ torch.randn(2, 50, generator=gen, dtype=torch.float64)  # 6 x 50, rank 2
    gm = GradMax()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gm._directions(mat, 2, "u", left=True)  # no warning at the rank
    with pytest.warns(GradMaxRankWarning, match="rank 2"):
        rows, sv = gm._directions(mat, 3, "u", left=True)
    ref_rows, ref_sv = _svd_reference(mat, 2, left=True)
    assert torch.allclose(rows[:2], ref_rows, atol=1e-10)
    assert torch.allclose(sv[:2], ref_sv, rtol=1e-10)
    # the third direction is orthogonal to the range and has (numerically) no gradient
    assert float((rows[2] @ mat).norm()) < 1e-6 * float(ref_sv[0])


def test_a_dense_pair_whose_rows_do_not_align_is_refused_with_the_reason() -> None:
    """A mean over positions between the pair: 40 input rows against 8 gradient rows."""
    import torch.nn as nn
    import torch.nn.functional as F

    import torchgrow
    from torchgrow import size, when
    from torchgrow.errors import GrowthInputError

    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x)).mean(1))

    torch.manual_seed(0)
    model = Pooled()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    batch = (torch.randn(8, 5, 4), torch.randint(0, 3, (8,)))
    grower = torchgrow.Grower(
        model, opt, when=when.Manual(), how=GradMax(), size=size.Units(2), loss_fn=F.cross_entropy
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(GrowthInputError, match="40 rows of 4.*8 rows of 3.*Random"):
        grower.grow(batch)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(opt.param_groups[0]["params"]) == 4 and not grower.events


def _bn_net(conv: bool) -> torch.nn.Module:
    import torch.nn as nn

    from torchgrow.nn import ReLU1

    torch.manual_seed(1)
    if conv:
        return nn.Sequential(
            nn.Conv2d(2, 5, 3, padding=1), nn.BatchNorm2d(5), ReLU1(),
            nn.Conv2d(5, 4, 3, padding=1, stride=2), nn.Flatten(), nn.Linear(4 * 16, 3),
        )  # fmt: skip
    return nn.Sequential(nn.Linear(6, 7), nn.BatchNorm1d(7), ReLU1(), nn.Linear(7, 3))


@pytest.mark.parametrize("conv", [True, False])
@pytest.mark.parametrize("train_mode", [True, False])
def test_the_fan_in_gradient_through_a_batchnorm_is_known_without_a_backward(
    conv: bool, train_mode: bool
) -> None:
    """GradMax's reported gradient norm of the new fan-in through a BatchNorm (batch statistics:
    scaled by 1/sqrt(eps) and centred; running statistics: 1/sqrt(1+eps)) equals the one the
    grower measures by a forward and backward of the grown model."""
    import copy

    import torch.nn.functional as F

    import torchgrow
    from torchgrow import size, when, where

    gen = torch.Generator().manual_seed(2)
    x = torch.randn(16, 2, 8, 8, generator=gen) if conv else torch.randn(16, 6, generator=gen)
    batch = (x, torch.randint(0, 3, (16,), generator=gen))
    norms = {}
    for measure in (True, "full"):
        model = _bn_net(conv)
        model.train(train_mode)
        grower = torchgrow.Grower(
            copy.deepcopy(model),
            None,
            when=when.Manual(),
            where=where.Layers(["0"]),
            how=GradMax(),
            size=size.Units(2),
            loss_fn=F.cross_entropy,
            measure=measure,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (event,) = grower.grow(batch)
        norms[measure] = (event.grad_norm_fan_in, event.grad_norm_fan_out, event.info)
    # measure=True reports the closed form; "full" measures it on the grown model
    assert norms[True][0] == norms[True][2]["grad_norm_fan_in"]
    assert norms[True][0] == pytest.approx(norms["full"][0], rel=1e-5)
    assert norms["full"][0] > 0 and norms["full"][1] == 0 == norms[True][1]
    if train_mode:  # batch statistics: about 1/sqrt(eps) = 316 times the closed form's r*sigma
        assert norms[True][0] > 30 * norms[True][2]["sigma_1"] * 0.5


def test_a_tall_matrix_takes_its_directions_from_the_short_sides_gram_matrix() -> None:
    """The used side is the long one (a conv pair read by its fan-out): same directions as the
    SVD where sigma_k >= 1e-4 sigma_1; a rank-deficient one falls back to the SVD."""
    gen = torch.Generator().manual_seed(6)
    mat = torch.randn(30, 80, generator=gen, dtype=torch.float64)  # used side: the 80 columns
    gm = GradMax()
    assert gm._long_side_directions(mat.T, 5) is not None
    rows, sv = gm._directions(mat, 5, "u", left=False)
    ref_rows, ref_sv = _svd_reference(mat, 5, left=False)
    assert torch.allclose(sv, ref_sv, rtol=1e-10)
    assert torch.allclose(rows, ref_rows, atol=1e-10)
    low = torch.randn(80, 2, generator=gen, dtype=torch.float64) @ torch.randn(
        2, 30, generator=gen, dtype=torch.float64
    )  # rank 2: a third direction has no singular value to divide by
    assert gm._long_side_directions(low, 3) is None
    assert gm._long_side_directions(low, 2) is not None
