"""How AutoGrow initialises a new block (Wen et al. 2020, following the official code).

A new sub-module gets the framework's default initialisation, except the
**last BatchNorm of a residual block** (``block.last_bn``), whose scale γ and
shift β the initialiser sets:

- :class:`ZeroInit`: γ = β = 0. The residual branch outputs exactly 0, so
  after a ReLU on a non-negative input the block is the identity: the
  network's function is preserved.
- :class:`AdamInit`: starts from the framework default (γ = 1, β = 0, as the
  official code leaves them), then trains only the new γ and β with Adam
  until training accuracy recovers (see :meth:`AdamInit.adapt`); not
  function-preserving.
- :class:`UniInit`: γ, β i.i.d. U(0, ``meta``) (the code's range is [0, 1),
  not symmetric).
- :class:`GauInit` (the paper's best): γ, β i.i.d. N(0, ``meta``²).
- :class:`DefaultInit`: nothing changed (plain nets, which have no residual
  branch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..errors import GrowthInputError, require_int
from ..policy import Policy

__all__ = ["BlockInit", "DefaultInit", "ZeroInit", "GauInit", "UniInit", "AdamInit", "last_bn"]

LossFn = Callable[[Tensor, Tensor], Tensor]


def last_bn(block: nn.Module) -> nn.Module | None:
    """The batch norm that ends the block's residual branch, or ``None``.

    A block declares it with ``residual = True`` and a ``last_bn`` attribute
    (:class:`~torchgrow.models.BasicBlock`, ``Bottleneck``,
    ``ResidualLinearBlock``); plain blocks have no residual branch.
    """
    if not getattr(block, "residual", False):
        return None
    bn = getattr(block, "last_bn", None)
    return bn if isinstance(bn, nn.modules.batchnorm._BatchNorm) else None


def _require_last_bn(block: nn.Module, who: str) -> nn.Module:
    bn = last_bn(block)
    if bn is None or not bn.affine:
        raise GrowthInputError(
            f"{who} sets the last BatchNorm of a residual block, but {type(block).__name__} "
            "is not a residual block with an affine `last_bn` (`residual = True`); plain nets "
            "use DefaultInit"
        )
    return bn


class BlockInit(Policy):
    """Base class: ``init(block)`` sets the new block's parameters before it is appended.

    Attributes
    ----------
    function_preserving : bool
        Whether appending the initialised block leaves the network's function
        unchanged (exactly, for a residual block after a ReLU).
    """

    function_preserving = False

    def init(self, block: nn.Module) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class DefaultInit(BlockInit):
    """Keep the framework's default initialisation (AutoGrow's rule for plain nets)."""

    def init(self, block: nn.Module) -> None:
        return None

    def describe(self) -> str:
        return "framework default initialisation"


class ZeroInit(BlockInit):
    """Last BatchNorm's γ = β = 0: the residual branch outputs 0 (function-preserving)."""

    function_preserving = True

    def init(self, block: nn.Module) -> None:
        bn = _require_last_bn(block, "ZeroInit")
        with torch.no_grad():
            bn.weight.zero_()
            bn.bias.zero_()

    def describe(self) -> str:
        return "ZeroInit: last BN gamma = beta = 0 (function-preserving)"


class _RandomBN(BlockInit):
    def __init__(self, meta: float = 1.0, seed: int = 0) -> None:
        if not meta > 0:
            raise GrowthInputError(f"{type(self).__name__}(meta) must be > 0, got {meta!r}")
        self.meta = float(meta)
        self.generator = torch.Generator().manual_seed(seed)

    def _draw(self, shape: torch.Size) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def init(self, block: nn.Module) -> None:
        bn = _require_last_bn(block, type(self).__name__)
        with torch.no_grad():
            for p in (bn.weight, bn.bias):
                p.copy_(self._draw(p.shape).to(device=p.device, dtype=p.dtype))

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class GauInit(_RandomBN):
    """Last BatchNorm's γ, β i.i.d. N(0, ``meta``²) (AutoGrow's default and best initialiser).

    Parameters
    ----------
    meta : float
        Standard deviation (the code's ``init_meta`` = 1.0).
    seed : int
        Seed of the draws.
    """

    def _draw(self, shape: torch.Size) -> Tensor:
        return torch.randn(shape, generator=self.generator) * self.meta

    def describe(self) -> str:
        return f"GauInit: last BN gamma, beta ~ N(0, {self.meta:g}^2)"


