"""The reference training loop, :func:`fit`, composed of the pieces in this package."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .. import distributed
from ..data import Dataset
from ..errors import warn
from ..grower import Grower, GrowthEvent, default_loss
from ..why import TrainingCompute, count_parameters
from .epoch import (
    GrowthBatches,
    Progress,
    _example_input,
    _has_examples,
    _resolve_loaders,
    is_fsdp,
    train_epoch,
    validate,
)
from .history import History
from .logs import summary, tensorboard_writer, write_logs
from .state import restore_loop, resume, save_checkpoint

__all__ = ["fit"]

LossFn = Callable[[Tensor, Tensor], Tensor]

_EVAL_MODES = ("epoch", "last", "never")


def fit(
    model: nn.Module | None,
    optimizer: torch.optim.Optimizer | None,
    data: Dataset | tuple[DataLoader, DataLoader | None],
    *,
    epochs: int,
    loss_fn: LossFn | None = None,
    grower: Grower | None = None,
    scheduler: Any = None,
    scheduler_interval: str = "epoch",
    eval_every: str = "epoch",
    log_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    progress: bool | None = None,
    tensorboard: bool = False,
    compute: TrainingCompute | None = None,
    on_epoch_end: Callable[[History], bool | None] | None = None,
    seed: int | None = None,
    batch_size: int = 128,
    resume_from: str | Path | None = None,
    growth_data: DataLoader | None = None,
) -> History:
    """Train ``model`` for ``epochs`` epochs, growing it with ``grower``.

    Parameters
    ----------
    model : nn.Module or None
        The model (its device is where batches are sent). ``None`` only with
        ``resume_from``: the checkpoint's model is used.
    optimizer : torch.optim.Optimizer or None
        Over the model's parameters. ``None`` only with ``resume_from``.
    data : Dataset or tuple of DataLoader
        A :class:`torchgrow.data.Dataset` (loaders made with ``batch_size`` and
        ``seed``), or ``(train_loader, test_loader)``; ``test_loader`` may be
        ``None`` (no evaluation).
    epochs : int
        Total number of epochs. With ``resume_from``, training continues from
        the checkpoint's epoch up to ``epochs``.
    loss_fn : callable, optional
        ``loss_fn(output, target)``, mean-reduced. Default: cross-entropy for
        integer labels, MSE otherwise. Also used for evaluation and growth.
    grower : Grower, optional
        Called after each optimizer step; ``None`` trains a static model.
    scheduler : torch.optim.lr_scheduler.LRScheduler, optional
        Stepped once per epoch (``ReduceLROnPlateau`` gets the validation loss),
        or once per batch with ``scheduler_interval="step"``.
    scheduler_interval : {"epoch", "step"}
        When the scheduler steps.
    eval_every : {"epoch", "last", "never"}
        Evaluate on the test loader after every epoch, only after the last one,
        or never (validation columns ``None``).
    log_dir : str or Path, optional
        Write ``metrics.csv`` and ``events.jsonl`` (rewritten after every
        epoch) and ``summary.json`` (at the end) there.
    checkpoint_every : int, optional
        Save ``log_dir / "checkpoint.pt"`` (see :func:`torchgrow.save`) every
        that many epochs and after the last one. Needs ``log_dir``.
    progress : bool, optional
        Show a rich progress bar on stderr; ``None``: only when stderr is a
        terminal.
    tensorboard : bool
        Also log the rows to TensorBoard in ``log_dir`` (needs the
        ``tensorboard`` package: ``pip install torchgrow[tensorboard]``).
    compute : TrainingCompute, optional
        Accumulates the training FLOPs (created over the model if not given).
    on_epoch_end : callable, optional
        ``on_epoch_end(history)`` after each epoch's row is recorded (and
        before logs and checkpoints are written); returning ``True`` stops
        training after this epoch.
    seed : int, optional
        Seeds torch's global generator at the start of a fresh run, and the
        training loader's shuffling when ``data`` is a Dataset (default seed 0
        there). Ignored when resuming (the saved states are restored instead).
    batch_size : int
        Batch size when ``data`` is a Dataset.
    resume_from : str or Path, optional
        A checkpoint written by ``fit`` (``checkpoint_every``). The training
        loop's state is restored: epoch, step, history, training FLOPs, the
        states of torch's, Python's and numpy's global generators and of the
        training loader's generator, the scheduler's state. The model,
        optimizer and grower come from the checkpoint when ``model`` is
        ``None``; otherwise the checkpoint's states are loaded into the given
        objects (which must have the checkpoint's architecture and layout;
        the simplest are those of ``torchgrow.load(path)``). With
        ``model=None`` the tensors are loaded on the CPU; to resume elsewhere,
        or with a scheduler (which must be built on the optimizer it steps),
        load the checkpoint with :func:`torchgrow.load` first and pass its
        model, optimizer and grower. Given the same data and arguments, the
        resumed run matches an uninterrupted one exactly. The checkpoint is
        read by :func:`torchgrow.load`, which runs no code from it (a model
        of your own class must be allowed: :func:`torchgrow.io.add_safe_classes`).
    growth_data : DataLoader, optional
        Where growth batches come from: each growth step draws the next batch
        of this loader (a fresh pass every epoch), as the official GradMax
        code draws growth batches from an iterator of their own. Default: the
        training batch of the step that grows.

    Returns
    -------
    History
        Rows and growth events, with ``history.model``, ``.optimizer``,
        ``.grower`` and ``.compute`` set to the objects trained.

    Raises
    ------
    ValueError
        On inconsistent arguments (e.g. ``checkpoint_every`` without
        ``log_dir``, or a resume checkpoint that does not fit).
    ImportError
        If ``tensorboard=True`` and the tensorboard package is missing.

    Notes
    -----
    The growth batch of each growth step is charged to ``compute`` as one
    forward pass at the pre-growth cost; the per-example FLOPs are then
    recounted (:meth:`~torchgrow.why.TrainingCompute.refresh`). Parameters and
    FLOPs are counted once per epoch or growth step, never per batch.
    """
    _check_arguments(epochs, eval_every, scheduler_interval, checkpoint_every, log_dir)
    log_path = Path(log_dir) if log_dir is not None else None
    writer_cls = tensorboard_writer(log_path) if tensorboard else None
    loss_fn = loss_fn or default_loss
    if resume_from is None:
        if model is None or optimizer is None:
            raise ValueError("model and optimizer are required (unless resume_from= is given)")
        if seed is not None:
            torch.manual_seed(seed)
    train_loader, test_loader = _resolve_loaders(data, batch_size, seed)
    history, start_epoch, step, seconds_before, fit_state, ckpt = History(), 0, 0, 0.0, None, None
    if resume_from is not None:
        model, optimizer, grower, ckpt, fit_state = resume(
            resume_from, model, optimizer, grower, loss_fn
        )
        history = History.from_dict(fit_state["history"])
        start_epoch, step = int(fit_state["epoch"]), int(fit_state["step"])
        seconds_before = float(fit_state["seconds"])
    assert model is not None and optimizer is not None
    _check_objects(model, optimizer, grower, scheduler, checkpoint_every)
    if compute is None:
        compute = TrainingCompute(model, _example_input(train_loader))
    elif compute.model is not model:
        raise ValueError("compute must be a TrainingCompute over this model")
    if fit_state is not None and ckpt is not None:
        restore_loop(fit_state, ckpt, compute, scheduler, train_loader, growth_data)
    history.model, history.optimizer, history.grower = model, optimizer, grower
    history.compute = compute
    if progress is None:
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
    loop = _Loop(
        model, optimizer, grower, loss_fn, scheduler, scheduler_interval, train_loader,
        test_loader if _has_examples(test_loader) else None, growth_data, compute, history,
        epochs, eval_every, log_path, checkpoint_every, step, seconds_before,
    )  # fmt: skip
    writer = writer_cls(log_dir=str(log_path)) if writer_cls and distributed.rank() == 0 else None
    completed = True
    try:
        with Progress(progress and distributed.rank() == 0, epochs, start_epoch) as bar:
            for epoch in range(start_epoch + 1, epochs + 1):
                row = loop.epoch(epoch, bar)
                stop = bool(on_epoch_end(history)) if on_epoch_end is not None else False
                loop.after_epoch(epoch, row, writer, last=epoch == epochs or stop)
                if stop:
                    completed = epoch == epochs
                    break
    finally:
        if writer is not None:
            writer.close()
    if log_path is not None and distributed.rank() == 0:
        write_logs(log_path, history)
        done = summary(history, model, optimizer, grower, epochs, completed)
        (log_path / "summary.json").write_text(json.dumps(done, indent=2, allow_nan=False))
    return history


def _check_arguments(
    epochs: Any, eval_every: str, scheduler_interval: str, checkpoint_every: Any, log_dir: Any
) -> None:
    """Refuse inconsistent arguments of :func:`fit` before anything runs."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    if eval_every not in _EVAL_MODES:
        raise ValueError(f"eval_every must be one of {_EVAL_MODES}, got {eval_every!r}")
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(
            f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}"
        )
    if checkpoint_every is not None:
        if (
            isinstance(checkpoint_every, bool)
            or not isinstance(checkpoint_every, int)
            or checkpoint_every < 1
        ):
            raise ValueError(f"checkpoint_every must be an int >= 1, got {checkpoint_every!r}")
        if log_dir is None:
            raise ValueError("checkpoint_every needs log_dir= (the checkpoint goes there)")


