"""GradMax where no closed form covers the unit: the same objective, solved through a trial copy.

The map ``fan-out -> gradient of the new fan-in`` is linear. :func:`iterate` runs subspace
iteration on it (double backward through :class:`torchgrow.trial.TrialGrowth`) with a
Rayleigh-Ritz step; :func:`exact_map` builds it exactly where its smaller side is short. See
``docs/gradmax.md``.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from ..errors import GrowthInputError
from ..graph import GrowableUnit
from ..stats import Statistics
from .base import _normalise_rows, fan_out_vectors, logical_weight
from .pair_matrix import fix_signs

__all__ = ["iterate", "exact_map", "SolverSettings"]


class SolverSettings(Protocol):
    """What the solvers read of their initialiser (:class:`torchgrow.how.GradMax`)."""

    iterations: int
    tol: float
    oversample: int
    map_blocks: int
    generator: torch.Generator


def iterate(
    gm: SolverSettings, model: nn.Module, unit: GrowableUnit, k: int, stats: Statistics
) -> tuple[dict[str, Tensor], Tensor, int | None]:
    """Subspace iteration on ``v -> A(v)``; returns the directions per consumer, their
    singular values and the number of iterations run (None: the map was built exactly)."""
    from ..trial import TrialGrowth

    modules = dict(model.named_modules())
    names = [c.name for c in unit.consumers]
    dims = [fan_out_vectors(modules[c.name], c.factor).shape[1] for c in unit.consumers]
    d = sum(dims)
    d_in = sum(logical_weight(modules[p])[0].numel() for p in unit.producers)
    kk = min(k, d)
    block = min(d, k + gm.oversample)  # extra columns speed up convergence of the top k
    if min(d, d_in) <= gm.map_blocks * block:
        return exact_map(gm, unit, names, dims, d_in, k, stats, model)
    trial = TrialGrowth(model, unit, block, local=stats.consumer_grads is not None)
    v = torch.linalg.qr(torch.randn(d, block, generator=gm.generator))[0]

    def gradients(vt: Tensor, create_graph: bool) -> list[Tensor]:
        parts = dict(zip(names, vt.split(dims, dim=1), strict=True))
        g = trial.fan_in_gradient(
            stats.batch,
            stats.loss_fn,
            parts,
            create_graph=create_graph,
            consumer_grads=stats.consumer_grads,
        )
        return list(g.values())

    prev: Tensor | None = None
    with torch.enable_grad():
        for done in range(gm.iterations + 1):
            vt = v.T.detach().clone().requires_grad_()
            last = done == gm.iterations
            gs = gradients(vt, create_graph=not last)
            b = torch.cat([g.detach().reshape(block, -1) for g in gs], 1).double()  # A(v_j)
            ritz = torch.linalg.svdvals(b)[:kk]  # the block's estimates of the top k
            if last or (prev is not None and bool(((ritz - prev).abs() <= gm.tol * ritz).all())):
                break
            prev = ritz
            (ata_v,) = torch.autograd.grad(gs, vt, grad_outputs=[g.detach() for g in gs])
            if not torch.isfinite(ata_v).all():
                raise GrowthInputError(f"GradMax on {unit.name!r}: non-finite gradients")
            v = torch.linalg.qr(ata_v.T.double())[0].float()
    p, s, qh = torch.linalg.svd(b.T, full_matrices=False)  # A V = P S Q^T
    rows = (v.double() @ qh.T).T[:kk]  # Rayleigh-Ritz: directions sorted by singular value
    parts_out, sv = finish(gm, rows, s, names, dims, k)
    return parts_out, sv, done


def finish(
    gm: SolverSettings, rows: Tensor, s: Tensor, names: list[str], dims: list[int], k: int
) -> tuple[dict[str, Tensor], Tensor]:
    """``rows`` (the top directions, sorted) padded with random unit rows up to ``k``, signs
    fixed and split per consumer; the singular values padded with zeros."""
    kk = rows.shape[0]
    if k > kk:
        extra = torch.randn(k - kk, rows.shape[1], generator=gm.generator, dtype=rows.dtype)
        rows = torch.cat([rows, _normalise_rows(extra)], 0)
    rows = fix_signs(_normalise_rows(rows))
    sv = torch.zeros(k, dtype=torch.float64)
    sv[:kk] = s[:kk]
    return dict(zip(names, rows.split(dims, dim=1), strict=True)), sv


def exact_map(
    gm: SolverSettings,
    unit: GrowableUnit,
    names: list[str],
    dims: list[int],
    d_in: int,
    k: int,
    stats: Statistics,
    model: nn.Module,
) -> tuple[dict[str, Tensor], Tensor, None]:
    """The matrix ``M`` (``d_in x d``) of the linear map ``fan-out -> gradient of the new
    fan-in``, built in one pass, and its top-``k`` right singular directions.

    One trial unit per basis vector of the smaller side: with fan-outs ``I_d``
    the gradients are the columns of ``M``; with ``d_in`` units of any fan-out
    ``V``, the gradient of ``sum_j <e_j, A(v_j)>`` in ``V`` is ``M`` itself
    (``A`` is linear in ``V``).
    """
    from ..trial import TrialGrowth

    d = sum(dims)
    with torch.enable_grad():
        if d <= d_in:
            trial = TrialGrowth(model, unit, d, local=stats.consumer_grads is not None)
            parts = dict(zip(names, torch.eye(d).split(dims, dim=1), strict=True))
            gs = trial.fan_in_gradient(stats.batch, stats.loss_fn, parts, create_graph=False,
                                       consumer_grads=stats.consumer_grads)  # fmt: skip
            mat = torch.cat([g.reshape(d, -1) for g in gs.values()], 1).T  # (d_in, d)
        else:
            trial = TrialGrowth(model, unit, d_in, local=stats.consumer_grads is not None)
            vt = torch.zeros(d_in, d, requires_grad=True)
            parts = dict(zip(names, vt.split(dims, dim=1), strict=True))
            gs = trial.fan_in_gradient(stats.batch, stats.loss_fn, parts, create_graph=True,
                                       consumer_grads=stats.consumer_grads)  # fmt: skip
            eye = torch.eye(d_in).split([g[0].numel() for g in gs.values()], dim=1)
            outs = [e.reshape(g.shape) for e, g in zip(eye, gs.values(), strict=True)]
            used = [(g, o) for g, o in zip(gs.values(), outs, strict=True) if g.requires_grad]
            if used:
                (mat,) = torch.autograd.grad([g for g, _ in used], vt,
                                             grad_outputs=[o for _, o in used],
                                             allow_unused=True)  # fmt: skip
            mat = torch.zeros(d_in, d) if not used or mat is None else mat
    mat = mat.detach().double()
    if not torch.isfinite(mat).all():
        raise GrowthInputError(f"GradMax on {unit.name!r}: non-finite gradients")
    _, s, vh = torch.linalg.svd(mat, full_matrices=False)
    kk = min(k, d, s.numel())
    parts_out, sv = finish(gm, vh[:kk], s, names, dims, k)
    return parts_out, sv, None
