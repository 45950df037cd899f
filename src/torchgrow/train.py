"""The reference training loop: :func:`fit`.

.. code-block:: python

    ds = torchgrow.data.load("mnist1d")
    model = torchgrow.models.mlp([40, 8, 10], activation="relu1")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    grower = torchgrow.Grower(model, opt, when=Every(200, times=3), how=Random())
    history = fit(model, opt, ds, epochs=10, grower=grower, log_dir="runs/demo")
    print(history.last)

Per batch :func:`fit` runs forward, loss, ``zero_grad``, backward,
``optimizer.step()``, charges the step to a :class:`~torchgrow.why.TrainingCompute`,
then calls ``grower.step((x, y), loss_fn)``. At each epoch end it evaluates on
the test loader, feeds the grower's metric-driven triggers and records one row
of :class:`History`. It can log (CSV, JSON lines, JSON, TensorBoard), show a
progress bar, checkpoint every few epochs and resume from a checkpoint exactly
(same batches, same random numbers, same result as an uninterrupted run).
"""

from __future__ import annotations

import csv
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from . import distributed
from . import io as tg_io
from .data import Dataset
from .errors import warn
from .grower import Grower, GrowthEvent, default_loss
from .why import TrainingCompute, count_parameters, evaluate

__all__ = ["COLUMNS", "History", "fit"]

LossFn = Callable[[Tensor, Tensor], Tensor]

COLUMNS: tuple[str, ...] = (
    "epoch",
    "step",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "parameters",
    "flops_per_example",
    "training_flops",
    "lr",
    "seconds",
    "growth_events",
    "units_added",
)
"""The columns of a :class:`History` row, in order.

``epoch`` (1-based), ``step`` (optimizer steps so far), ``train_loss`` (mean
over the epoch's examples), ``val_loss`` and ``val_accuracy`` (on the test
loader; ``None`` when not evaluated, accuracy ``None`` for regression),
``parameters`` (:func:`~torchgrow.why.count_parameters`), ``flops_per_example``
(forward), ``training_flops`` (cumulative, :class:`~torchgrow.why.TrainingCompute`),
``lr`` (of the first param group, at the start of the epoch), ``seconds`` (cumulative wall time, across
resumes), ``growth_events`` (units grown this epoch, one
:class:`~torchgrow.GrowthEvent` each) and ``units_added`` (their total).
"""

_EVAL_MODES = ("epoch", "last", "never")


# --------------------------------------------------------------------------- history
def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become ``None``, tensors become numbers."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _event_from_dict(d: dict[str, Any]) -> GrowthEvent:
    d = {
        k: (float("nan") if v is None and k.startswith(("max_abs", "grad_norm")) else v)
        for k, v in d.items()
    }
    return GrowthEvent(**d)


class History:
    """What :func:`fit` recorded: one row per epoch and every growth event.

    Parameters
    ----------
    rows : list of dict, optional
        Per-epoch rows with the keys of :data:`COLUMNS`.
    events : list of GrowthEvent, optional
        Growth events, in order.

    Attributes
    ----------
    rows : list of dict
        One row per epoch.
    events : list of GrowthEvent
        Every growth event of the run.
    model, optimizer, grower, compute
        Set by :func:`fit`: the objects trained (useful after resuming, when
        they come from the checkpoint). Not saved by :meth:`to_json`.
    """

    def __init__(
        self,
        rows: Sequence[dict[str, Any]] | None = None,
        events: Sequence[GrowthEvent] | None = None,
    ) -> None:
        self.rows: list[dict[str, Any]] = [dict(r) for r in rows or []]
        self.events: list[GrowthEvent] = list(events or [])
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.grower: Grower | None = None
        self.compute: TrainingCompute | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        last = self.last
        tail = "" if last is None else f", last={_clean(last)}"
        return f"History(epochs={len(self.rows)}, events={len(self.events)}{tail})"

    @property
    def initial_parameters(self) -> int | None:
        """Parameters before the first growth event (else those of the first epoch)."""
        if self.events:
            return self.events[0].params_before
        return self.rows[0]["parameters"] if self.rows else None

    @property
    def last(self) -> dict[str, Any] | None:
        """The last row (``None`` before the first epoch ends)."""
        return self.rows[-1] if self.rows else None

    def column(self, name: str) -> list[Any]:
        """Every row's value of column ``name``.

        Parameters
        ----------
        name : str
            One of :data:`COLUMNS`.

        Returns
        -------
        list
            The values, one per epoch.
        """
        if self.rows and name not in self.rows[0]:
            raise KeyError(f"unknown column {name!r}; columns: {', '.join(self.rows[0])}")
        return [r.get(name) for r in self.rows]

    def as_dict(self) -> dict[str, Any]:
        """Plain-Python form: ``{"rows": [...], "events": [...]}`` (JSON-safe)."""
        return {
            "rows": [_clean(r) for r in self.rows],
            "events": [_clean(e.as_dict()) for e in self.events],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        """Inverse of :meth:`as_dict`."""
        return cls(d.get("rows", []), [_event_from_dict(e) for e in d.get("events", [])])

    def to_csv(self, path: str | Path) -> Path:
        """Write the rows as CSV (header = :data:`COLUMNS`; missing values empty).

        Parameters
        ----------
        path : str or Path
            The file.

        Returns
        -------
        Path
            The path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fields = list(COLUMNS) + [k for r in self.rows for k in r if k not in COLUMNS]
        fields = list(dict.fromkeys(fields))
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            for r in self.rows:
                writer.writerow({k: ("" if v is None else v) for k, v in _clean(r).items()})
        return path

    def to_json(self, path: str | Path) -> Path:
        """Write :meth:`as_dict` as JSON (non-finite numbers become ``null``).

        Parameters
        ----------
        path : str or Path
            The file.

        Returns
        -------
        Path
            The path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2, allow_nan=False))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> History:
        """Read a file written by :meth:`to_json`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


# --------------------------------------------------------------------------- helpers
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


def _loader_generators(loader: DataLoader) -> list[torch.Generator]:
    """The distinct generators that drive a loader's shuffling."""
    found: dict[int, torch.Generator] = {}
    candidates = [
        getattr(loader, "generator", None),
        getattr(loader.sampler, "generator", None),
        getattr(getattr(loader.batch_sampler, "sampler", None), "generator", None),
    ]
    for g in candidates:
        if isinstance(g, torch.Generator):
            found.setdefault(id(g), g)
    return list(found.values())


