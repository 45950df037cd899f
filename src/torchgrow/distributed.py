"""Growing under data parallelism: ``torch.distributed`` (torchrun, gloo or nccl).

Under ``torchrun --nproc-per-node N`` every rank holds a replica of the model
and trains on its share of each global batch; gradients are averaged by
:class:`torch.nn.parallel.DistributedDataParallel`. A growth step changes the
model's parameters, so three things must hold on every rank afterwards: the
same architecture, the same new weights, and a DDP wrapper and optimizer that
know the new parameters. torchgrow does this as follows.

- **Statistics from the global batch.** :meth:`torchgrow.Grower.grow` gathers
  every rank's growth batch (:func:`gather_batch`), so activations, gradients
  and the scores computed from them are those of the whole global batch, the
  same on every rank (and equal to a single process given that batch).
  Metrics that drive decisions are reduced: :func:`accuracy` and
  :func:`evaluate` evaluate a share of the data on each rank and sum the
  counts; :meth:`~torchgrow.Grower.observe` averages observed metrics.
- **One decision, checked.** After the edit, every rank's architecture and
  optimizer-state shapes are compared (:func:`agree`); if any rank failed or
  differs, *every* rank undoes its edit and raises
  :class:`DistributedGrowthError` saying which rank and why, instead of
  hanging at the next collective. Then rank 0's values are broadcast
  (:func:`broadcast_model`), so the replicas are bit-identical even where a
  computation is not deterministic across devices.
- **The wrapper follows the model.** :class:`GrowingDDP` is a drop-in for
  ``DistributedDataParallel`` that rebuilds the DDP wrapper at its first call
  after the parameters changed. The optimizer is carried by the edit itself
  (:mod:`torchgrow.ops`), keeping its state.
- **Shards of global batches.** :func:`shard` cuts each global batch into
  one contiguous slice per rank, and :func:`weighted_loss` scales the local loss
  so that DDP's averaged gradient equals the single-process gradient of the
  global batch, even when the slices differ in size.

Everything here is a no-op in a single process (or when no process group is
initialised), so the same script runs with and without ``torchrun``.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .batches import gather_tensors, split_batch
from .errors import GrowthInputError, TorchgrowError

__all__ = [
    "DistributedGrowthError",
    "GrowingDDP",
    "SyncBatchNorm",
    "accuracy",
    "agree",
    "all_mean",
    "all_sum",
    "broadcast_buffers",
    "broadcast_model",
    "broadcast_object",
    "convert_sync_batchnorm",
    "disabled",
    "evaluate",
    "fingerprint",
    "gather_batch",
    "is_active",
    "rank",
    "shard",
    "sharded_batches",
    "shutdown",
    "unwrap",
    "weighted_loss",
    "weighted_mean",
    "world_size",
]

_DISABLED = [False]


class DistributedGrowthError(TorchgrowError, RuntimeError):
    """A growth step that the ranks did not complete identically (every rank raises it)."""


def is_active() -> bool:
    """Whether a process group of more than one rank is initialised (and not :func:`disabled`)."""
    return (
        not _DISABLED[0]
        and dist.is_available()
        and dist.is_initialized()
        and dist.get_world_size() > 1
    )


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Treat this process as a single one inside the block (e.g. independent runs per rank)."""
    old = _DISABLED[0]
    _DISABLED[0] = True
    try:
        yield
    finally:
        _DISABLED[0] = old


def rank() -> int:
    """This process's rank (0 in a single process)."""
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    """Number of ranks (1 in a single process)."""
    return dist.get_world_size() if is_active() else 1


