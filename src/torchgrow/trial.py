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
from .ops.units import widen

__all__ = ["TrialGrowth"]

LossFn = Callable[[Tensor, Tensor], Tensor]


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

    Attributes
    ----------
    fan_in_shapes : dict
        Producer -> shape of its new rows, ``(k, ...)``.
    fan_out_dims : dict
        Consumer -> length of one new unit's fan-out vector.
    """

    def __init__(self, model: nn.Module, unit: GrowableUnit, k: int) -> None:
        self.unit = unit
        self.k = k
        self.width = unit.width
        self.copy = copy.deepcopy(model)
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