class _GrowthBatches:
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


def _rng_snapshot(loader: DataLoader, growth: DataLoader | None = None) -> dict[str, Any]:
    return {
        "loader_generators": [g.get_state() for g in _loader_generators(loader)],
        "growth_generators": [
            g.get_state() for g in (_loader_generators(growth) if growth is not None else [])
        ],
        "python_random": random.getstate(),
        "numpy_random": _numpy_state(),
    }


def _numpy_state() -> tuple[Any, ...]:
    """numpy's legacy global generator state with plain Python values (a checkpoint's
    safe loader takes no numpy arrays)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - legacy global
    return (name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached))


def _rng_restore(
    loader: DataLoader,
    state: dict[str, Any],
    ckpt: tg_io.Checkpoint,
    growth: DataLoader | None = None,
) -> None:
    for what, live, key in (
        ("training loader", loader, "loader_generators"),
        ("growth_data loader", growth, "growth_generators"),
    ):
        gens = _loader_generators(live) if live is not None else []
        saved = state.get(key, [])
        if len(gens) != len(saved):
            raise ValueError(
                f"the {what} has {len(gens)} random generator(s) but the checkpoint saved "
                f"{len(saved)}: build the loaders the same way as in the interrupted run"
            )
        for g, s in zip(gens, saved, strict=True):
            g.set_state(s)
    random.setstate(state["python_random"])
    name, keys, pos, has_gauss, cached = state["numpy_random"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    ckpt.restore_rng()


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


class _Progress:
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

    def __enter__(self) -> _Progress:
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


def tensorboard_writer(log_dir: Path | None) -> Any:
    """The SummaryWriter class, or a clear error (checked before training starts).

    Raises
    ------
    ValueError
        If ``log_dir`` is ``None``.
    ImportError
        If the ``tensorboard`` package (``pip install torchgrow[tensorboard]``) is missing.
    """
    if log_dir is None:
        raise ValueError("tensorboard=True needs log_dir= (where the event files go)")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ImportError(
            "tensorboard=True needs the tensorboard package: pip install torchgrow[tensorboard]"
        ) from exc
    return SummaryWriter


def _write_logs(log_dir: Path, history: History) -> None:
    history.to_csv(log_dir / "metrics.csv")
    with open(log_dir / "events.jsonl", "w") as fh:
        for e in history.events:
            fh.write(json.dumps(_clean(e.as_dict()), allow_nan=False) + "\n")


def _summary(
    history: History,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    grower: Grower | None,
    epochs: int,
    completed: bool,
) -> dict[str, Any]:
    accs = [a for a in history.column("val_accuracy") if a is not None]
    last = history.rows[-1] if history.rows else {}
    return _clean(
        {
            "model": type(model).__name__,
            "optimizer": type(optimizer).__name__,
            "grower": grower.describe() if grower is not None else None,
            "epochs_planned": epochs,
            "epochs_done": len(history.rows),
            "completed": completed,
            "steps": last.get("step"),
            "parameters_initial": history.initial_parameters,
            "parameters_final": last.get("parameters"),
            "flops_per_example_final": last.get("flops_per_example"),
            "training_flops": last.get("training_flops"),
            "final_val_loss": last.get("val_loss"),
            "final_val_accuracy": last.get("val_accuracy"),
            "best_val_accuracy": max(accs) if accs else None,
            "growth_events": len(history.events),
            "units_added": sum(e.units_added for e in history.events),
            "seconds": last.get("seconds"),
        }
    )


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    loss_fn: LossFn,
    grower: Grower | None,
    step_scheduler: Any,
    compute: TrainingCompute,
    bar: _Progress,
    step: int,
    forward: nn.Module | None = None,
    growth: _GrowthBatches | None = None,
) -> tuple[float, list[GrowthEvent], int]:
    """One pass over ``loader``; returns the mean loss, the growth events and the step count.

    Under ``torch.distributed`` each global batch of ``loader`` is cut into one
    slice per rank, the forward pass goes through :class:`GrowingDDP`, and the
    local loss is weighted so the averaged gradient is the global batch's.
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
        bar.batch()
    if distributed.is_active():
        loss_sum, n_seen = distributed.all_sum(loss_sum, n_seen)
    return float(loss_sum) / max(n_seen, 1), events, step