class UniInit(_RandomBN):
    """Last BatchNorm's γ, β i.i.d. U(0, ``meta``) (the official code's range, not symmetric).

    Parameters
    ----------
    meta : float
        Upper end of the range (the code's ``init_meta`` = 1.0).
    seed : int
        Seed of the draws.
    """

    def _draw(self, shape: torch.Size) -> Tensor:
        return torch.rand(shape, generator=self.generator) * self.meta

    def describe(self) -> str:
        return f"UniInit: last BN gamma, beta ~ U(0, {self.meta:g})"


class AdamInit(BlockInit):
    """Default γ = 1, β = 0, then train only the new last-BN γ and β with Adam until accuracy recovers.

    The official code (``main_gradual.py:load_all``) leaves the new last
    BatchNorm at PyTorch's default (γ = 1, β = 0) and hands it to Adam; so
    does :meth:`init` here, which is therefore **not** function-preserving:
    the driver records the change. After the block is appended,
    :meth:`adapt` freezes every other parameter and trains γ and β (Adam,
    ``lr``, ``weight_decay``) epoch by epoch, at most ``max_epochs``,
    stopping as soon as training accuracy exceeds the accuracy before growth
    minus ``recover_within`` (the code: 0.5 points).

    Parameters
    ----------
    lr, weight_decay : float
        Adam's settings (code: 1e-3 and 5e-4).
    max_epochs : int
        Budget of :meth:`adapt` in epochs (code: 10).
    recover_within : float
        Accuracy (fraction, 0.005 = 0.5 points) below the old training accuracy
        at which adaptation stops.
    """

    function_preserving = False

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 5e-4,
        max_epochs: int = 10,
        recover_within: float = 0.005,
    ) -> None:
        if not lr > 0 or not weight_decay >= 0 or not recover_within >= 0:
            raise GrowthInputError(
                "AdamInit needs lr > 0, weight_decay >= 0 and recover_within >= 0, got "
                f"{lr!r}, {weight_decay!r}, {recover_within!r}"
            )
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.max_epochs = require_int(max_epochs, "AdamInit(max_epochs)", 0)
        self.recover_within = float(recover_within)

    def init(self, block: nn.Module) -> None:
        bn = _require_last_bn(block, "AdamInit")
        with torch.no_grad():
            bn.weight.fill_(1.0)  # PyTorch's default, which the official code keeps
            bn.bias.zero_()

    def adapt(
        self,
        model: nn.Module,
        block: nn.Module,
        loader: DataLoader,
        loss_fn: LossFn,
        old_train_accuracy: float,
    ) -> dict[str, Any]:
        """Train the block's last-BN γ, β alone until training accuracy recovers.

        Parameters
        ----------
        model : nn.Module
            The grown model (the block already appended).
        block : nn.Module
            The new block.
        loader : DataLoader
            Training batches ``(x, y)``.
        loss_fn : callable
            The training loss.
        old_train_accuracy : float
            Training accuracy (fraction) of the network before growth.

        Returns
        -------
        dict
            ``epochs`` used, final ``train_accuracy``, and ``recovered``.
        """
        bn = _require_last_bn(block, "AdamInit")
        own = [bn.weight, bn.bias]
        own_ids = {id(p) for p in own}
        frozen = [p for p in model.parameters() if id(p) not in own_ids and p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        opt = torch.optim.Adam(own, lr=self.lr, weight_decay=self.weight_decay)
        goal = old_train_accuracy - self.recover_within
        epochs, acc = 0, -math.inf
        try:
            model.train()
            for _ in range(self.max_epochs):
                correct = total = 0
                for x, y in loader:
                    out = model(x)
                    loss = loss_fn(out, y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    correct += int((out.argmax(1) == y).sum())
                    total += len(y)
                epochs += 1
                acc = correct / max(total, 1)
                if acc > goal:
                    break
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return {"epochs": epochs, "train_accuracy": acc, "recovered": acc > goal}

    def describe(self) -> str:
        return (
            f"AdamInit: last BN from gamma 1, beta 0, trained alone with Adam (lr {self.lr:g}) for up to "
            f"{self.max_epochs} epochs until train accuracy recovers to within "
            f"{100 * self.recover_within:g} points"
        )
