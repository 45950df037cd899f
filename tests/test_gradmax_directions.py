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
