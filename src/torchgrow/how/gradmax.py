"""GradMax (Evci et al. 2022): zero fan-in, fan-out from the SVD of the gradient, or from the
same objective solved by subspace iteration where no closed form covers the unit; its baselines
are in :mod:`torchgrow.how.descent`.

See ``docs/gradmax.md``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import GrowthInputError, require_int, warn
from ..graph import NONZERO_AT_ZERO, GrowableUnit
from ..stats import Statistics
from .base import (
    How,
    Init,
    Random,
    _normalise_rows,
    fan_out_block,
    fan_out_vectors,
    target_norm,
)
from .gradmax_iterative import iterate
from .pair_matrix import (
    _batchnorm_between,
    _conv_padding,
    _exact_closed_form,
    _fan_in_norm_through_batchnorm,
    conv_pair_matrix,
    fix_signs,
)

# ---------------------------------------------------------------- GradMax and its baselines
_SPATIAL_OPS = {
    "MaxPool1d",
    "MaxPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "max_pool1d",
    "max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
}


class GradMaxFallbackWarning(UserWarning):
    """GradMax could not be applied to a unit and another rule initialised it."""


class GradMaxRankWarning(UserWarning):
    """More units were asked for than GradMax's matrix has informative directions."""


class GradMaxBatchNormWarning(UserWarning):
    """A training-mode BatchNorm between the pair: the closed form is not the real gradient."""


def _warn_train_mode_batchnorm(unit: GrowableUnit, modules: dict[str, nn.Module]) -> None:
    norms = [
        n
        for n in unit.per_channel
        if isinstance(modules[n], nn.modules.batchnorm._BatchNorm) and modules[n].training
    ]
    if not norms:
        return
    eps = min(float(modules[n].eps) for n in norms)
    warn(
        f"GradMax on {unit.name!r}: {norms} between the producer and its consumer normalise with "
        "batch statistics (training mode), which the closed form ignores, as the official code "
        "does. A new zero channel has zero batch variance there, so its real fan-in gradient is "
        f"scaled by about 1/sqrt(eps) = {eps**-0.5:.0f} and centred over the batch: the chosen "
        "fan-out maximises another gradient than the one the new units get. Grow with the "
        "BatchNorms in eval mode, grow pairs without one, or use how.GradMaxOpt (which "
        "differentiates through the real network)",
        GradMaxBatchNormWarning,
    )


