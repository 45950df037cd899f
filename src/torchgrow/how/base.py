"""The initialisers' common ground: the :class:`How` interface, weight-layout helpers, ``Zero``, ``Random``.

A *how* receives the unit to grow, the number of new units, the statistics it
asked for (``needs``) and the model, and returns the new weights: the fan-in
(new rows of each producer) and the fan-out (new input slices of each
consumer). It never edits the model; :func:`torchgrow.ops.widen` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import GrowthInputError
from ..graph import GrowableUnit
from ..ops.masks import weight_parameter
from ..policy import Policy
from ..stats import Statistics


@dataclass
class Init:
    """New weights for one unit.

    Attributes
    ----------
    fan_in : dict
        Producer name -> new rows (``None`` or absent: zero).
    fan_out : dict
        Consumer name -> new input slices (``None`` or absent: zero).
    info : dict
        Facts worth logging (singular values, scales...).
    """

    fan_in: dict[str, Tensor | None] = field(default_factory=dict)
    fan_out: dict[str, Tensor | None] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- layout helpers
def logical_weight(module: nn.Module, *, effective: bool = False) -> Tensor:
    """The layer's weight as ``(out, in, ...)``, whatever its storage: a kind registered with
    ``out_dim=1`` (transformers' ``Conv1D``, stored ``(in, out)``) is read transposed, so the
    initialisers treat it as the ``Linear`` it is. ``effective``: the weight the layer applies
    (masked entries zero) rather than its trainable tensor."""
    from ..ops.registry import lookup

    w = (module.weight if effective else weight_parameter(module)).detach()
    ops = lookup(module)  # None: a kind the registry does not know reads as stored
    return w.transpose(0, 1) if ops is not None and ops.out_dim == 1 and w.dim() == 2 else w


def fan_in_vectors(producer: nn.Module) -> Tensor:
    """Incoming weights of each existing unit, one row per unit: shape ``(units, -1)``."""
    w = logical_weight(producer)
    return w.reshape(w.shape[0], -1)


def fan_out_vectors(consumer: nn.Module, factor: int = 1, *, effective: bool = False) -> Tensor:
    """Outgoing weights of each existing input unit of ``consumer``: shape ``(units, -1)``.

    ``effective=True`` reads the weight the layer applies (masked entries zero)
    rather than its trainable tensor.
    """
    w = logical_weight(consumer, effective=effective)
    if w.dim() == 2:  # Linear: (out, units * factor)
        out = w.shape[0]
        return w.view(out, -1, factor).permute(1, 0, 2).reshape(-1, out * factor)
    return w.transpose(0, 1).reshape(w.shape[1], -1)  # Conv: (out, units, kh, kw)


def fan_out_block(consumer: nn.Module, vectors: Tensor, factor: int = 1) -> Tensor:
    """Inverse of :func:`fan_out_vectors` for ``k`` new units: the block ``widen`` expects."""
    w = logical_weight(consumer)
    k = vectors.shape[0]
    if w.dim() == 2:
        out = w.shape[0]
        return vectors.view(k, out, factor).permute(1, 0, 2).reshape(out, k * factor)
    return vectors.view(k, w.shape[0], *w.shape[2:]).transpose(0, 1)


def target_norm(existing: Tensor, scale: float, scale_method: str) -> float:
    """Norm for new unit vectors: ``scale * mean existing norm`` or ``scale``.

    Parameters
    ----------
    existing : Tensor
        Existing unit vectors, one per row.
    scale : float
        The scale.
    scale_method : {"mean_norm", "fixed"}
        As in GradMax's official code.
    """
    if scale_method == "fixed":
        return float(scale)
    if scale_method == "mean_norm":
        norms = existing.norm(dim=1)
        return float(scale * norms.mean()) if norms.numel() else float(scale)
    raise GrowthInputError(f"scale_method must be 'mean_norm' or 'fixed', got {scale_method!r}")


def _normalise_rows(v: Tensor) -> Tensor:
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)


# ---------------------------------------------------------------- initialisers
class How(Policy):
    """Base class of initialisers.

    Attributes
    ----------
    needs : frozenset of str
        Statistics to gather before :meth:`init` (``"producer_input"``,
        ``"consumer_grad"``); empty for data-free initialisers.
    function_preserving : bool
        Whether the initialiser promises an unchanged function.
    new_connections : {"all", "nonzero"}
        Passed to :func:`torchgrow.ops.widen` for masked layers.
    """

    needs: frozenset[str] = frozenset()
    function_preserving: bool = False
    new_connections: str = "all"  # masked layers: "nonzero" connects only non-zero new weights

    def init(
        self, unit: GrowableUnit, k: int, stats: Statistics | None, model: nn.Module
    ) -> Init:  # pragma: no cover - interface
        raise NotImplementedError


class Zero(How):
    """Zero fan-in and zero fan-out: preserves the function; the new units start dead
    unless the activation has a non-zero slope at 0 *and* something else moves them.
    """

    function_preserving = True

    def init(self, unit: GrowableUnit, k: int, stats: Statistics | None, model: nn.Module) -> Init:
        return Init()

    def describe(self) -> str:
        return "zero fan-in and fan-out"


class Random(How):
    """Random directions scaled like the existing units (GradMax's ``AddRandom`` baseline).

    Each new unit's non-zero side is a random vector normalised to unit L2
    norm, times ``r``: ``scale`` x the mean norm of the existing units' vectors
    on that side (``scale_method="mean_norm"``) or ``scale`` (``"fixed"``).

    Parameters
    ----------
    scale : float
        The scale (> 0).
    zero_side : {"in", "out", None}
        Which side stays zero: ``"in"`` (default; function-preserving, as in
        GradMax's baseline), ``"out"`` (random fan-in, zero fan-out; also
        function-preserving), or ``None`` (both random: the function changes).
    scale_method : {"mean_norm", "fixed"}
        How ``r`` is computed.
    distribution : {"uniform", "normal"}
        ``"uniform"`` draws U[0, 1) entries as the official code does (all
        directions positive); ``"normal"`` draws N(0, 1).
    seed : int, optional
        Seed of the generator (default: drawn from torch's global RNG).
    """

    def __init__(
        self,
        scale: float = 0.5,
        zero_side: str | None = "in",
        scale_method: str = "mean_norm",
        distribution: str = "uniform",
        seed: int | None = None,
    ) -> None:
        if not (isinstance(scale, (int, float)) and scale > 0):
            raise GrowthInputError(
                f"Random(scale) must be > 0, got {scale!r} (a zero scale would zero the new "
                "weights: use how.Zero() for that)"
            )
        if zero_side not in ("in", "out", None):
            raise GrowthInputError(f"zero_side must be 'in', 'out' or None, got {zero_side!r}")
        if scale_method not in ("mean_norm", "fixed"):
            raise GrowthInputError(
                f"scale_method must be 'mean_norm' or 'fixed', got {scale_method!r}"
            )
        if distribution not in ("uniform", "normal"):
            raise GrowthInputError(
                f"distribution must be 'uniform' or 'normal', got {distribution!r}"
            )
        self.scale = float(scale)
        self.zero_side = zero_side
        self.scale_method = scale_method
        self.distribution = distribution
        self.generator = torch.Generator()
        self.generator.manual_seed(
            seed if seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        )
        self.function_preserving = zero_side is not None

    def _draw(self, k: int, dim: int, like: Tensor) -> Tensor:
        if self.distribution == "uniform":
            v = torch.rand((k, dim), generator=self.generator)
        else:
            v = torch.randn((k, dim), generator=self.generator)
        return _normalise_rows(v).to(dtype=like.dtype, device=like.device)

    def init(self, unit: GrowableUnit, k: int, stats: Statistics | None, model: nn.Module) -> Init:
        modules = dict(model.named_modules())
        out = Init(info={"how": "random"})
        if self.zero_side != "in":
            for p in unit.producers:
                existing = fan_in_vectors(modules[p])
                r = target_norm(existing, self.scale, self.scale_method)
                v = self._draw(k, existing.shape[1], existing) * r
                out.fan_in[p] = v.view(k, *logical_weight(modules[p]).shape[1:])
        if self.zero_side != "out":
            for c in unit.consumers:
                existing = fan_out_vectors(modules[c.name], c.factor)
                r = target_norm(existing, self.scale, self.scale_method)
                v = self._draw(k, existing.shape[1], existing) * r
                out.fan_out[c.name] = fan_out_block(modules[c.name], v, c.factor)
        return out

    def describe(self) -> str:
        side = {"in": "zero fan-in, random fan-out", "out": "random fan-in, zero fan-out"}.get(
            self.zero_side, "random fan-in and fan-out"
        )
        return f"{side} ({self.distribution}, {self.scale:g} x {self.scale_method})"

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


def fan_out_vectors_of_block(consumer: nn.Module, block: Tensor, factor: int = 1) -> Tensor:
    """Inverse of :func:`fan_out_block`: one vector per new unit from a fan-out block."""
    if block.dim() == 2:
        out = block.shape[0]
        return block.view(out, -1, factor).permute(1, 0, 2).reshape(-1, out * factor)
    return block.transpose(0, 1).reshape(block.shape[1], -1)
