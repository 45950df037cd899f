"""What a training run writes: ``metrics.csv``, ``events.jsonl``, ``summary.json``, TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..grower import Grower
from .history import History, _clean

__all__ = ["tensorboard_writer", "write_logs", "summary"]


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


def write_logs(log_dir: Path, history: History) -> None:
    history.to_csv(log_dir / "metrics.csv")
    with open(log_dir / "events.jsonl", "w") as fh:
        for e in history.events:
            fh.write(json.dumps(_clean(e.as_dict()), allow_nan=False) + "\n")


def summary(
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
