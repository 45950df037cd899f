"""Statistics a growth step gathers on one growth batch, with hooks removed afterwards.

Only what the ``how`` asks for is gathered (see ``How.needs``): the input
activations entering each producer, and the gradient of the loss with respect
to each consumer's output. Gradients are taken with :func:`torch.autograd.grad`,
so the parameters' ``.grad`` are untouched, and every buffer (BatchNorm running
statistics) is restored, so gathering has no side effect on training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .batches import run_model, split_batch
from .errors import GrowthInputError
from .graph import GrowableUnit

__all__ = ["Statistics", "gather", "PRODUCER_INPUT", "CONSUMER_GRAD", "split_batch"]

PRODUCER_INPUT = "producer_input"
CONSUMER_GRAD = "consumer_grad"
LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Statistics:
    """Statistics of the current model on a growth batch.

    Attributes
    ----------
    loss : float
        Loss on the batch.
    producer_inputs : dict
        Producer name -> input activations (detached).
    consumer_grads : dict
        Consumer name -> dLoss/d(consumer output) (detached).
    batch : tuple
        The ``(x, y)`` batch.
    loss_fn : callable
        The loss function used.
    """

    loss: float
    producer_inputs: dict[str, Tensor] = field(default_factory=dict)
    consumer_grads: dict[str, Tensor] = field(default_factory=dict)
    batch: tuple[Any, Any] | None = None
    loss_fn: LossFn | None = None


def _snapshot_buffers(model: nn.Module) -> list[tuple[Tensor, Tensor]]:
    return [(b, b.detach().clone()) for b in model.buffers()]


def _restore_buffers(saved: Iterable[tuple[Tensor, Tensor]]) -> None:
    with torch.no_grad():
        for b, v in saved:
            b.copy_(v)


def gather(
    model: nn.Module,
    batch: object,
    loss_fn: LossFn,
    units: Sequence[GrowableUnit],
    needs: Iterable[str],
) -> Statistics:
    """Run one forward/backward pass of ``model`` on ``batch`` and collect ``needs``.

    Parameters
    ----------
    model : nn.Module
        The model, in its current mode (training mode gives batch statistics in BatchNorm).
    batch : tuple or dict
        ``(x, y)``, or a dict of keyword inputs (see :mod:`torchgrow.batches`).
    loss_fn : callable
        ``loss_fn(model(x), y) -> scalar``.
    units : sequence of GrowableUnit
        The units about to grow.
    needs : iterable of str
        Subset of ``{"producer_input", "consumer_grad"}``.

    Returns
    -------
    Statistics
        The statistics; NaN or Inf anywhere raises :class:`GrowthInputError`.
    """
    needs = set(needs)
    unknown = needs - {PRODUCER_INPUT, CONSUMER_GRAD}
    if unknown:
        raise GrowthInputError(f"unknown statistics requested: {sorted(unknown)}")
    x, y = split_batch(batch)
    modules = dict(model.named_modules())
    inputs: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}
    hooks = []

    def keep_input(name: str):
        def hook(mod: nn.Module, args: tuple[Tensor, ...]) -> None:
            inputs[name] = args[0].detach()

        return hook

    def keep_output(name: str):
        def hook(mod: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            outputs[name] = out

        return hook

    if PRODUCER_INPUT in needs:
        for u in units:
            for p in u.producers:
                hooks.append(modules[p].register_forward_pre_hook(keep_input(p)))
    if CONSUMER_GRAD in needs:
        for u in units:
            for c in u.consumers:
                hooks.append(modules[c.name].register_forward_hook(keep_output(c.name)))
    saved = _snapshot_buffers(model)
    try:
        with torch.enable_grad():
            loss = loss_fn(run_model(model, x), y)
            if loss.dim() != 0:
                raise GrowthInputError("loss_fn must return a scalar (use reduction='mean')")
            if not torch.isfinite(loss):
                raise GrowthInputError(
                    f"the loss on the growth batch is {loss.item()}: cannot grow from NaN/Inf "
                    "statistics. Check the data and the learning rate."
                )
            grads: dict[str, Tensor] = {}
            if outputs:
                names = list(outputs)
                got = torch.autograd.grad(
                    loss, [outputs[n] for n in names], allow_unused=True, retain_graph=False
                )
                for n, g in zip(names, got, strict=True):
                    grads[n] = torch.zeros_like(outputs[n]) if g is None else g.detach()
    finally:
        for h in hooks:
            h.remove()
        _restore_buffers(saved)
    for kind, table in (("input of", inputs), ("gradient at", grads)):
        for n, t in table.items():
            if not torch.isfinite(t).all():
                raise GrowthInputError(f"NaN/Inf in the {kind} {n!r}: cannot grow from them")
    return Statistics(
        loss=float(loss.detach()),
        producer_inputs=inputs,
        consumer_grads=grads,
        batch=(x, y),
        loss_fn=loss_fn,
    )
