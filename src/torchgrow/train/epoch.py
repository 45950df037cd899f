"""One epoch of training and one evaluation: the pieces :func:`~torchgrow.train.fit` composes.

:func:`train_epoch` runs the optimizer over one pass of a loader and steps the
grower after every optimizer step; :func:`validate` scores the model on a test
loader (sharded over ranks under ``torch.distributed``). Training loops of
one's own, and the framework integrations, call them directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .. import distributed
from ..data import Dataset
from ..grower import Grower, GrowthEvent
from ..why import TrainingCompute, evaluate

__all__ = ["train_epoch", "validate", "GrowthBatches", "Progress"]

LossFn = Callable[[Tensor, Tensor], Tensor]


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def _example_input(loader: DataLoader) -> Tensor:
    """One training example with a batch dimension, without drawing random numbers."""
    dataset = loader.dataset
    try:
        item = dataset[0]  # type: ignore[index]
    except Exception as exc:
        raise ValueError(
            "fit needs an indexable training dataset (dataset[0] -> (x, y)) to count FLOPs; "
            "pass compute=TrainingCompute(model, example_batch) for other datasets"
        ) from exc
    x = item[0] if isinstance(item, (tuple, list)) else item
    return torch.as_tensor(x).unsqueeze(0)


class GrowthBatches:
    """Growth batches drawn from a loader of their own, a fresh pass every epoch."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.iterator: Any = None
        self.drawn = 0  # examples in the last batch drawn (global)

    def new_epoch(self) -> None:
        self.iterator = None

    def draw(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The next global batch, this rank's share of it (the grower gathers the shares)."""
        for _ in range(2):
            if self.iterator is None:
                self.iterator = iter(self.loader)
            try:
                batch = next(self.iterator)
                break
            except StopIteration:
                self.iterator = None
        else:
            raise ValueError("growth_data yields no batch")
        self.drawn = len(batch[0])
        x, y = distributed.shard((batch[0], batch[1]))
        return x.to(device), y.to(device)


def _resolve_loaders(
    data: Dataset | tuple[DataLoader, DataLoader | None], batch_size: int, seed: int | None
) -> tuple[DataLoader, DataLoader | None]:
    if isinstance(data, Dataset):
        return data.loaders(batch_size, seed=0 if seed is None else seed)
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], DataLoader):
        if data[1] is not None and not isinstance(data[1], DataLoader):
            raise TypeError(f"the test loader must be a DataLoader or None, got {type(data[1])}")
        return data[0], data[1]
    raise TypeError(
        "data must be a torchgrow.data.Dataset or a tuple (train_loader, test_loader), "
        f"got {type(data).__name__}"
    )


def _has_examples(loader: DataLoader | None) -> bool:
    if loader is None:
        return False
    try:
        return len(loader.dataset) > 0  # type: ignore[arg-type]
    except TypeError:
        return True


