"""A trial growth: a copy of the model widened by ``k`` units whose new weights are free tensors.

Initialisers that search for new weights (GradMax's iterative solver,
GradMaxOpt, LossDescent) evaluate the loss of the grown network as a
differentiable function of the new fan-in and fan-out, without touching the
model: the copy is widened once, and the new blocks are substituted through
:func:`torch.func.functional_call`.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .batches import call_args, split_batch
from .errors import GrowthInputError
from .graph import GrowableUnit, example_of, find_unit, set_example
from .how.base import fan_out_block, fan_out_vectors
from .ops.masks import is_masked, remove_mask
from .ops.units import shrink, widen

__all__ = ["TrialGrowth"]

LossFn = Callable[[Tensor, Tensor], Tensor]


# Pass-through ops after which one channel's values depend on that channel alone.
CHANNELWISE = {
    "ReLU1", "relu1", "ReLU", "relu", "relu_", "ReLU6", "relu6", "LeakyReLU", "leaky_relu",
    "ELU", "elu", "SELU", "selu", "CELU", "celu", "GELU", "gelu", "SiLU", "silu", "Mish", "mish",
    "Sigmoid", "sigmoid", "Tanh", "tanh", "tanh_", "Hardtanh", "hardtanh", "Hardswish",
    "hardswish", "Hardsigmoid", "hardsigmoid", "Softplus", "softplus", "Softsign", "softsign",
    "Identity", "Dropout", "dropout", "Dropout1d", "Dropout2d", "dropout2d",
    "MaxPool1d", "MaxPool2d", "MaxPool3d", "max_pool1d", "max_pool2d", "max_pool3d",
    "AvgPool1d", "AvgPool2d", "AvgPool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d",
}  # fmt: skip


def _independent(unit: GrowableUnit, modules: Mapping[str, nn.Module]) -> bool:
    """Whether the new units' values and gradients up to the consumers depend on no old unit:
    one producer (its input cannot depend on its own channels), only channel-wise ops and
    per-channel modules that treat each channel alone on the way."""
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.instancenorm import _InstanceNorm

    def alone(m: nn.Module) -> bool:
        if isinstance(m, (_BatchNorm, _InstanceNorm)):
            return True
        return isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels

    return (
        len(unit.producers) == 1
        and set(unit.between) <= CHANNELWISE
        and all(alone(modules[n]) for n in unit.per_channel)
    )


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once every consumer has run."""