def shutdown() -> None:
    """Tear the process group down cleanly: free DDP wrappers first, then wait for every rank.

    A DDP wrapper holds the process group; if one outlives
    ``destroy_process_group`` (kept alive by a reference cycle until the
    interpreter exits), gloo's worker threads can be torn down out of order
    and the process aborts. Call this instead of ``destroy_process_group``.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


# ------------------------------------------------------------------ data
def shard(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """This rank's contiguous slice of a global batch ``(x, y)`` (the whole batch in one process).

    Raises
    ------
    GrowthInputError
        If the batch has fewer examples than there are ranks (a rank would
        get none, and DDP needs every rank to take part in every step).
    """
    x, y = batch[0], batch[1]
    if not is_active():
        return x, y
    w, r = world_size(), rank()
    if len(x) < w:
        raise GrowthInputError(
            f"a global batch of {len(x)} examples cannot be shared by {w} ranks: use a batch "
            "size of at least the number of ranks (or drop_last=True)"
        )
    idx = torch.tensor_split(torch.arange(len(x)), w)[r]
    return x[idx], y[idx]


def weighted_loss(loss: Tensor, n_local: int, n_global: int) -> Tensor:
    """The local mean loss, scaled so that DDP's gradient average is the global batch's gradient.

    DDP averages the ranks' gradients; with slices of sizes ``n_r`` the
    global-batch gradient is ``sum_r n_r g_r / N``, so rank ``r`` scales its
    mean loss by ``W n_r / N``. ``loss`` itself when that factor is 1 (equal
    slices, or one process).
    """
    weight = world_size() * n_local / n_global if is_active() else 1.0
    return loss if weight == 1.0 else loss * weight


def sharded_batches(batches: Iterable[Any]) -> Iterator[tuple[Tensor, Tensor, int]]:
    """``(x_local, y_local, n_global)`` for each global batch of ``batches``."""
    for batch in batches:
        x, y = shard((batch[0], batch[1]))
        yield x, y, len(batch[0])


def gather_batch(batch: Any) -> Any:
    """Every rank's growth batch concatenated in rank order, on every rank.

    ``batch`` is an ``(x, y)`` pair of tensors or a dict of keyword inputs
    (Hugging Face style, see :mod:`torchgrow.batches`); the result has the
    same form, its tensors concatenated along dimension 0. The exchange
    doubles as a check: if a rank's batch is neither, or the ranks' batches do
    not fit together, every rank raises :class:`DistributedGrowthError` (the
    others are not left waiting).
    """
    if not is_active():
        return batch
    try:
        local: Any = _local_batch(batch)
    except Exception as exc:  # noqa: BLE001 - reported to every rank below
        local = exc
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, local if not isinstance(local, Exception) else repr(local))
    bad = [(r, g) for r, g in enumerate(gathered) if isinstance(g, str)]
    if bad:
        if isinstance(local, Exception):
            raise local
        raise DistributedGrowthError(
            "the growth batch was refused on rank(s) "
            + ", ".join(f"{r} ({msg})" for r, msg in bad)
            + "; no rank grew"
        )
    kinds = [_batch_kind(g) for g in gathered]
    if len(set(kinds)) > 1:
        raise DistributedGrowthError(
            "the ranks' growth batches do not fit together (per rank: each tensor's example "
            "shape and dtype): "
            + "; ".join(f"rank {r}: {k}" for r, k in enumerate(kinds))
            + "; no rank grew"
        )
    device = next(v.device for v in _tensors(batch))
    whole = gather_tensors(gathered)
    if isinstance(whole, dict):
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in whole.items()}
    return whole[0].to(device), whole[1].to(device)


def _local_batch(batch: Any) -> Any:
    """This rank's growth batch on the CPU, for the exchange (or a clear error)."""
    if isinstance(batch, dict):
        split_batch(batch)  # the same check as in one process
        return {k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in batch.items()}
    x, y = split_batch(batch)
    if not (isinstance(x, Tensor) and isinstance(y, Tensor)):
        raise GrowthInputError(
            f"a growth batch must be (Tensor, Tensor) or a dict of tensors, got "
            f"({type(x).__name__}, {type(y).__name__})"
        )
    return x.detach().cpu(), y.detach().cpu()


def _tensors(batch: Any) -> list[Tensor]:
    values = batch.values() if isinstance(batch, dict) else batch[:2]
    return [v for v in values if isinstance(v, Tensor)]


