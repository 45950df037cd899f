"""GradMax (Evci et al. 2022) and the baselines its paper compares against: GradMaxOpt, LossDescent.

See ``docs/gradmax.md``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import GrowthInputError, require_int, warn
from ..graph import NONZERO_AT_ZERO, UNIT_SLOPE_AT_ZERO, GrowableUnit
from ..stats import Statistics
from .base import (
    How,
    Init,
    Random,
    _normalise_rows,
    fan_out_block,
    fan_out_vectors,
    fan_out_vectors_of_block,
    logical_weight,
    target_norm,
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


def fix_signs(vectors: Tensor) -> Tensor:
    """Flip each row so that its largest-magnitude entry is positive (SVD signs are arbitrary)."""
    idx = vectors.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(vectors.gather(1, idx))
    signs[signs == 0] = 1
    return vectors * signs


def dense_pair_matrix(h_prev: Tensor, g_next: Tensor) -> Tensor:
    """GradMax's ``M = sum_batch g_next h_prev^T`` for a Linear -> Linear pair, shape ``(d_out, d_in)``."""
    h = h_prev.reshape(-1, h_prev.shape[-1]).double()
    g = g_next.reshape(-1, g_next.shape[-1]).double()
    return g.T @ h


def _conv_padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    return tuple(conv.padding)  # type: ignore[return-value]