def _all_examples(loader: Any) -> tuple[Tensor, Tensor]:
    """Every ``(x, y)`` of an evaluation loader, concatenated (for sharded evaluation)."""
    xs, ys = zip(*((b[0], b[1]) for b in loader), strict=True)
    return torch.cat(xs), torch.cat(ys)


# --------------------------------------------------------------------------- fit
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
    log_path = Path(log_dir) if log_dir is not None else None
    writer_cls = tensorboard_writer(log_path) if tensorboard else None
    loss_fn = loss_fn or default_loss

    if resume_from is None:
        if model is None or optimizer is None:
            raise ValueError("model and optimizer are required (unless resume_from= is given)")
        if seed is not None:
            torch.manual_seed(seed)
    train_loader, test_loader = _resolve_loaders(data, batch_size, seed)

    history = History()
    start_epoch, step, seconds_before = 0, 0, 0.0
    fit_state: dict[str, Any] | None = None
    ckpt: tg_io.Checkpoint | None = None
    if resume_from is not None:
        model, optimizer, grower, ckpt, fit_state = _resume(
            resume_from, model, optimizer, grower, loss_fn
        )
        history = History.from_dict(fit_state["history"])
        start_epoch, step = int(fit_state["epoch"]), int(fit_state["step"])
        seconds_before = float(fit_state["seconds"])
    assert model is not None and optimizer is not None
    if grower is not None and (grower.model is not model or grower.optimizer is not optimizer):
        raise ValueError("the grower must grow this model and carry this optimizer")
    if scheduler is not None and getattr(scheduler, "optimizer", optimizer) is not optimizer:
        raise ValueError("the scheduler must be built on this optimizer")

    if compute is None:
        compute = TrainingCompute(model, _example_input(train_loader))
    elif compute.model is not model:
        raise ValueError("compute must be a TrainingCompute over this model")
    if fit_state is not None and ckpt is not None:
        compute.load_state_dict(fit_state["compute"])
        if scheduler is not None:
            if fit_state.get("scheduler") is None:
                raise ValueError("a scheduler was given but the checkpoint saved none")
            scheduler.load_state_dict(fit_state["scheduler"])
        _rng_restore(train_loader, fit_state["rng"], ckpt, growth_data)
    history.model, history.optimizer, history.grower, history.compute = (
        model,
        optimizer,
        grower,
        compute,
    )

    evaluable = _has_examples(test_loader)
    if progress is None:
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
    progress = progress and distributed.rank() == 0
    try:
        n_batches: int | None = len(train_loader)
    except TypeError:
        n_batches = None
    ddp = distributed.GrowingDDP(model) if distributed.is_active() else None
    growth = _GrowthBatches(growth_data) if growth_data is not None else None
    started = time.perf_counter()
    completed = True
    writer = (
        writer_cls(log_dir=str(log_path))
        if writer_cls is not None and distributed.rank() == 0
        else None
    )
    try:
        with _Progress(progress, epochs, start_epoch) as bar:
            for epoch in range(start_epoch + 1, epochs + 1):
                bar.new_epoch(epoch, n_batches)
                lr = float(optimizer.param_groups[0]["lr"])  # the rate this epoch starts with
                if growth is not None:
                    growth.new_epoch()
                train_loss, epoch_events, step = _train_epoch(
                    model,
                    optimizer,
                    train_loader,
                    loss_fn,
                    grower,
                    scheduler if scheduler_interval == "step" else None,
                    compute,
                    bar,
                    step,
                    ddp,
                    growth,
                )
                if not math.isfinite(train_loss):
                    warn(f"epoch {epoch}: the training loss is {train_loss}")
                val_loss = val_acc = None
                if evaluable and (
                    eval_every == "epoch" or (eval_every == "last" and epoch == epochs)
                ):
                    # gathered each epoch on purpose: iterating a loader draws from the global
                    # RNG, as the single-process evaluate does, so both runs stay in step
                    res = (
                        distributed.evaluate(model, _all_examples(test_loader), loss_fn)
                        if distributed.is_active()
                        else evaluate(model, test_loader, loss_fn)  # type: ignore[arg-type]
                    )
                    val_loss = float(res["loss"])
                    val_acc = float(res["accuracy"]) if "accuracy" in res else None
                if grower is not None:
                    observed = {
                        "train_loss": train_loss,
                        "val_loss": val_loss,
                        "val_accuracy": val_acc,
                    }
                    grower.observe(**{k: v for k, v in observed.items() if v is not None})
                if scheduler is not None and scheduler_interval == "epoch":
                    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                        scheduler.step(val_loss if val_loss is not None else train_loss)
                    else:
                        scheduler.step()
                history.events.extend(epoch_events)
                row = {
                    "epoch": epoch,
                    "step": step,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "val_accuracy": val_acc,
                    "parameters": count_parameters(model),
                    "flops_per_example": compute.flops_per_example,
                    "training_flops": compute.total,
                    "lr": lr,
                    "seconds": seconds_before + time.perf_counter() - started,
                    "growth_events": len(epoch_events),
                    "units_added": sum(e.units_added for e in epoch_events),
                }
                history.rows.append(row)
                bar.end_epoch(row)
                stop = bool(on_epoch_end(history)) if on_epoch_end is not None else False
                if writer is not None:
                    for key, value in row.items():
                        if key != "epoch" and value is not None:
                            writer.add_scalar(key, value, global_step=step)
                    writer.flush()
                if log_path is not None and distributed.rank() == 0:
                    _write_logs(log_path, history)
                last = epoch == epochs or stop
                if (
                    checkpoint_every is not None
                    and (epoch % checkpoint_every == 0 or last)
                    and distributed.rank() == 0
                ):
                    assert log_path is not None
                    extra = {
                        "kind": "fit",
                        "epoch": epoch,
                        "step": step,
                        "seconds": row["seconds"],
                        "history": history.as_dict(),
                        "compute": compute.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None,
                        "rng": _rng_snapshot(train_loader, growth_data),
                    }
                    tg_io.save(log_path / "checkpoint.pt", model, optimizer, grower, extra=extra)
                if stop:
                    completed = epoch == epochs
                    break
    finally:
        if writer is not None:
            writer.close()
    if log_path is not None and distributed.rank() == 0:
        _write_logs(log_path, history)
        summary = _summary(history, model, optimizer, grower, epochs, completed)
        (log_path / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False))
    return history