def _batch_kind(batch: Any) -> tuple[Any, ...]:
    """What must agree between the ranks' batches: keys, and each tensor's example shape and
    dtype (the batch dimension may differ)."""
    items = batch.items() if isinstance(batch, dict) else enumerate(batch)
    return tuple(
        (k, tuple(v.shape[1:]), v.dtype) if isinstance(v, Tensor) else (k, repr(v))
        for k, v in items
    )


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in one process)."""
    if not is_active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_mean(values: dict[str, float]) -> dict[str, float]:
    """The mean over ranks of each value (the values themselves in one process)."""
    if not is_active() or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    t = _summed(t) / world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}


def all_sum(*values: float | Tensor) -> tuple[float, ...]:
    """The sum over ranks of each value (the values themselves in one process)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if is_active():
        t = _summed(t)
    return tuple(float(v) for v in t.tolist())


def weighted_mean(tensors: dict[str, Tensor], n_local: int) -> dict[str, Tensor]:
    """Each tensor averaged over ranks, weighted by the ``n_local`` examples it was computed on.

    For per-rank means over shares of one global batch this is the mean over
    the whole batch. The dict's keys must be the same on every rank. In one
    process the tensors are returned unchanged.
    """
    if not is_active():
        return tensors
    (n_total,) = all_sum(n_local)
    out = {}
    for key in sorted(tensors):
        out[key] = _summed(tensors[key] * (n_local / n_total))
    return {k: out[k] for k in tensors}


def _summed(t: Tensor) -> Tensor:
    """A new tensor: ``t`` summed over ranks, on ``t``'s device (via CUDA under nccl)."""
    buf = t.detach().clone(memory_format=torch.contiguous_format)
    if dist.get_backend() == "nccl" and buf.device.type != "cuda":
        buf = buf.cuda()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(t.device)


