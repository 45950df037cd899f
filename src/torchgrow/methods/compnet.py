"""CompNet — "Neural Networks Growing via the Compact Network Morphism" (Lu, Ma, Faltings 2018).

**A reconstruction.** Only the paper's abstract could be checked; it states
that a well-trained network is deepened by a new layer that (a) preserves the
network's function, so training resumes without starting over, and (b) is
kept compact by removing redundant parameters with sparse optimisation. The
rules below meet both statements; everything else is torchgrow's choice and
a named parameter (``docs/compnet.md``).

1. Train the parent until its validation loss stops improving (``patience``).
2. Deepen: insert a function-preserving layer after the activation of a hidden
   layer (:func:`deepen`; ``variant="identity"``, as wide as that layer, or
   ``"morphism"``, the next layer's weight factored through ``2 r`` paired
   ReLU units).
3. Sparse fine-tuning: ``sparse_epochs`` of training, each optimizer step
   followed by the group-lasso proximal step ``lr * lam`` on the new layer's
   units (:func:`torchgrow.how.compnet.prox_group_lasso`).
4. Trim the units whose group norm is <= ``delta`` (:func:`torchgrow.ops.shrink`,
   optimizer carried), then fine-tune ``finetune_epochs`` without the penalty.
5. Keep the deeper network if validation accuracy improved by more than
   ``tolerance``, and deepen again (next insertion point in turn); otherwise
   restore the previous network and stop.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from .. import distributed
from ..data import Dataset
from ..errors import GrowthInputError, require_int
from ..graph import GrowableUnit, find_unit, growable_units
from ..how.compnet import (
    compact_factors,
    identity_layer,
    morphism_factors,
    prox_group_lasso,
    unit_group_norms,
)
from ..ops.depth import insert_after
from ..ops.units import shrink, widen
from ..why import TrainingCompute, accuracy, count_parameters, flops_per_example

__all__ = ["CompNet", "DESCRIPTION", "deepen"]

DESCRIPTION = {
    "name": "CompNet",
    "paper": "Lu, Ma, Faltings. arXiv 1804.10316 (2018); reconstructed from the abstract",
    "why": "gain accuracy from depth without retraining from scratch, with a compact added layer",
    "when": "after the parent converges (validation-loss plateau); again while validation "
    "accuracy improves by more than a tolerance",
    "where": "a new layer after a hidden layer's activation (given, or each hidden layer in turn)",
    "how": "function-preserving layer (identity or morphism-equation factors), group-lasso "
    "proximal fine-tuning, units with group norm <= delta removed",
}

LossFn = Callable[[Tensor, Tensor], Tensor]
VARIANTS = ("identity", "morphism")


def _relu_after(model: nn.Module, unit: GrowableUnit) -> str:
    """The name of the last ``nn.ReLU`` module between the unit's producer and its consumer."""
    from ..graph.fx_trace import _Leafy

    modules = dict(model.named_modules())
    consumers = {c.name for c in unit.consumers}
    graph = _Leafy().trace(model)
    node = next((n for n in graph.nodes if n.op == "call_module" and n.target == unit.name), None)
    relu = None
    while node is not None and len(node.users) == 1:
        node = next(iter(node.users))
        if node.op == "call_module" and node.target in consumers:
            break
        if node.op == "call_module" and isinstance(modules.get(str(node.target)), nn.ReLU):
            relu = str(node.target)
    if relu is None:
        raise GrowthInputError(
            f"deepen: {unit.name!r} is not followed by an nn.ReLU module on its way to "
            f"{sorted(consumers)} (found {list(unit.between)}); the new layer is exact only "
            "after a ReLU module"
        )
    return relu