def _resume(
    path: str | Path,
    model: nn.Module | None,
    optimizer: torch.optim.Optimizer | None,
    grower: Grower | None,
    loss_fn: LossFn,
) -> tuple[nn.Module, torch.optim.Optimizer, Grower | None, tg_io.Checkpoint, dict[str, Any]]:
    """Load a fit checkpoint; return the objects to train and the loop state."""
    where = _model_device(model) if model is not None else "cpu"
    ckpt = tg_io.load(path, map_location=where, loss_fn=loss_fn)
    state = ckpt.extra
    if state.get("kind") != "fit":
        raise ValueError(
            f"{path} was not written by fit(checkpoint_every=...): it lacks the training "
            "loop's state. Load it with torchgrow.load and start a new fit instead"
        )
    if ckpt.optimizer is None:
        raise ValueError(f"{path} holds no optimizer")
    if model is None:
        if optimizer is not None or grower is not None:
            raise ValueError(
                "with model=None the checkpoint's model, optimizer and grower are used: "
                "do not pass an optimizer or grower"
            )
        return ckpt.model, ckpt.optimizer, ckpt.grower, ckpt, state
    if optimizer is None:
        raise ValueError("pass the optimizer too (or model=None to use the checkpoint's)")
    try:
        model.load_state_dict(ckpt.model.state_dict())
    except RuntimeError as exc:
        raise ValueError(
            "the model given to fit does not have the checkpoint's architecture (it may have "
            "grown since it was built): pass model=None, optimizer=None to resume with the "
            f"checkpoint's own objects. Details: {exc}"
        ) from exc
    try:
        optimizer.load_state_dict(ckpt.optimizer.state_dict())
    except ValueError as exc:
        raise ValueError(f"the optimizer does not match the checkpoint's: {exc}") from exc
    if ckpt.grower is not None:
        if grower is None:
            raise ValueError(
                "the checkpoint holds a grower: pass grower= (or model=None to use the "
                "checkpoint's objects)"
            )
        grower.load_state_dict(ckpt.grower.state_dict())
    return model, optimizer, grower, ckpt, state
