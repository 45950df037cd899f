"""Growth inside a Lightning ``Trainer``: a callback, and checkpoints of grown models that load.

.. code-block:: python

    from torchgrow.integrations.lightning import GrowableModule, GrowthCallback

    class Net(GrowableModule, L.LightningModule):      # GrowableModule first
        ...                                            # self.net = ..., configure_optimizers

    grow = GrowthCallback(lambda module, opt: torchgrow.methods.GradMax(
        module.net, opt, when=Every(200), size=Units(4), max_events=3))
    trainer = L.Trainer(callbacks=[grow], max_epochs=5)
    trainer.fit(Net(), loader)
    Net.load_from_checkpoint(trainer.checkpoint_callback.last_model_path)  # the grown net

The callback builds the grower at ``on_fit_start`` over the optimizer Lightning made from
``configure_optimizers`` (its LR scheduler keeps working: the optimizer is edited in
place), counts one grower step per optimizer step (with ``accumulate_grad_batches`` it
waits for the step), grows on the training batch, and logs every event through the
trainer's loggers (``torchgrow/params``, ``torchgrow/units_added``,
``torchgrow/max_abs_delta``). It stores the grown structure in every checkpoint
(:func:`torchgrow.io.architecture_record`, a few KB) and the grower's counters and events
as its own state, so ``trainer.fit(ckpt_path=...)`` resumes with the same numbers.

A checkpoint is loaded into a module built at the original size, and Lightning loads the
``state_dict`` right after the module's ``on_load_checkpoint`` hook: the grown structure
has to be restored there. :class:`GrowableModule` does it (for ``load_from_checkpoint``
and for resuming); for a module without it (or one that overrides its hook), the callback
wraps the module's hook when a fit starts, which covers resuming but not ``load_from_checkpoint`` (call
:func:`restore_from_checkpoint` in your own ``on_load_checkpoint`` then).

Single-process training only for now (one device, one optimizer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from torch import nn
from torch.optim import Optimizer

try:
    import lightning.pytorch as pl
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "torchgrow.integrations.lightning needs Lightning: pip install torchgrow[lightning]"
    ) from exc

from ..errors import GrowthInputError
from ..grower import Grower, GrowthEvent
from ..io.architecture import architecture_record, restore_architecture

__all__ = ["CHECKPOINT_KEY", "GrowableModule", "GrowthCallback", "restore_from_checkpoint"]

CHECKPOINT_KEY = "torchgrow_architecture"

GrowerFactory = Callable[[pl.LightningModule, Optimizer], Grower]


def restore_from_checkpoint(
    module: nn.Module, checkpoint: dict[str, Any], *, allow: Iterable[Any] = ()
) -> list[str]:
    """Give ``module`` the grown structure stored in a Lightning ``checkpoint`` dict.

    Call it in ``on_load_checkpoint``, before Lightning loads the ``state_dict``. A
    checkpoint without a record (nothing grew, or no :class:`GrowthCallback`) changes
    nothing.

    Parameters
    ----------
    module : nn.Module
        The module being loaded, built at its original size.
    checkpoint : dict
        What Lightning passes to ``on_load_checkpoint``.
    allow : iterable of classes
        Your own ``nn.Module`` classes inside the grown submodules (the record is
        unpickled with :func:`torchgrow.load`'s allow-list; torch and torchgrow layers
        need nothing).

    Returns
    -------
    list of str
        The submodules replaced.
    """
    record = checkpoint.get(CHECKPOINT_KEY)
    if record is None:
        return []
    return restore_architecture(module, record, allow=allow)


class GrowableModule:
    """Mixin for a ``LightningModule`` whose checkpoints may hold a grown model.

    Put it before ``LightningModule`` in the bases. Its ``on_load_checkpoint`` restores the
    grown structure, then calls the next class's; a subclass that overrides the hook
    must call ``super().on_load_checkpoint(checkpoint)``. Your own module classes inside
    the grown part go in the class attribute ``torchgrow_allow``.
    """

    torchgrow_allow: Sequence[type] = ()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_from_checkpoint(self, checkpoint, allow=type(self).torchgrow_allow)  # type: ignore[arg-type]
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]


def _path_in(root: nn.Module, target: nn.Module) -> str | None:
    for name, sub in root.named_modules():
        if sub is target:
            return name
    return None


class GrowthCallback(pl.Callback):
    """Grows the model during ``Trainer.fit``.

    Parameters
    ----------
    grower : callable or Grower
        Preferably a function ``(lightning_module, optimizer) -> Grower`` (for instance a
        :mod:`torchgrow.methods` constructor), called when each fit starts with the
        optimizer Lightning built. A ready :class:`~torchgrow.Grower` is accepted if it
        already holds that optimizer object.
    batch_fn : callable, optional
        Turns the training batch into the grower's ``(x, y)`` (default: the batch as it
        is). Called only when the grower's trigger fires.
    loss_fn : callable, optional
        The loss for the growth statistics (default: the grower's).
    log : bool
        Log each growth step through the trainer's loggers.
    allow : iterable of classes
        Your own module classes inside the grown part, for restoring checkpoints of a
        module without :class:`GrowableModule`.

    Attributes
    ----------
    grower : Grower or None
        The grower of the current fit.
    events : list of GrowthEvent
        Every growth event of this callback's fits (a resumed fit's included).
    """

    def __init__(
        self,
        grower: GrowerFactory | Grower,
        *,
        batch_fn: Callable[[Any], Any] | None = None,
        loss_fn: Callable | None = None,
        log: bool = True,
        allow: Iterable[Any] = (),
    ) -> None:
        if not (isinstance(grower, Grower) or callable(grower)):
            raise GrowthInputError(
                "GrowthCallback needs a Grower or a function (module, optimizer) -> Grower, "
                f"got {type(grower).__name__}"
            )
        self._factory = None if isinstance(grower, Grower) else grower
        self.grower: Grower | None = grower if isinstance(grower, Grower) else None
        self.batch_fn = batch_fn
        self.loss_fn = loss_fn
        self.log = log
        self.allow = tuple(allow)
        self._path: str | None = None
        self._loaded_state: dict[str, Any] | None = None
        self._last_step: int | None = None

    @property
    def events(self) -> list[GrowthEvent]:
        return [] if self.grower is None else list(self.grower.events)

    # ------------------------------------------------------------------ fit start
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if trainer.world_size > 1:
            raise GrowthInputError(
                f"GrowthCallback grows single-process training only (this trainer runs "
                f"{trainer.world_size} processes); torchgrow.distributed grows under DDP in "
                "your own loop"
            )
        if type(pl_module).on_load_checkpoint is not GrowableModule.on_load_checkpoint:
            self._wrap_load_hook(pl_module)  # (restoring twice, via an override, is harmless)

    def _wrap_load_hook(self, pl_module: pl.LightningModule) -> None:
        """Restore the grown structure before Lightning loads a resumed fit's weights."""
        hook = pl_module.on_load_checkpoint
        if getattr(hook, "_torchgrow_wrapped", False):
            return
        allow = self.allow

        def on_load_checkpoint(checkpoint: dict[str, Any]) -> None:
            restore_from_checkpoint(pl_module, checkpoint, allow=allow)
            hook(checkpoint)

        on_load_checkpoint._torchgrow_wrapped = True  # type: ignore[attr-defined]
        pl_module.on_load_checkpoint = on_load_checkpoint  # type: ignore[method-assign]

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizers = list(trainer.optimizers)
        if self._factory is not None:
            if len(optimizers) != 1:
                raise GrowthInputError(
                    f"GrowthCallback needs exactly one optimizer, configure_optimizers gave "
                    f"{len(optimizers)}"
                )
            grower = self._factory(pl_module, optimizers[0])
            if not isinstance(grower, Grower):
                raise GrowthInputError(
                    f"the grower function returned {type(grower).__name__}, not a Grower"
                )
            self.grower = grower
        assert self.grower is not None
        if not any(self.grower.optimizer is opt for opt in optimizers):
            raise GrowthInputError(
                "the grower does not hold the optimizer Lightning built from "
                "configure_optimizers (it would carry another one through each edit): pass "
                "GrowthCallback a function (module, optimizer) -> Grower instead"
            )
        self._path = _path_in(pl_module, self.grower.model)
        if self._path is None:
            raise GrowthInputError(
                "the grower grows a model that is not part of the LightningModule being fit "
                "(after a checkpoint is restored the module holds new submodules): pass "
                "GrowthCallback a function (module, optimizer) -> Grower"
            )
        if self._loaded_state is not None:
            self.grower.load_state_dict(self._loaded_state)
            self._loaded_state = None
        self._last_step = trainer.global_step

    # ------------------------------------------------------------------ training
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.grower is None or trainer.global_step == self._last_step:
            return  # accumulating gradients: the optimizer has not stepped yet
        self._last_step = trainer.global_step

        def growth_batch() -> Any:
            return batch if self.batch_fn is None else self.batch_fn(batch)

        events = self.grower.step(growth_batch, self.loss_fn)
        if events and self.log:
            metrics = {
                "torchgrow/params": float(events[-1].params_after),
                "torchgrow/units_added": float(sum(e.units_added for e in events)),
                "torchgrow/max_abs_delta": max(e.max_abs_delta for e in events),
            }
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        paths = None if not self._path else [self._path]
        checkpoint[CHECKPOINT_KEY] = architecture_record(pl_module, paths)

    def state_dict(self) -> dict[str, Any]:
        if self.grower is not None:
            return {"grower": self.grower.state_dict()}
        return {} if self._loaded_state is None else {"grower": self._loaded_state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded_state = state_dict.get("grower")