def _check_objects(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    grower: Grower | None,
    scheduler: Any,
    checkpoint_every: int | None,
) -> None:
    if grower is not None and (grower.model is not model or grower.optimizer is not optimizer):
        raise ValueError("the grower must grow this model and carry this optimizer")
    if scheduler is not None and getattr(scheduler, "optimizer", optimizer) is not optimizer:
        raise ValueError("the scheduler must be built on this optimizer")
    if checkpoint_every is not None and is_fsdp(model):
        raise ValueError(
            "checkpoint_every under fully_shard: a sharded model is saved by every rank with "
            "torch.distributed.checkpoint; call torchgrow.fsdp.save(...) from on_epoch_end instead"
        )


@dataclass
class _Loop:
    """What :func:`fit`'s epochs share: one epoch's training, evaluation and record, then its
    logs and checkpoint."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    grower: Grower | None
    loss_fn: LossFn
    scheduler: Any
    scheduler_interval: str
    train_loader: DataLoader
    test_loader: DataLoader | None
    growth_data: DataLoader | None
    compute: TrainingCompute
    history: History
    epochs: int
    eval_every: str
    log_path: Path | None
    checkpoint_every: int | None
    step: int
    seconds_before: float

    def __post_init__(self) -> None:
        # FSDP reduces the gradients itself; a replicated model gets the DDP wrapper
        wrap = distributed.is_active() and not is_fsdp(self.model)
        self.ddp = distributed.GrowingDDP(self.model) if wrap else None
        self.growth = GrowthBatches(self.growth_data) if self.growth_data is not None else None
        self.started = time.perf_counter()
        try:
            self.n_batches: int | None = len(self.train_loader)
        except TypeError:
            self.n_batches = None

    def epoch(self, epoch: int, bar: Progress) -> dict[str, Any]:
        """Train one epoch, evaluate, feed the grower's triggers and the scheduler; its row."""
        bar.new_epoch(epoch, self.n_batches)
        lr = float(self.optimizer.param_groups[0]["lr"])  # the rate this epoch starts with
        if self.growth is not None:
            self.growth.new_epoch()
        per_step = self.scheduler if self.scheduler_interval == "step" else None
        train_loss, events, self.step = train_epoch(
            self.model, self.optimizer, self.train_loader, self.loss_fn, self.grower, per_step,
            self.compute, bar, self.step, self.ddp, self.growth,
        )  # fmt: skip
        if not math.isfinite(train_loss):
            warn(f"epoch {epoch}: the training loss is {train_loss}")
        val_loss = val_acc = None
        if self.test_loader is not None and (
            self.eval_every == "epoch" or (self.eval_every == "last" and epoch == self.epochs)
        ):
            val_loss, val_acc = validate(self.model, self.test_loader, self.loss_fn)
        if self.grower is not None:
            observed = {"train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_acc}
            self.grower.observe(**{k: v for k, v in observed.items() if v is not None})
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(val_loss if val_loss is not None else train_loss)
            else:
                self.scheduler.step()
        row = self._row(epoch, train_loss, val_loss, val_acc, lr, events)
        self.history.events.extend(events)
        self.history.rows.append(row)
        bar.end_epoch(row)
        return row

    def _row(
        self,
        epoch: int,
        train_loss: float,
        val_loss: float | None,
        val_acc: float | None,
        lr: float,
        events: list[GrowthEvent],
    ) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "step": self.step,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "parameters": count_parameters(self.model),
            "flops_per_example": self.compute.flops_per_example,
            "training_flops": self.compute.total,
            "lr": lr,
            "seconds": self.seconds_before + time.perf_counter() - self.started,
            "growth_events": len(events),
            "units_added": sum(e.units_added for e in events),
        }

    def after_epoch(self, epoch: int, row: dict[str, Any], writer: Any, *, last: bool) -> None:
        """The epoch's TensorBoard scalars, logs and (when due) checkpoint, on rank 0."""
        if writer is not None:
            for key, value in row.items():
                if key != "epoch" and value is not None:
                    writer.add_scalar(key, value, global_step=self.step)
            writer.flush()
        if distributed.rank() != 0 or self.log_path is None:
            return
        write_logs(self.log_path, self.history)
        every = self.checkpoint_every
        if every is not None and (epoch % every == 0 or last):
            save_checkpoint(
                self.log_path / "checkpoint.pt", self.model, self.optimizer, self.grower,
                epoch=epoch, step=self.step, seconds=row["seconds"], history=self.history,
                compute=self.compute, scheduler=self.scheduler, loader=self.train_loader,
                growth_data=self.growth_data,
            )  # fmt: skip
