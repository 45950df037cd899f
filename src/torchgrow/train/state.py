"""Checkpoints of a training run and resuming from one, exactly (same batches, same numbers)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .. import io as tg_io
from ..grower import Grower
from .epoch import _model_device

__all__ = ["save_checkpoint", "resume"]

LossFn = Callable[[Tensor, Tensor], Tensor]


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


def resume(
    path: str | Path,
    model: nn.Module | None,
    optimizer: torch.optim.Optimizer | None,
    grower: Grower | None,
    loss_fn: LossFn,
) -> tuple[nn.Module, torch.optim.Optimizer, Grower | None, tg_io.Checkpoint, dict[str, Any]]:
    """Load a checkpoint of :func:`save_checkpoint`: ``(model, optimizer, grower, checkpoint,
    loop state)``.

    With ``model=None`` the checkpoint's own objects are returned; otherwise its
    states are loaded into the given ones (which must have its architecture).
    """
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


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    grower: Grower | None,
    *,
    epoch: int,
    step: int,
    seconds: float,
    history: Any,
    compute: Any,
    scheduler: Any,
    loader: DataLoader,
    growth_data: DataLoader | None = None,
) -> None:
    """Save a checkpoint :func:`~torchgrow.train.fit` resumes from exactly.

    The model, optimizer and grower (:func:`torchgrow.save`), and the loop's
    state: epoch, step, seconds, history, training FLOPs, the scheduler's state
    and every random generator the run draws from (the loaders', torch's,
    Python's and numpy's).
    """
    extra = {
        "kind": "fit",
        "epoch": epoch,
        "step": step,
        "seconds": seconds,
        "history": history.as_dict(),
        "compute": compute.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": _rng_snapshot(loader, growth_data),
    }
    tg_io.save(path, model, optimizer, grower, extra=extra)


def restore_loop(
    state: dict[str, Any],
    ckpt: tg_io.Checkpoint,
    compute: Any,
    scheduler: Any,
    loader: DataLoader,
    growth_data: DataLoader | None = None,
) -> None:
    """Restore the loop's state of a checkpoint read by :func:`resume`: the training FLOPs,
    the scheduler and the random generators."""
    compute.load_state_dict(state["compute"])
    if scheduler is not None:
        if state.get("scheduler") is None:
            raise ValueError("a scheduler was given but the checkpoint saved none")
        scheduler.load_state_dict(state["scheduler"])
    _rng_restore(loader, state["rng"], ckpt, growth_data)