def conv_pair_matrix(
    h_prev: Tensor, g_next: Tensor, producer: nn.Conv2d, consumer: nn.Conv2d
) -> Tensor:
    """GradMax's matrix for a Conv2d -> Conv2d pair, shape ``(m0*k1h*k1w, m2*k2h*k2w)``.

    ``N[(c0, p), (c2, q)]`` is the gradient that a new channel with fan-in tap
    ``(c0, p)`` and fan-out tap ``(c2, q)`` would give: the sum over the batch
    and the consumer's output positions ``z`` of ``g[c2, z]`` times the input
    value that tap ``p`` of the producer reads at the producer position that
    tap ``q`` of the consumer reads for ``z``. That is the weight gradient of
    the consumer's convolution applied to the producer's unfolded input
    (``m0*k1h*k1w`` channels, the producer's output positions), so it is
    computed as one (any stride, padding and dilation; the consumer's zero
    padding of the producer's output included), in the statistics' precision.
    For stride 1 it equals the rearranged gradient of GradMax's auxiliary
    ``(k1+k2-1)``-kernel conv.
    """
    n = h_prev.shape[0]
    k1 = producer.kernel_size
    u1 = F.unfold(
        h_prev,
        k1,
        dilation=producer.dilation,
        padding=_conv_padding(producer),
        stride=producer.stride,
    )
    h1 = [
        (h_prev.shape[2 + i] + 2 * producer.padding[i] - producer.dilation[i] * (k1[i] - 1) - 1)
        // producer.stride[i]
        + 1
        for i in range(2)
    ]
    c1, m2 = u1.shape[1], g_next.shape[1]
    u1 = u1.view(n, c1, h1[0], h1[1])
    try:
        w = torch.nn.grad.conv2d_weight(
            u1,
            (m2, c1, *consumer.kernel_size),
            g_next.to(u1.dtype),
            stride=consumer.stride,
            padding=_conv_padding(consumer),
            dilation=consumer.dilation,
        )
    except RuntimeError as exc:
        raise GrowthInputError(
            f"conv pair: the consumer's gradient {tuple(g_next.shape)} does not fit its "
            f"convolution of the producer's output ({exc})"
        ) from exc
    return w.permute(1, 0, 2, 3).reshape(c1, -1)


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

    def _iterate(
        self, model: nn.Module, unit: GrowableUnit, k: int, stats: Statistics
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
        block = min(d, k + self.oversample)  # extra columns speed up convergence of the top k
        if min(d, d_in) <= self.map_blocks * block:
            return self._exact_map(unit, names, dims, d_in, k, stats, model)
        trial = TrialGrowth(model, unit, block, local=stats.consumer_grads is not None)
        v = torch.linalg.qr(torch.randn(d, block, generator=self.generator))[0]

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
            for done in range(self.iterations + 1):
                vt = v.T.detach().clone().requires_grad_()
                last = done == self.iterations
                gs = gradients(vt, create_graph=not last)
                b = torch.cat([g.detach().reshape(block, -1) for g in gs], 1).double()  # A(v_j)
                ritz = torch.linalg.svdvals(b)[:kk]  # the block's estimates of the top k
                if last or (
                    prev is not None and bool(((ritz - prev).abs() <= self.tol * ritz).all())
                ):
                    break
                prev = ritz
                (ata_v,) = torch.autograd.grad(gs, vt, grad_outputs=[g.detach() for g in gs])
                if not torch.isfinite(ata_v).all():
                    raise GrowthInputError(f"GradMax on {unit.name!r}: non-finite gradients")
                v = torch.linalg.qr(ata_v.T.double())[0].float()
        p, s, qh = torch.linalg.svd(b.T, full_matrices=False)  # A V = P S Q^T
        rows = (v.double() @ qh.T).T[:kk]  # Rayleigh-Ritz: directions sorted by singular value
        parts_out, sv = self._finish(rows, s, names, dims, k)
        return parts_out, sv, done

    def _finish(
        self, rows: Tensor, s: Tensor, names: list[str], dims: list[int], k: int
    ) -> tuple[dict[str, Tensor], Tensor]:
        """``rows`` (the top directions, sorted) padded with random unit rows up to ``k``, signs
        fixed and split per consumer; the singular values padded with zeros."""
        kk = rows.shape[0]
        if k > kk:
            extra = torch.randn(k - kk, rows.shape[1], generator=self.generator, dtype=rows.dtype)
            rows = torch.cat([rows, _normalise_rows(extra)], 0)
        rows = fix_signs(_normalise_rows(rows))
        sv = torch.zeros(k, dtype=torch.float64)
        sv[:kk] = s[:kk]
        return dict(zip(names, rows.split(dims, dim=1), strict=True)), sv

    def _exact_map(
        self,
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
        parts_out, sv = self._finish(vh[:kk], s, names, dims, k)
        return parts_out, sv, None

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
            parts, sv, done = self._iterate(model, unit, k, stats)
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


def _exact_closed_form(unit: GrowableUnit) -> bool:
    """Whether the closed form's gradient is the real one: nothing per-channel between the pair
    and only ops of value 0 and slope 1 at 0 (``ReLU1``, ``tanh``...), which pass a zero-fan-in
    unit's gradient unchanged."""
    return (
        not unit.per_channel
        and all(c.factor == 1 for c in unit.consumers)
        and set(unit.between) <= UNIT_SLOPE_AT_ZERO
    )


def _batchnorm_between(unit: GrowableUnit, modules: dict[str, nn.Module]) -> nn.Module | None:
    """The one BatchNorm between a single pair whose other ops pass 0 with slope 1, or None."""
    if len(unit.per_channel) != 1 or not set(unit.between) <= UNIT_SLOPE_AT_ZERO:
        return None
    if any(c.factor != 1 for c in unit.consumers) or len(unit.consumers) != 1:
        return None
    bn = modules[unit.per_channel[0]]
    kinds = (nn.BatchNorm1d, nn.BatchNorm2d)
    return bn if type(bn) in kinds else None


def _fan_in_norm_through_batchnorm(
    h: Tensor, g: Tensor, block: Tensor, bn: nn.Module, producer: nn.Module, consumer: nn.Module
) -> float | None:
    """The gradient norm of zero-fan-in units' fan-in through a BatchNorm, in closed form.

    A new unit's pre-normalisation value is 0 everywhere and its new BatchNorm entry has
    weight 1, bias 0, running mean 0 and variance 1 (how ``widen`` grows a BatchNorm), so it
    outputs 0 and the ops after it (value 0, slope 1 at 0) pass its gradient ``d`` (the
    consumer's output gradient through the new fan-out) unchanged. With batch statistics the
    variance of an all-zero channel is 0, so the BatchNorm's backward is ``(d - mean(d)) /
    sqrt(eps)`` (the mean over the batch and positions); with running statistics it is ``d /
    sqrt(1 + eps)``. The fan-in gradient is that pulled back to the producer's input (dense
    pairs in float64, conv pairs by two convolutions in the statistics' precision). Returns
    None for shapes this does not cover (the grower then measures).
    """
    batch_stats = bn.training or bn.running_mean is None
    scale = (bn.eps if batch_stats else 1.0 + bn.eps) ** -0.5
    if isinstance(producer, nn.Linear) and h.dim() == 2 and g.dim() == 2:
        h, g, v = h.double(), g.double(), block.detach().double()
        d = g @ v  # (batch, k)
        if batch_stats:
            d = d - d.mean(0, keepdim=True)
        return float((scale * d.T @ h).norm())
    if not (isinstance(producer, nn.Conv2d) and h.dim() == 4 and g.dim() == 4):
        return None
    pad_p, pad_c = _conv_padding(producer), _conv_padding(consumer)
    if pad_p is None or pad_c is None or producer.groups != 1 or consumer.groups != 1:
        return None
    v = block.detach().to(h.dtype)  # the convolutions in the statistics' precision
    g = g.to(h.dtype)
    n, k = h.shape[0], v.shape[1]
    size = [
        (h.shape[2 + i] + 2 * pad_p[i] - producer.dilation[i] * (producer.kernel_size[i] - 1) - 1)
        // producer.stride[i]
        + 1
        for i in range(2)
    ]
    d = torch.nn.grad.conv2d_input(
        (n, k, *size), v, g, stride=consumer.stride, padding=pad_c, dilation=consumer.dilation
    )
    if batch_stats:
        d = d - d.mean((0, 2, 3), keepdim=True)
    w = torch.nn.grad.conv2d_weight(
        h,
        (k, h.shape[1], *producer.kernel_size),
        scale * d,
        stride=producer.stride,
        padding=pad_p,
        dilation=producer.dilation,
    )
    return float(w.double().norm())


def _project(vectors: Tensor, norms: float) -> Tensor:
    return _normalise_rows(vectors) * norms


class GradMaxOpt(How):
    """GradMax by optimisation (the official ``AddGradmaxOptim`` baseline).

    Starts from :class:`Random` growth (zero fan-in, uniform fan-out at the
    target norm), then takes ``steps`` Adam steps that *maximise* the norm of
    the new fan-in's gradient over the new fan-out, re-projecting each new
    vector to its target norm after every step.

    Parameters
    ----------
    scale, scale_method : see :class:`GradMax`.
    steps : int
        Adam steps (100 in the official code).
    lr : float
        Adam learning rate (the official code: Keras Adam's default, 0.001;
        its student-teacher notebook uses 100 for Fig. 2a).
    seed : int
        Seed of the random start.
    """

    needs = frozenset({"producer_input", "consumer_grad"})
    function_preserving = True

    def __init__(
        self,
        scale: float = 0.5,
        scale_method: str = "mean_norm",
        steps: int = 100,
        lr: float = 0.001,
        seed: int = 0,
    ) -> None:
        if not lr > 0:
            raise GrowthInputError(f"lr must be > 0, got {lr!r}")
        self.start = Random(scale, zero_side="in", scale_method=scale_method, seed=seed)
        self.steps = require_int(steps, "GradMaxOpt(steps)", 1)
        self.lr = float(lr)
        self.scale = float(scale)
        self.scale_method = scale_method

    def describe(self) -> str:
        return f"zero fan-in; fan-out: {self.steps} Adam steps maximising the fan-in gradient"

    def state_dict(self) -> dict[str, Any]:
        return self.start.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start.load_state_dict(state)

    def init(self, unit: GrowableUnit, k: int, stats: Statistics | None, model: nn.Module) -> Init:
        from ..trial import TrialGrowth

        if stats is None:
            raise GrowthInputError("GradMaxOpt needs growth-batch statistics")
        modules = dict(model.named_modules())
        start = self.start.init(unit, k, stats, model)
        trial = TrialGrowth(model, unit, k)
        names = [c.name for c in unit.consumers]
        factors = {c.name: c.factor for c in unit.consumers}
        v = {
            c: fan_out_vectors_of_block(modules[c], start.fan_out[c], factors[c])
            .clone()
            .requires_grad_()
            for c in names
        }
        norms = {c: float(v[c].detach().norm(dim=1).mean()) for c in names}
        opt = torch.optim.Adam(list(v.values()), lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.steps):
                g = trial.fan_in_gradient(
                    stats.batch,
                    stats.loss_fn,
                    v,
                    create_graph=True,
                    consumer_grads=stats.consumer_grads,
                )
                objective = sum(t.pow(2).sum() for t in g.values())
                opt.zero_grad()
                (-objective).backward()
                opt.step()
                with torch.no_grad():
                    for c in names:
                        v[c].copy_(_project(v[c], norms[c]))
        out = Init(info={"solver": "adam", "steps": self.steps})
        for c in names:
            out.fan_out[c] = fan_out_block(modules[c], v[c].detach(), factors[c])
        return out


class LossDescent(How):
    """Firefly-like growth (the official ``AddFirefly`` baseline): descend the loss over new weights.

    Starts from random fan-in and fan-out (uniform directions; fan-out at
    ``scale`` x the mean existing fan-out norm, fan-in at ``in_scale`` x the
    mean existing fan-in norm), then takes ``steps`` Adam steps *minimising*
    the loss over both, re-projecting each new vector to its target norm after
    every step. The function changes (the event records by how much).

    Parameters
    ----------
    scale : float
        Fan-out norm factor.
    in_scale : float
        Fan-in norm factor (> 0: a zero fan-in could not be re-projected).
    scale_method : {"mean_norm", "fixed"}
        How target norms are computed.
    steps : int
        Adam steps (100 in the official code).
    lr : float
        Adam learning rate (the official code: Keras Adam's default, 0.001;
        its student-teacher notebook uses 100 for Fig. 2a).
    seed : int
        Seed of the random start.
    """

    needs = frozenset({"producer_input", "consumer_grad"})
    function_preserving = False

    def __init__(
        self,
        scale: float = 0.5,
        in_scale: float = 0.01,
        scale_method: str = "mean_norm",
        steps: int = 100,
        lr: float = 0.001,
        seed: int = 0,
    ) -> None:
        if not in_scale > 0:
            raise GrowthInputError(f"in_scale must be > 0, got {in_scale!r}")
        self.out_start = Random(scale, zero_side="in", scale_method=scale_method, seed=seed)
        self.in_start = Random(in_scale, zero_side="out", scale_method=scale_method, seed=seed + 1)
        self.steps = require_int(steps, "LossDescent(steps)", 1)
        self.lr = float(lr)

    def describe(self) -> str:
        return f"random fan-in and fan-out, then {self.steps} Adam steps on the loss"

    def state_dict(self) -> dict[str, Any]:
        return {"out": self.out_start.state_dict(), "in": self.in_start.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.out_start.load_state_dict(state["out"])
        self.in_start.load_state_dict(state["in"])

    def init(self, unit: GrowableUnit, k: int, stats: Statistics | None, model: nn.Module) -> Init:
        from ..trial import TrialGrowth

        if stats is None:
            raise GrowthInputError("LossDescent needs a growth batch")
        modules = dict(model.named_modules())
        outs = self.out_start.init(unit, k, stats, model).fan_out
        ins = self.in_start.init(unit, k, stats, model).fan_in
        trial = TrialGrowth(model, unit, k)
        factors = {c.name: c.factor for c in unit.consumers}
        v = {
            c: fan_out_vectors_of_block(modules[c], outs[c], factors[c]).clone().requires_grad_()
            for c in factors
        }
        w = {p: t.reshape(k, -1).clone().requires_grad_() for p, t in ins.items()}
        vn = {c: float(t.detach().norm(dim=1).mean()) for c, t in v.items()}
        wn = {p: float(t.detach().norm(dim=1).mean()) for p, t in w.items()}
        opt = torch.optim.Adam([*v.values(), *w.values()], lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.steps):
                loss = trial.loss(stats.batch, stats.loss_fn, w, v)
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    for c in v:
                        v[c].copy_(_project(v[c], vn[c]))
                    for p in w:
                        w[p].copy_(_project(w[p], wn[p]))
        out = Init(info={"solver": "adam", "steps": self.steps, "loss_after": float(loss.detach())})
        for c in v:
            out.fan_out[c] = fan_out_block(modules[c], v[c].detach(), factors[c])
        for p in w:
            out.fan_in[p] = w[p].detach().reshape(ins[p].shape)
        return out