class TrialGrowth:
    """The model widened by ``k`` units on a private copy, with the new weights as inputs.

    Parameters
    ----------
    model : nn.Module
        The model (not modified).
    unit : GrowableUnit
        The unit to grow.
    k : int
        Number of new units.
    local : bool
        The copy serves only :meth:`local_objective` (and :meth:`fan_in_gradient` with
        ``consumer_grads``). Where the new units' path is independent of the old units (one
        producer; between it and the consumers only element-wise ops, pooling, BatchNorm,
        InstanceNorm and depthwise convs), the copy then keeps the new units alone: the
        consumers' outputs change by the new units' part only, so the objective's derivatives
        in the new weights are the same, at the cost of ``k`` channels instead of
        ``width + k``. Elsewhere the copy is the whole widened model, as without ``local``.

    Attributes
    ----------
    fan_in_shapes : dict
        Producer -> shape of its new rows, ``(k, ...)``.
    fan_out_dims : dict
        Consumer -> length of one new unit's fan-out vector.
    """

    def __init__(self, model: nn.Module, unit: GrowableUnit, k: int, local: bool = False) -> None:
        self.unit = unit
        self.k = k
        self.width = unit.width
        self.copy = copy.deepcopy(model)
        self.copy.requires_grad_(False)  # only the new blocks are differentiated
        # Masked layers (dense-over-sparse) become plain layers holding their effective weight
        # (dormant entries are exactly 0): the copy computes the same function, and the new
        # units are fully connected, as ``widen``'s default ``new_connections="all"`` makes them.
        for m in self.copy.modules():
            if is_masked(m):
                remove_mask(m)
        example = example_of(model)  # the copy is analysed as the model is (by its forward)
        if example is not None:
            set_example(self.copy, *example[0], **example[1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            widen(self.copy, unit.name, k, verify=False)
            self.alone = local and _independent(unit, dict(self.copy.named_modules()))
            if self.alone:  # the old units' part of the consumers' outputs is left out
                shrink(self.copy, unit.name, range(unit.width, unit.width + k))
                self.width = 0
        grown = find_unit(self.copy, unit.name)
        self.factors = {c.name: c.factor for c in grown.consumers}
        mods = dict(self.copy.named_modules())
        self.modules = mods
        self.base = {n: p.detach() for n, p in self.copy.named_parameters()}
        self.fan_in_shapes = {p: (k, *mods[p].weight.shape[1:]) for p in grown.producers}
        self.fan_out_dims = {
            c: fan_out_vectors(mods[c], self.factors[c]).shape[1] for c in self.factors
        }

    def _weights(
        self, fan_in: Mapping[str, Tensor | None], fan_out: Mapping[str, Tensor | None]
    ) -> dict[str, Tensor]:
        w0, out = self.width, {}
        for p in self.fan_in_shapes:
            t = fan_in.get(p)
            if t is not None:
                old = self.base[f"{p}.weight"][:w0]
                out[f"{p}.weight"] = torch.cat([old, t.reshape(self.fan_in_shapes[p])], 0)
        for c, f in self.factors.items():
            v = fan_out.get(c)
            if v is not None:
                w = self.base[f"{c}.weight"]
                old = w[:, : w0 * f]
                block = fan_out_block(self.modules[c], v, f)
                out[f"{c}.weight"] = torch.cat([old, block], 1)
        return out

    def loss(
        self,
        batch: object,
        loss_fn: LossFn,
        fan_in: Mapping[str, Tensor | None],
        fan_out: Mapping[str, Tensor | None],
    ) -> Tensor:
        """Loss of the grown network with the given new blocks (differentiable in them).

        ``fan_in`` maps producers to ``(k, ...)`` rows; ``fan_out`` maps consumers to
        ``(k, d)`` vectors (one per new unit, see :func:`torchgrow.how.fan_out_vectors`).
        Missing entries are zero.
        """
        if self.alone:
            raise GrowthInputError(
                "this trial keeps the new units alone (local=True): it has no loss of the grown "
                "network; use local_objective, or build the trial without local"
            )
        x, y = split_batch(batch)
        args, kwargs = call_args(x)
        return loss_fn(functional_call(self.copy, self._weights(fan_in, fan_out), args, kwargs), y)

    def local_objective(
        self,
        batch: object,
        consumer_grads: Mapping[str, Tensor],
        fan_in: Mapping[str, Tensor | None],
        fan_out: Mapping[str, Tensor | None],
    ) -> Tensor:
        """``sum_c <consumer c's output, dL/d(consumer c's output)>`` with the new blocks.

        The new weights reach the loss only through the consumers' outputs, and
        at a function-preserving point the gradient there is the one gathered
        before growth; so this objective has the same first derivatives in the
        new weights as the loss. The forward pass stops after the last consumer.
        """
        x, _ = split_batch(batch)
        outputs: dict[str, Tensor] = {}
        wanted = set(self.factors)

        def hook(name: str):
            def fn(mod: nn.Module, args: tuple, out: Tensor) -> None:
                outputs[name] = out
                if wanted <= set(outputs):
                    raise _StopForward

            return fn

        handles = [self.modules[c].register_forward_hook(hook(c)) for c in wanted]
        try:
            functional_call(self.copy, self._weights(fan_in, fan_out), *call_args(x))
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = wanted - set(outputs)
        if missing:
            raise GrowthInputError(f"consumers {sorted(missing)} did not run in the forward pass")
        return sum((outputs[c] * consumer_grads[c]).sum() for c in wanted)  # type: ignore[return-value]

    def fan_in_gradient(
        self,
        batch: object,
        loss_fn: LossFn,
        fan_out: Mapping[str, Tensor],
        *,
        create_graph: bool,
        consumer_grads: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Gradient of the loss w.r.t. zero new fan-in rows, given the new fan-out (GradMax's A(V)).

        With ``consumer_grads`` (the gradients at the consumers' outputs, as
        gathered before growth) only the network up to the consumers is run:
        same result, much cheaper (see :meth:`local_objective`).
        """
        zeros = {
            p: torch.zeros(s, requires_grad=True, dtype=self.base[f"{p}.weight"].dtype)
            for p, s in self.fan_in_shapes.items()
        }
        if consumer_grads is not None:
            loss = self.local_objective(batch, consumer_grads, zeros, fan_out)
        else:
            loss = self.loss(batch, loss_fn, zeros, fan_out)
        names = list(zeros)
        grads = torch.autograd.grad(
            loss, [zeros[n] for n in names], create_graph=create_graph, allow_unused=True
        )
        return {
            n: (torch.zeros_like(zeros[n]) if g is None else g)
            for n, g in zip(names, grads, strict=True)
        }