class GradMax(How):
    """GradMax (Evci et al. 2022): zero fan-in, fan-out maximising the new fan-in's gradient.

    With zero fan-in the function is preserved whatever the fan-out, and the
    gradient of the loss w.r.t. the new fan-in is ``(W_out^new)^T M`` where
    ``M = sum_batch (dL/d consumer output) (producer input)^T``. Among
    fan-outs with orthogonal columns of norm ``r`` its norm is largest for the
    top-``k`` left singular vectors of ``M`` (right singular vectors of the
    conv matrix :func:`conv_pair_matrix`), each scaled to ``r``:
    ``scale`` x the mean norm of the existing fan-out vectors
    (``scale_method="mean_norm"``) or ``scale`` (``"fixed"``). Signs are made
    deterministic (largest-magnitude entry positive).

    Units GradMax's closed form does not cover:

    - a pooling layer (or a depthwise conv) between the pair, residual groups
      and several consumers are solved exactly for the same objective by
      subspace iteration on the linear map ``W_out -> gradient of the new
      fan-in`` (double backward through a widened copy, run only up to the
      consumers; ``iterations`` passes over ``k + oversample`` columns, then a
      Rayleigh-Ritz step); where the map's smaller side is at most
      ``map_blocks (k + oversample)`` it is built exactly instead, in one pass
      with one new unit per basis vector of that side, and its SVD taken;
    - a producer and consumer of different kinds (conv -> flatten -> linear)
      fall back to :class:`Random` with a warning, as the official code does
      (``mixed="iterative"`` solves them like the cases above instead).

    Per-channel layers between the pair (BatchNorm) are ignored by the closed
    form, as in the official code; a BatchNorm in training mode there gets a
    :class:`GradMaxBatchNormWarning` (its batch statistics scale the new
    units' real gradient by about ``1/sqrt(eps)``). When ``k`` exceeds the rank of ``M``, the
    extra directions are the next singular vectors of the full SVD: an
    orthonormal basis of the null space of ``M^T`` (their gradient is zero) and
    a :class:`GradMaxRankWarning` says so; beyond the consumer's dimension
    (no orthonormal directions are left) they are random unit vectors.

    Parameters
    ----------
    scale : float
        Target norm factor (0.5 in the paper's CIFAR/ImageNet configs, 1.0 in
        the student-teacher notebook).
    scale_method : {"mean_norm", "fixed"}
        How the target norm is computed.
    mixed : {"random", "iterative"}
        What to do with a producer/consumer pair of different kinds.
    iterations : int
        At most this many subspace-iteration passes for the cases without a
        closed form (each is one double backward through the network up to
        the consumers).
    tol : float
        The iteration stops once no estimate of the top-``k`` singular values
        moved by more than ``tol`` (relative) in a pass; 0 runs every pass.
    oversample : int
        Extra columns in the iterated block (randomised-SVD practice: the top
        ``k`` converge much faster).
    seed : int
        Seed for the random parts (fallback, extra directions, iteration start).
    map_blocks : int
        Build the map of a pair without a closed form exactly (solver ``"map"``)
        when its smaller side is at most this many iterated blocks: one pass at
        that many trial units costs about what that many iterations cost at one
        block. 0 always iterates.
    """

    needs = frozenset({"producer_input", "consumer_grad"})
    function_preserving = True

    def __init__(
        self,
        scale: float = 0.5,
        scale_method: str = "mean_norm",
        mixed: str = "random",
        iterations: int = 8,
        tol: float = 1e-5,
        oversample: int = 5,
        seed: int = 0,
        map_blocks: int = 4,
    ) -> None:
        if not (isinstance(scale, (int, float)) and scale > 0):
            raise GrowthInputError(f"GradMax(scale) must be > 0, got {scale!r}")
        if scale_method not in ("mean_norm", "fixed"):
            raise GrowthInputError(
                f"scale_method must be 'mean_norm' or 'fixed', got {scale_method!r}"
            )
        if mixed not in ("random", "iterative"):
            raise GrowthInputError(f"mixed must be 'random' or 'iterative', got {mixed!r}")
        self.scale = float(scale)
        self.scale_method = scale_method
        self.mixed = mixed
        self.iterations = require_int(iterations, "GradMax(iterations)", 1)
        self.oversample = require_int(oversample, "GradMax(oversample)", 0)
        self.map_blocks = require_int(map_blocks, "GradMax(map_blocks)", 0)
        if not (isinstance(tol, (int, float)) and tol >= 0):
            raise GrowthInputError(f"GradMax(tol) must be >= 0, got {tol!r}")
        self.tol = float(tol)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self._fallback = Random(scale, zero_side="in", scale_method=scale_method, seed=seed)

    def describe(self) -> str:
        return (
            f"zero fan-in; fan-out = top singular vectors of the gradient "
            f"({self.scale:g} x {self.scale_method})"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "fallback": self._fallback.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._fallback.load_state_dict(state["fallback"])

    # -- the cases
    def _kind(self, unit: GrowableUnit, modules: dict[str, nn.Module]) -> str:
        kinds = {type(modules[n]) for n in (*unit.producers, *(c.name for c in unit.consumers))}
        if len(kinds) > 1:
            return "mixed"
        if len(unit.producers) != 1 or len(unit.consumers) != 1:
            return "iterative"
        if set(unit.between) & _SPATIAL_OPS:
            return "iterative"
        if any(isinstance(modules[p], nn.Conv2d) for p in unit.per_channel):
            return "iterative"  # a depthwise conv between the pair
        only = modules[unit.producers[0]]
        if isinstance(only, nn.Conv2d):
            cons = modules[unit.consumers[0].name]
            if _conv_padding(only) is None or _conv_padding(cons) is None:
                return "iterative"
            return "conv"
        return "dense"

    def _directions(self, mat: Tensor, k: int, unit_name: str, left: bool) -> tuple[Tensor, Tensor]:
        """Top-k singular directions of ``mat`` (rows, unit norm) and the singular values."""
        mat = mat.double()
        rows, cols = mat.shape if left else mat.shape[::-1]  # the used side has `rows` rows
        if rows <= cols:  # the used side is the short one: its Gram matrix is the small problem
            return self._gram_directions(mat if left else mat.T, k, unit_name)
        found = self._long_side_directions(mat if left else mat.T, k)
        if found is not None:
            return found
        # past min(shape) the further directions need the complete factor of the used side
        u, s, vh = torch.linalg.svd(mat, full_matrices=k > min(mat.shape))
        basis = u.T if left else vh  # rows are directions in the fan-out space
        return self._take(basis, s, k, unit_name, max(mat.shape))

    def _gram_directions(self, a: Tensor, k: int, unit_name: str) -> tuple[Tensor, Tensor]:
        """The left singular directions of a short, wide ``a`` from the eigenvectors of its
        Gram matrix ``a a^T``: the same directions and singular values as the SVD of ``a``
        (eigenvalues are the squared singular values) at a fraction of its cost, since only
        the short side is factorised. The rank is read off the eigenvalues, whose rounding
        is relative to the largest one, not off their square roots."""
        w, q = torch.linalg.eigh(a @ a.T)  # ascending; all of the short side's directions
        w, basis = w.flip(0).clamp_min(0), q.flip(1).T
        return self._take(basis, w.sqrt(), k, unit_name, max(a.shape), gram=True)

    def _long_side_directions(self, a: Tensor, k: int) -> tuple[Tensor, Tensor] | None:
        """The top ``k`` left singular directions of a tall ``a`` from the short side: the
        eigenvectors ``v`` of ``a^T a`` give ``u = a v / sigma``, orthonormalised again. Used
        only where ``sigma_k >= 1e-4 sigma_1``, so that the division loses at most ~1e-8 of
        accuracy; otherwise (and past the short side) None, and the SVD is taken."""
        if k > a.shape[1]:
            return None
        w, q = torch.linalg.eigh(a.T @ a)
        w, v = w.flip(0).clamp_min(0)[:k], q.flip(1)[:, :k]
        top = float(w[0]) if w.numel() else 0.0
        if top <= 0 or float(w[-1]) < 1e-8 * top:
            return None
        s = w.sqrt()
        u = torch.linalg.qr((a @ v) / s)[0]  # columns in the order of the singular values
        return fix_signs(u.T), s

    def _dense_directions(
        self, h_prev: Tensor, g_next: Tensor, k: int, unit_name: str
    ) -> tuple[Tensor, Tensor]:
        """The left singular directions of ``M = G^T H`` without forming ``M`` when it is wide.

        ``M`` has rank at most the number of rows ``n`` of ``G`` and ``H``; when
        ``n`` is below both of its dimensions, the QR factorisations
        ``G^T = Q1 R1`` and ``H^T = Q2 R2`` give ``M = Q1 (R1 R2^T) Q2^T``, and the
        SVD of the ``n x n`` core gives the same singular values and directions
        (``Q1 U``) at ``O(n^2 d)`` cost instead of ``O(d^3)``. Directions past
        ``n`` are the next columns of the complete ``Q`` of ``G^T`` (orthonormal,
        orthogonal to ``M``'s range: zero gradient, as the full SVD's further
        vectors), at ``O(n d)`` per direction.
        """
        g = g_next.reshape(-1, g_next.shape[-1]).double()
        h = h_prev.reshape(-1, h_prev.shape[-1]).double()
        n, d_out, d_in = g.shape[0], g.shape[1], h.shape[1]
        if h.shape[0] != n:
            raise GrowthInputError(
                f"GradMax on {unit_name!r}: the producer's inputs give {h.shape[0]} rows of "
                f"{d_in} and the consumer's output gradients {n} rows of {d_out}; the closed "
                "form pairs them row by row, so something between the two layers changes the "
                "rows (a reshape or a reduction over positions). Grow this unit with Random or "
                "GradMaxOpt instead"
            )
        if n >= min(d_out, d_in):
            return self._directions(g.T @ h, k, unit_name, left=True)
        a, tau = torch.geqrf(g.T)  # G^T = Q1 R1, Q1 held as Householder reflectors
        q1, r1 = torch.linalg.householder_product(a, tau), a[:n].triu()
        r2 = torch.linalg.qr(h.T, mode="r")[1]
        uc, s, _ = torch.linalg.svd(r1 @ r2.T)
        basis = (q1 @ uc).T
        if k > n:  # the next columns of the complete Q: orthonormal, orthogonal to M's range
            m = min(k, d_out) - n
            pick = torch.zeros(d_out, m, dtype=a.dtype)
            pick[n + torch.arange(m), torch.arange(m)] = 1
            basis = torch.cat([basis, torch.ormqr(a, tau, pick).T])
        return self._take(basis, s, k, unit_name, max(d_out, d_in))

    def _take(
        self, basis: Tensor, s: Tensor, k: int, unit_name: str, big: int, gram: bool = False
    ) -> tuple[Tensor, Tensor]:
        """The first ``k`` rows of ``basis`` (random unit rows past its end), signs fixed, and
        the singular values; warns when ``k`` exceeds the numerical rank (``gram``: ``s`` are
        square roots of a Gram matrix's eigenvalues, so the rank is judged on ``s**2``)."""
        d = basis.shape[1]
        top = s.max() if s.numel() else torch.tensor(0.0)
        eps = big * torch.finfo(s.dtype).eps
        rank = int((s * s > top * top * eps).sum()) if gram else int((s > top * eps).sum())
        if k > rank:
            warn(
                f"GradMax on {unit_name!r}: {k} units asked for but the gradient matrix has rank "
                f"{rank}; the extra directions are "
                + (
                    "further singular vectors (orthonormal, zero gradient)"
                    if k <= d
                    else f"orthonormal up to {d}, then random unit vectors"
                ),
                GradMaxRankWarning,
            )
        take = basis[: min(k, basis.shape[0])]
        if k > take.shape[0]:
            extra = torch.randn(k - take.shape[0], d, generator=self.generator, dtype=take.dtype)
            take = torch.cat([take, _normalise_rows(extra)], 0)
        sv = torch.zeros(k, dtype=torch.float64)
        sv[: min(k, s.numel())] = s[: min(k, s.numel())]
        return fix_signs(take), sv

    def init(self, unit: GrowableUnit, k: int, stats: Statistics | None, model: nn.Module) -> Init:
        if stats is None:
            raise GrowthInputError(
                "GradMax needs growth-batch statistics (the engine gathers them)"
            )
        modules = dict(model.named_modules())
        kind = self._kind(unit, modules)
        if kind == "mixed" and self.mixed == "random":
            warn(
                f"GradMax: unit {unit.name!r} mixes layer kinds "
                f"({', '.join(sorted({type(modules[n]).__name__ for n in (*unit.producers, *(c.name for c in unit.consumers))}))}); "
                "falling back to random growth as the official code does "
                "(GradMax(mixed='iterative') solves it instead)",
                GradMaxFallbackWarning,
            )
            out = self._fallback.init(unit, k, stats, model)
            out.info.update(solver="random-fallback")
            return out
        if kind in ("dense", "conv"):
            _warn_train_mode_batchnorm(unit, modules)
            p, c = unit.producers[0], unit.consumers[0].name
            h, g = stats.producer_inputs[p], stats.consumer_grads[c]
            if kind == "dense":
                rows, sv = self._dense_directions(h, g, k, unit.name)
            else:
                mat = conv_pair_matrix(h, g, modules[p], modules[c])
                rows, sv = self._directions(mat, k, unit.name, left=False)
            parts = {c: rows}
            solver = "svd"
        else:
            parts, sv, done = iterate(self, model, unit, k, stats)
            solver = "iterative" if done is not None else "map"
        out = Init(info={"solver": solver, "sigma_1": float(sv[0]), "sigma_k": float(sv[-1])})
        if solver == "iterative":
            out.info["iterations"] = done
        for cons in unit.consumers:
            existing = fan_out_vectors(modules[cons.name], cons.factor)
            r = target_norm(existing, self.scale, self.scale_method)
            vec = _normalise_rows(parts[cons.name].to(existing.dtype)) * r
            out.fan_out[cons.name] = fan_out_block(modules[cons.name], vec, cons.factor)
        # The grown model computes what it did, so the new fan-in's gradient is known exactly
        # where the solver computed it for these very directions; the new units output 0
        # (zero fan-in through ops that keep 0 at 0), so their fan-out's gradient is 0.
        norm = None
        if kind in ("dense", "conv") and _exact_closed_form(unit):
            if kind == "dense":  # the matrix applied to the new fan-out
                g2 = g.reshape(-1, g.shape[-1]).double()
                norm = ((vec.double() @ g2.T) @ h.reshape(-1, h.shape[-1]).double()).norm()
            else:
                norm = (mat.double() @ vec.double().T).norm()
        elif kind in ("dense", "conv") and (bn := _batchnorm_between(unit, modules)) is not None:
            block = out.fan_out[unit.consumers[0].name]
            norm = _fan_in_norm_through_batchnorm(
                h, g, block, bn, modules[unit.producers[0]], modules[unit.consumers[0].name]
            )
        elif solver in ("iterative", "map") and len(unit.consumers) == 1 and k <= vec.shape[1]:
            if not set(unit.between) & NONZERO_AT_ZERO:
                norm = r * sv.norm()  # Ritz vectors of the real gradient map: |A(v_j)| = s_j
        if norm is not None:
            out.info.update(grad_norm_fan_in=float(norm), grad_norm_fan_out=0.0)
        return out
