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

from .agree import agree, broadcast_buffers, broadcast_model, fingerprint
from .collectives import (
    all_mean,
    all_sum,
    broadcast_object,
    gather_batch,
    shard,
    sharded_batches,
    weighted_loss,
    weighted_mean,
)
from .ddp import GrowingDDP, unwrap
from .evaluate import accuracy, evaluate
from .process import DistributedGrowthError, disabled, is_active, rank, shutdown, world_size
from .sync_bn import SyncBatchNorm, convert_sync_batchnorm

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