class Progress:
    """A rich progress bar (epochs and batches), or nothing."""

    def __init__(self, enabled: bool, epochs: int, start: int) -> None:
        self.bar = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.epochs = self.bar.add_task("epochs", total=epochs, completed=start)
        self.batches = self.bar.add_task("batches", total=None)

    def __enter__(self) -> Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def new_epoch(self, epoch: int, total: int | None) -> None:
        if self.bar is not None:
            self.bar.reset(self.batches, total=total, description=f"epoch {epoch}")

    def batch(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.batches)

    def end_epoch(self, row: dict[str, Any]) -> None:
        if self.bar is None:
            return
        acc = row.get("val_accuracy")
        desc = f"epochs (loss {row['train_loss']:.4f}"
        desc += f", acc {acc:.3f})" if acc is not None else ")"
        self.bar.update(self.epochs, advance=1, description=desc)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    loss_fn: LossFn,
    grower: Grower | None,
    step_scheduler: Any,
    compute: TrainingCompute,
    bar: Progress | None = None,
    step: int = 0,
    forward: nn.Module | None = None,
    growth: GrowthBatches | None = None,
) -> tuple[float, list[GrowthEvent], int]:
    """One pass over ``loader``, stepping the optimizer and the grower after every batch.

    Parameters
    ----------
    model, optimizer : nn.Module, torch.optim.Optimizer
        What is trained.
    loader : DataLoader
        Yields ``(x, y)`` batches (global batches under ``torch.distributed``).
    loss_fn : callable
        ``loss_fn(model(x), y)``, mean-reduced.
    grower : Grower, optional
        Stepped after each optimizer step with the batch (or a batch of ``growth``).
    step_scheduler : LRScheduler, optional
        Stepped after each optimizer step.
    compute : TrainingCompute
        Charged with each step (and each growth batch).
    bar : Progress, optional
        Advanced once per batch.
    step : int
        Optimizer steps before this epoch.
    forward : nn.Module, optional
        What the forward pass runs (a :class:`~torchgrow.distributed.GrowingDDP`
        around ``model``); default ``model``.
    growth : GrowthBatches, optional
        Where growth batches come from (default: the step's own batch).

    Returns
    -------
    tuple
        ``(mean training loss, growth events, step count after the epoch)``.

    Notes
    -----
    Under ``torch.distributed`` each global batch of ``loader`` is cut into one
    slice per rank, the forward pass goes through ``forward``, and the local loss
    is weighted so the averaged gradient is the global batch's.
    """
    device = _model_device(model)
    model.train()
    forward = forward if forward is not None else model
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    n_seen = 0
    events: list[GrowthEvent] = []
    for x, y, bs in distributed.sharded_batches(loader):
        x, y = x.to(device), y.to(device)
        local = loss_fn(forward(x), y)
        loss = distributed.weighted_loss(local, len(x), bs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        compute.add_step(bs)
        loss_sum += local.detach().to(torch.float64) * len(x)
        n_seen += len(x)
        step += 1
        if step_scheduler is not None:
            step_scheduler.step()
        if grower is not None:
            if growth is None:
                grown = grower.step((x, y), loss_fn)
                n_growth = bs
            else:
                grown = grower.step(lambda: growth.draw(device), loss_fn)
                n_growth = growth.drawn
            if grown:
                compute.add_forward(n_growth)  # the growth batch, at the pre-growth cost
                compute.refresh()  # the architecture changed
                events.extend(grown)
        if bar is not None:
            bar.batch()
    if distributed.is_active():
        loss_sum, n_seen = distributed.all_sum(loss_sum, n_seen)
    return float(loss_sum) / max(n_seen, 1), events, step


def _all_examples(loader: Any) -> tuple[Tensor, Tensor]:
    """Every ``(x, y)`` of an evaluation loader, concatenated (for sharded evaluation)."""
    xs, ys = zip(*((b[0], b[1]) for b in loader), strict=True)
    return torch.cat(xs), torch.cat(ys)


def validate(model: nn.Module, loader: DataLoader, loss_fn: LossFn) -> tuple[float, float | None]:
    """``(loss, accuracy)`` of ``model`` on ``loader`` (accuracy ``None`` for regression).

    Under ``torch.distributed`` every rank scores its share of the examples and
    the results are combined; one process scores them all
    (:func:`torchgrow.why.evaluate`), and so does every rank of a model sharded
    with ``fully_shard`` (whose forward passes are collectives).
    """
    # gathered each epoch on purpose: iterating a loader draws from the global
    # RNG, as the single-process evaluate does, so both runs stay in step
    if not distributed.is_active():
        res = evaluate(model, loader, loss_fn)  # type: ignore[arg-type]
    elif is_fsdp(model):  # every forward is a collective: every rank scores every example
        res = evaluate(model, _all_examples(loader), loss_fn)
    else:
        res = distributed.evaluate(model, _all_examples(loader), loss_fn)
    return float(res["loss"]), (float(res["accuracy"]) if "accuracy" in res else None)


def is_fsdp(model: nn.Module) -> bool:
    """Whether ``model`` is sharded with ``fully_shard`` (trained without a DDP wrapper)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False  # fully_shard needs a process group
    from ..fsdp.state import is_sharded

    return is_sharded(model)
