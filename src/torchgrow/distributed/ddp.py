"""GrowingDDP: a DistributedDataParallel wrapper that follows the model's growth."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import GrowthInputError
from .process import is_active
from .sync_bn import convert_sync_batchnorm


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