def deepen(
    model: nn.Module,
    layer: str,
    *,
    variant: str = "identity",
    rank: int | None = None,
    batchnorm: bool = False,
    compact: float | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    new_name: str | None = None,
) -> str:
    """Insert a function-preserving layer after the ReLU that follows ``layer``.

    Parameters
    ----------
    model : nn.Module
        Edited in place.
    layer : str
        A hidden Linear or Conv2d (a producer with one consumer), followed by
        an ``nn.ReLU`` module.
    variant : {"identity", "morphism"}
        ``"identity"``: ``Linear(I)`` (or a Dirac 3x3 conv) and ReLU, as wide
        as ``layer``. ``"morphism"``: the consumer's weight ``W`` is factored
        through ``2 r`` paired units (:func:`~torchgrow.how.compnet.morphism_factors`):
        a 1x1 conv or Linear with weight ``[P; -P]``, and the consumer's new
        weight ``[Q, -Q]``; exact at the numerical rank, narrower than
        ``layer`` whenever ``2 r`` is smaller.
    rank : int, optional
        ``"morphism"`` only: keep this many singular directions (fewer than
        the rank approximates the function).
    batchnorm : bool
        ``"identity"`` after a Conv2d: add an eval-mode-identity BatchNorm2d.
    compact : float, optional
        ``"morphism"`` only: compact the factors before inserting (group lasso
        on the morphism equation with this weight,
        :func:`~torchgrow.how.compnet.compact_factors`); the function is then
        preserved only up to the factorisation's residual.
    optimizer : torch.optim.Optimizer, optional
        Carried: old state kept, new parameters start empty.
    new_name : str, optional
        Name of the inserted container (default ``"<relu>_next"``).

    Returns
    -------
    str
        The qualified name of the new layer's Linear/Conv2d (its units can be
        trimmed with :func:`torchgrow.ops.shrink`).
    """
    if variant not in VARIANTS:
        raise GrowthInputError(f"variant must be one of {VARIANTS}, got {variant!r}")
    unit = find_unit(model, layer)
    if len(unit.producers) != 1 or len(unit.consumers) != 1:
        raise GrowthInputError(
            f"deepen: {layer!r} must have one producer and one consumer, got "
            f"{list(unit.producers)} -> {[c.name for c in unit.consumers]}"
        )
    modules = dict(model.named_modules())
    producer, consumer = modules[layer], modules[unit.consumers[0].name]
    act = _relu_after(model, unit)
    factors = None
    if variant == "morphism":
        if unit.consumers[0].factor != 1 or type(producer) is not type(consumer):
            raise GrowthInputError(
                "deepen(variant='morphism') factors the weight of a consumer of the same kind "
                f"read without a flatten; {layer!r} -> {unit.consumers[0].name!r} is not such a "
                "pair: use variant='identity'"
            )
        w = consumer.weight.detach()
        matrix = w if w.dim() == 2 else w.permute(0, 2, 3, 1).reshape(-1, w.shape[1])
        factors = morphism_factors(matrix, rank)
        if compact is not None:
            a, w_next, _ = compact_factors(matrix, *factors, compact)
            factors = (a, w_next)
    elif compact is not None:
        raise GrowthInputError("compact= compacts the morphism variant's factors only")
    if isinstance(producer, nn.Conv2d):
        new = identity_layer(producer, batchnorm=batchnorm and variant == "identity")
        if variant == "morphism":
            conv = nn.Conv2d(producer.out_channels, producer.out_channels, 1, bias=False)
            with torch.no_grad():
                nn.init.dirac_(conv.weight)
            new = nn.Sequential(OrderedDict(conv=conv, act=nn.ReLU()))
    else:
        new = identity_layer(producer)
    dev = producer.weight
    new = new.to(device=dev.device, dtype=dev.dtype)
    record = insert_after(model, act, new, new_name=new_name, optimizer=optimizer)
    core = "fc" if isinstance(producer, nn.Linear) else "conv"
    name = f"{record.details['new']}.{core}"
    if factors is not None:
        a, w_next = factors
        width = producer.weight.shape[0]
        k = a.shape[0]
        fan_in = a.to(dev) if isinstance(producer, nn.Linear) else a.to(dev)[:, :, None, None]
        if isinstance(consumer, nn.Linear):
            fan_out = w_next.to(dev)
        else:
            o, _, kh, kw = consumer.weight.shape
            fan_out = w_next.to(dev).reshape(o, kh, kw, k).permute(0, 3, 1, 2)
        # the identity units still carry W h: add the paired units, then drop the identity ones
        widen(model, name, k, fan_in=fan_in, fan_out=fan_out, optimizer=optimizer)
        shrink(model, name, torch.arange(width, width + k), optimizer=optimizer)
    return name


