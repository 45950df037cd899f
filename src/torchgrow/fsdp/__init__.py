"""Growing models sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``).

Under ``fully_shard`` every parameter is a ``DTensor`` sharded on dim 0 over a
device mesh, and a ``FSDPParamGroup`` per wrapped module owns the flat
buffers its all-gathers and reduce-scatters use. A growth edit changes the
shape of some parameters, which those buffers cannot follow. torchgrow edits
in place, locally:

1. **Gather** only the parameter groups that own the modules the edit
   touches: each of their parameters (with its gradient and optimizer state)
   becomes a plain full tensor on every rank; every other group stays sharded.
2. **Edit** with the ordinary :mod:`torchgrow.ops` functions, which carry the
   optimizer as they do in one process (old entries kept, new ones per the
   edit's policy).
3. **Broadcast** rank 0's edited values (one decision, bit-identical on every
   rank), then **shard again**: each group is rebuilt from the module's new
   parameters with the mesh, placements, mixed-precision and offload policies
   and communication settings of the old one, inside the *same* FSDP state,
   so the module stays under its original state, the root stays the only
   root and resharding after forward still happens. Optimizer state and
   gradients are sharded like their new parameters.
4. **Check**: a forward on the example input (collective) must run and, for
   a function-preserving edit, match the output before; then every rank's
   architecture and optimizer-state shapes are compared
   (:func:`torchgrow.distributed.agree`). If anything failed on any rank,
   every rank restores the model, its FSDP groups and the optimizer exactly as
   they were and raises, instead of hanging at the next collective.

Checkpoints: :func:`save` writes the shards with ``torch.distributed.checkpoint``
and the grown architecture beside them; :func:`restore` builds a fresh model at
that size before ``fully_shard`` ("grow on resume"), on any number of ranks or in
one process, and :func:`load` fills it.

The FSDP internals this relies on (``FSDPState``, ``FSDPParamGroup``) are
private to torch; :func:`check_supported` says when the installed torch does
not have them in the form this package was written for (torch 2.13).

The :class:`Grower` of this package drives these edits from a trigger, as
:class:`torchgrow.Grower` does in one process: statistics come from the global
growth batch through the sharded model, and each growth step is one checked edit.

Layout: ``state`` (reading FSDP's state), ``gather`` (gather and shard again,
atomically), ``width`` (width edits and the checked edit), ``depth`` (new blocks),
``grower`` (the Grower under FSDP), ``connections`` (NeST's masks), ``checkpoint``, ``wrap`` (``fully_shard`` per layer).
"""

from .checkpoint import ARCHITECTURE_FILE, load, plain_mirror, restore, save
from .connections import grow_connections, prune_connections
from .depth import insert_identity_block, stack_blocks
from .gather import gathered
from .grower import Grower, flush_subnormal_shards
from .state import FSDPGrowthError, check_supported, is_sharded, plain_copy, reshard_idle
from .width import add_heads, edit, grow_ffn, grow_hidden, widen
from .wrap import shard_layers

__all__ = [
    "ARCHITECTURE_FILE",
    "FSDPGrowthError",
    "Grower",
    "add_heads",
    "check_supported",
    "edit",
    "flush_subnormal_shards",
    "gathered",
    "grow_connections",
    "grow_ffn",
    "grow_hidden",
    "insert_identity_block",
    "is_sharded",
    "load",
    "plain_copy",
    "plain_mirror",
    "prune_connections",
    "reshard_idle",
    "restore",
    "save",
    "shard_layers",
    "stack_blocks",
    "widen",
]