# ------------------------------------------------------------------ evaluation
def _share(data: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    x, y = data
    idx = torch.tensor_split(torch.arange(len(x)), world_size())[rank()]
    return x[idx], y[idx]


def evaluate(
    model: nn.Module,
    data: tuple[Tensor, Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    *,
    batch_size: int = 1024,
) -> dict[str, float | int]:
    """:func:`torchgrow.why.evaluate` over all ranks: each evaluates a share, the sums are reduced.

    Parameters
    ----------
    model : nn.Module
        The replica (not the DDP wrapper).
    data : tuple of (Tensor, Tensor)
        The whole evaluation set, the same on every rank.
    loss_fn : callable, optional
        As in :func:`torchgrow.why.evaluate`.
    batch_size : int
        Evaluation batch size.

    Returns
    -------
    dict
        ``loss``, ``n`` and (for labels) ``accuracy`` of the whole set, equal on
        every rank.
    """
    from . import why

    if not is_active():
        return why.evaluate(model, data, loss_fn, batch_size=batch_size)
    broadcast_buffers(model)
    x, y = _share(data)
    sums = torch.zeros(4, dtype=torch.float64)  # loss sum, examples, correct labels, labels
    labels = True
    if len(x):
        res = why.evaluate(model, (x, y), loss_fn, batch_size=batch_size)
        labels = "accuracy" in res
        sums[0] = float(res["loss"]) * int(res["n"])
        sums[1] = int(res["n"])
        sums[2] = float(res.get("accuracy", 0.0)) * y.numel()
        sums[3] = y.numel()
    sums = _summed(sums)
    n = int(round(float(sums[1])))
    out: dict[str, float | int] = {"loss": float(sums[0]) / n, "n": n}
    if labels:
        out["accuracy"] = round(float(sums[2])) / float(sums[3])
    return out


def accuracy(model: nn.Module, data: tuple[Tensor, Tensor], *, batch_size: int = 1024) -> float:
    """:func:`torchgrow.why.accuracy` of the whole set, reduced over ranks."""
    from . import why

    if not is_active():
        return why.accuracy(model, data, batch_size=batch_size)
    broadcast_buffers(model)
    x, y = _share(data)
    counts = torch.zeros(2, dtype=torch.float64)
    if len(x):
        counts[0] = why.accuracy(model, (x, y), batch_size=batch_size) * y.numel()
        counts[1] = y.numel()
    counts = _summed(counts)
    return round(float(counts[0])) / float(counts[1])


# ------------------------------------------------------------------ agreement
def fingerprint(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> str:
    """A digest of the architecture: parameter names and shapes, and the optimizer's state shapes."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(f"{name}:{tuple(p.shape)};".encode())
    for name, b in model.named_buffers():
        h.update(f"{name}:{tuple(b.shape)};".encode())
    if optimizer is not None:
        for group in optimizer.param_groups:
            for p in group["params"]:
                state = optimizer.state.get(p, {})
                shapes = sorted(
                    (k, tuple(v.shape)) for k, v in state.items() if isinstance(v, Tensor)
                )
                h.update(f"{tuple(p.shape)}{shapes};".encode())
    return h.hexdigest()


def agree(
    what: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    error: BaseException | None = None,
) -> None:
    """Check that every rank finished ``what`` with the same architecture.

    Every rank must call it once per step, passing ``error`` if its own step
    failed. If any rank failed, or the architectures differ, every rank raises
    (the failing rank its own error, the others :class:`DistributedGrowthError`),
    so callers can undo their edit instead of waiting forever at the next
    collective.
    """
    if not is_active():
        if error is not None:
            raise error
        return
    mine = {"error": None if error is None else repr(error), "fp": fingerprint(model, optimizer)}
    everyone: list[Any] = [None] * world_size()
    dist.all_gather_object(everyone, mine)
    failed = [(r, e["error"]) for r, e in enumerate(everyone) if e["error"] is not None]
    if error is not None:
        raise error
    if failed:
        raise DistributedGrowthError(
            f"{what} failed on rank(s) "
            + ", ".join(f"{r}: {msg}" for r, msg in failed)
            + f"; rank {rank()} undid its edit so that every replica stays as it was"
        )
    prints = [e["fp"] for e in everyone]
    if len(set(prints)) > 1:
        groups: dict[str, list[int]] = {}
        for r, p in enumerate(prints):
            groups.setdefault(p, []).append(r)
        raise DistributedGrowthError(
            f"after {what} the ranks disagree on the architecture or optimizer state "
            f"(ranks grouped by digest: {sorted(groups.values())}); every rank undid its edit. "
            "Check that every rank runs the same model, growth settings and seeds"
        )


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP does this at the start of each forward pass; after the last training
    step of a phase each rank's buffers hold its own share's statistics, so
    evaluation and growth call this first.
    """
    if not is_active():
        return
    with torch.no_grad():
        for b in model.buffers():
            dist.broadcast(b.data, src=src)


def broadcast_model(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameter and buffer values to every rank (shapes must agree)."""
    if not is_active():
        return
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=src)


# ------------------------------------------------------------------ BatchNorm over all ranks
class _SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over ranks; the gradient of each rank's copy is the summed gradient."""

    @staticmethod
    def forward(ctx: Any, t: Tensor) -> Tensor:
        return _summed(t)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return _summed(grad)


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, on CPU and GPU.

    In training mode under ``torch.distributed`` the per-channel sum, sum of
    squares and count are summed over ranks with an autograd-aware
    all-reduce, so the normalisation, its gradient and the running
    statistics are those of the whole global batch, as in one process. In
    eval mode, or in one process, it is an ordinary BatchNorm.
    (``torch.nn.SyncBatchNorm`` does the same on GPUs only.) It is a
    ``_BatchNorm``, so torchgrow's surgery grows and shrinks it like any
    BatchNorm.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and is_active()):
            return super().forward(input)
        self._check_input_dim(input)
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        x64 = input.to(torch.float64)  # E[x^2] - E[x]^2 in double: no cancellation
        local = torch.cat(
            [x64.sum(dims), (x64 * x64).sum(dims), x64.new_full((1,), input.numel() / c)]
        )
        total = _SumOverRanks.apply(local)  # summed over ranks; its backward sums gradients
        n = total[2 * c]
        mean = total[:c] / n
        var = (total[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                assert self.num_batches_tracked is not None and self.running_var is not None
                self.num_batches_tracked.add_(1)
                m = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else float(self.momentum)
                )
                unbiased = var * (n / (n - 1)) if float(n) > 1 else var
                self.running_mean.mul_(1 - m).add_(m * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - m).add_(m * unbiased.to(self.running_var.dtype))
        shape = [1, c] + [1] * (input.dim() - 2)
        out = (x64 - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        out = out.to(input.dtype)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


_PLAIN_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def convert_sync_batchnorm(model: nn.Module) -> int:
    """Replace every plain BatchNorm of ``model`` by :class:`SyncBatchNorm`, in place.

    The new modules hold the very same parameter and buffer tensors, so an
    optimizer over the model needs no change. Returns how many were replaced.
    """
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) not in _PLAIN_BN:
                continue
            sync = SyncBatchNorm(
                child.num_features,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
            )
            for key in ("weight", "bias"):  # the same Parameter objects (optimizer state)
                setattr(sync, key, getattr(child, key))
            for key in ("running_mean", "running_var", "num_batches_tracked"):
                sync._buffers[key] = child._buffers.get(key)
            sync.train(child.training)
            setattr(parent, name, sync)
            replaced += 1
    return replaced


# ------------------------------------------------------------------ the DDP wrapper
def _signature(module: nn.Module) -> tuple[tuple[int, tuple[int, ...]], ...]:
    return tuple((id(p), tuple(p.shape)) for p in module.parameters())


class GrowingDDP(nn.Module):
    """``DistributedDataParallel`` that follows a growing model.

    Use it where you would use ``DistributedDataParallel(model)``; grow
    ``wrapper.module`` (or pass the wrapper to :class:`torchgrow.Grower`,
    which unwraps it). At the first call after the model's parameters
    changed, the DDP wrapper is rebuilt (collectively, on every rank, which
    all reach it because growth steps happen at the same step everywhere).
    In a single process it calls the model directly.

    Parameters
    ----------
    module : nn.Module
        The replica.
    sync_batchnorm : bool
        Replace the model's BatchNorm layers (and those growth adds later) by
        :class:`SyncBatchNorm` at each (re)build, so that training equals one
        process on the global batches. ``False``: each rank normalises over
        its own share, as plain DDP does.
    **ddp_kwargs
        Passed to ``DistributedDataParallel`` (``device_ids``,
        ``find_unused_parameters``...).
    """

    def __init__(
        self, module: nn.Module, *, sync_batchnorm: bool = True, **ddp_kwargs: Any
    ) -> None:
        super().__init__()
        if isinstance(module, (GrowingDDP, nn.parallel.DistributedDataParallel)):
            raise GrowthInputError("module is already wrapped: pass the bare model")
        self.module = module
        self.sync_batchnorm = sync_batchnorm
        self._ddp_kwargs = ddp_kwargs
        self._ddp: nn.parallel.DistributedDataParallel | None = None
        self._built_for: tuple[tuple[int, tuple[int, ...]], ...] | None = None
        self.rebuilds = 0

    def _current(self) -> nn.Module:
        if not is_active():
            return self.module
        sig = _signature(self.module)
        if self._ddp is None or sig != self._built_for:
            if self.sync_batchnorm:
                convert_sync_batchnorm(self.module)  # blocks grown since the last build too
            # a plain attribute (not a submodule): state_dict() stays the model's own
            object.__setattr__(
                self, "_ddp", nn.parallel.DistributedDataParallel(self.module, **self._ddp_kwargs)
            )
            self._built_for = sig
            self.rebuilds += 1
        return self._ddp  # type: ignore[return-value]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._current()(*args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:  # the model's keys, no "module."
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.module.load_state_dict(*args, **kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a :class:`GrowingDDP`; any other module unchanged."""
    return model.module if isinstance(model, GrowingDDP) else model