class CompNet:
    """Deepen a trained network by compact, function-preserving layers (a reconstruction).

    Parameters
    ----------
    model : nn.Module
        The parent (trained here to convergence first, see ``patience``).
    optimizer : torch.optim.Optimizer
        Its optimizer (SGD recommended: the proximal step uses its ``lr``).
    data : Dataset
        Classification data; ``val_fraction`` of the training set is held out.
    layers : sequence of str, optional
        Insertion points: hidden Linear/Conv2d layers, used in turn (default:
        every hidden layer followed by a ReLU, in graph order).
    variant : {"identity", "morphism"}
        See :func:`deepen`.
    rank : int, optional
        Morphism variant: singular directions kept.
    route : {"finetune", "factorise"}
        Where the sparse optimisation happens: during fine-tuning (proximal
        steps on the training loss; exact at insertion), or on the morphism
        equation before inserting (``variant="morphism"`` only; approximate at
        insertion, then plain fine-tuning).
    lam : float
        Group-lasso weight λ. Route ``"finetune"``: the proximal step is
        ``lr * lam`` per optimizer step; route ``"factorise"``: the weight
        against the squared factorisation error. [I]
    delta : float
        Units whose group norm is <= δ after sparse fine-tuning are removed. [I]
    parent_epochs : int
        Budget of the parent's training.
    patience : int
        Epochs without a lower validation loss that count as converged.
    sparse_epochs, finetune_epochs : int
        Fine-tuning with and without the penalty after each deepening. [I]
    finetune_lr : float, optional
        Learning rate of every param group from the first deepening on
        (``None``: the parent's rate). The proximal step is ``finetune_lr * lam``. [I]
    max_deepenings : int
        Most layers added.
    tolerance : float
        Minimum gain of validation accuracy (fraction) to keep a deeper net.
    val_fraction : float
        Held-out share of the training set.
    batch_size : int
        Training batch size.
    loss_fn : callable, optional
        Default cross-entropy.
    seed : int
        Seed of the split and the data order.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data: Dataset,
        *,
        layers: Sequence[str] | None = None,
        variant: str = "identity",
        rank: int | None = None,
        route: str = "finetune",
        lam: float = 0.05,
        delta: float = 1e-3,
        parent_epochs: int = 50,
        patience: int = 3,
        sparse_epochs: int = 5,
        finetune_epochs: int = 3,
        finetune_lr: float | None = None,
        max_deepenings: int = 1,
        tolerance: float = 0.0,
        val_fraction: float = 0.1,
        batch_size: int = 128,
        loss_fn: LossFn | None = None,
        seed: int = 0,
    ) -> None:
        if variant not in VARIANTS:
            raise GrowthInputError(f"variant must be one of {VARIANTS}, got {variant!r}")
        for name, value, lo in (
            ("parent_epochs", parent_epochs, 0),
            ("patience", patience, 1),
            ("sparse_epochs", sparse_epochs, 0),
            ("finetune_epochs", finetune_epochs, 0),
            ("max_deepenings", max_deepenings, 0),
            ("batch_size", batch_size, 1),
        ):
            require_int(value, f"CompNet({name})", lo)
        if route not in ("finetune", "factorise"):
            raise GrowthInputError(f"route must be 'finetune' or 'factorise', got {route!r}")
        if route == "factorise" and variant != "morphism":
            raise GrowthInputError("route='factorise' compacts the morphism variant's factors")
        if finetune_lr is not None and not finetune_lr > 0:
            raise GrowthInputError(f"finetune_lr must be > 0 or None, got {finetune_lr!r}")
        if not lam >= 0 or not delta >= 0:
            raise GrowthInputError(f"lam and delta must be >= 0, got {lam!r}, {delta!r}")
        if not 0 < val_fraction < 1:
            raise GrowthInputError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        if data.task != "classification":
            raise GrowthInputError("CompNet is run on a classification data set")
        if layers is None:
            layers = [
                u.name
                for u in growable_units(model)
                if len(u.producers) == 1 and len(u.consumers) == 1 and "ReLU" in u.between
            ]
        layers = list(layers)
        if not layers:
            raise GrowthInputError("CompNet found no hidden layer followed by a ReLU to deepen")
        for name in layers:
            _relu_after(model, find_unit(model, name))
        self.model, self.optimizer = model, optimizer
        self.layers = layers
        self.loss_fn = loss_fn or F.cross_entropy
        self.settings = dict(
            variant=variant,
            rank=rank,
            route=route,
            lam=lam,
            delta=delta,
            parent_epochs=parent_epochs,
            patience=patience,
            sparse_epochs=sparse_epochs,
            finetune_epochs=finetune_epochs,
            finetune_lr=finetune_lr,
            max_deepenings=max_deepenings,
            tolerance=tolerance,
            val_fraction=val_fraction,
            batch_size=batch_size,
            seed=seed,
        )
        self.train_set, self.val_set = data.split_validation(val_fraction, seed=seed)
        self.test = (data.x_test, data.y_test)
        self.generator = torch.Generator().manual_seed(seed)
        self.history: list[dict[str, Any]] = []
        self.deepenings: list[dict[str, Any]] = []
        self.training_flops = 0  # training steps, 3x the forward FLOPs per example
        self.description = DESCRIPTION

    # ------------------------------------------------------------------ pieces
    def _loader(self) -> DataLoader:
        return DataLoader(
            TensorDataset(self.train_set.x_train, self.train_set.y_train),
            batch_size=self.settings["batch_size"],
            shuffle=True,
            generator=self.generator,
        )

    def _epoch(
        self, prox: tuple[nn.Module, nn.Module, nn.Module | None, int] | None = None
    ) -> None:
        self.model.train()
        lam = self.settings["lam"]
        example = self.val_set.x_test[:2]
        step_flops = TrainingCompute.step_multiplier * flops_per_example(self.model, example)
        forward = distributed.GrowingDDP(self.model) if distributed.is_active() else self.model
        for x, y, n in distributed.sharded_batches(self._loader()):
            loss = distributed.weighted_loss(self.loss_fn(forward(x), y), len(x), n)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.training_flops += step_flops * n
            if prox is not None and lam > 0:
                step = self.optimizer.param_groups[0]["lr"] * lam
                prox_group_lasso(*prox[:2], step, *prox[2:])

    def _val(self) -> dict[str, float]:
        data = (self.val_set.x_test, self.val_set.y_test)
        return {
            k: float(v)
            for k, v in distributed.evaluate(self.model, data, self.loss_fn, batch_size=512).items()
        }

    def _row(self, phase: str, **extra: Any) -> dict[str, Any]:
        val = self._val()
        row = {
            "phase": phase,
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "test_accuracy": distributed.accuracy(self.model, self.test),
            "parameters": count_parameters(self.model),
            "flops_per_example": flops_per_example(self.model, self.val_set.x_test[:1]),
            "training_flops": self.training_flops,
            **extra,
        }
        self.history.append(row)
        return row

    def _pair(self, name: str) -> tuple[nn.Module, nn.Module, nn.Module | None, int]:
        unit = find_unit(self.model, name)
        modules = dict(self.model.named_modules())
        bns = [modules[n] for n in unit.per_channel if isinstance(modules[n], nn.BatchNorm2d)]
        consumer = unit.consumers[0]
        return modules[name], modules[consumer.name], (bns[0] if bns else None), consumer.factor

    # ------------------------------------------------------------------ the algorithm
    def run(self) -> dict[str, Any]:
        """Train the parent to convergence, then deepen while it pays; returns :meth:`summary`.

        After :meth:`run`, :attr:`model` and :attr:`optimizer` hold the result: a
        deepening that does not pay is undone by restoring a copy, so they may
        be new objects.
        """
        s = self.settings
        start = time.perf_counter()
        best_loss, waited = float("inf"), 0
        for epoch in range(1, s["parent_epochs"] + 1):
            self._epoch()
            row = self._row("parent", epoch=epoch)
            if row["val_loss"] < best_loss - 1e-6:
                best_loss, waited = row["val_loss"], 0
            else:
                waited += 1
                if waited >= s["patience"]:
                    break
        parent = self.history[-1] if self.history else self._row("parent", epoch=0)
        self.parent = {k: parent[k] for k in ("val_accuracy", "test_accuracy", "parameters")}
        best_acc = parent["val_accuracy"]
        probe = self.val_set.x_test[:256]
        if s["finetune_lr"] is not None and s["max_deepenings"]:
            for group in self.optimizer.param_groups:
                group["lr"] = s["finetune_lr"]
        for i in range(s["max_deepenings"]):
            layer = self.layers[i % len(self.layers)]
            saved = copy.deepcopy((self.model, self.optimizer))
            self.model.eval()
            with torch.no_grad():
                before = self.model(probe)
            factorise = s["route"] == "factorise"
            name = deepen(
                self.model,
                layer,
                variant=s["variant"],
                rank=s["rank"],
                compact=s["lam"] if factorise else None,
                optimizer=self.optimizer,
            )
            distributed.agree("CompNet's deepening", self.model, self.optimizer)
            distributed.broadcast_model(self.model)
            with torch.no_grad():
                delta_out = float((self.model(probe) - before).abs().max())
            width0 = self._pair(name)[0].weight.shape[0]
            info: dict[str, Any] = {
                "after": layer,
                "new_layer": name,
                "width_at_insertion": width0,
                "layer_width": find_unit(self.model, layer).width,
                "max_abs_delta": delta_out,
            }
            row = self._row("inserted", layer=name, width=width0)
            recovered = 0 if row["val_accuracy"] >= parent["val_accuracy"] else None
            for e in range(1, s["sparse_epochs"] + 1):
                self._epoch(prox=None if factorise else self._pair(name))
                row = self._row("sparse", layer=name, width=width0, epoch=e)
                if recovered is None and row["val_accuracy"] >= parent["val_accuracy"]:
                    recovered = e
            norms = unit_group_norms(*self._pair(name))
            keep = torch.nonzero(norms > s["delta"]).flatten()
            if len(keep) == 0:
                keep = norms.argmax().reshape(1)
            if len(keep) < width0:
                shrink(self.model, name, keep, optimizer=self.optimizer)
            distributed.agree("CompNet's trimming", self.model, self.optimizer)
            width = len(keep)
            for e in range(1, s["finetune_epochs"] + 1):
                self._epoch()
                row = self._row("finetune", layer=name, width=width, epoch=e)
                if recovered is None and row["val_accuracy"] >= parent["val_accuracy"]:
                    recovered = s["sparse_epochs"] + e
            info.update(
                width=width,
                epochs_to_parent_accuracy=recovered,
                val_accuracy=row["val_accuracy"],
                test_accuracy=row["test_accuracy"],
                parameters=row["parameters"],
            )
            kept = row["val_accuracy"] > best_acc + s["tolerance"]
            info["kept"] = kept
            self.deepenings.append(info)
            if not kept:
                self.model, self.optimizer = saved
                break
            best_acc = row["val_accuracy"]
        self.seconds = time.perf_counter() - start
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """The result: parent and final accuracies, parameters, FLOPs, the added layers."""
        return {
            "parent": getattr(self, "parent", None),
            "val_accuracy": self._val()["accuracy"],
            "test_accuracy": accuracy(self.model, self.test),
            "parameters": count_parameters(self.model),
            "flops_per_example": flops_per_example(self.model, self.val_set.x_test[:1]),
            "deepenings": self.deepenings,
            "training_flops": self.training_flops,
            "seconds": getattr(self, "seconds", None),
        }
