"""Growth inside a Hugging Face ``Trainer``: a ``TrainerCallback``, and grown checkpoints.

.. code-block:: python

    from torchgrow.integrations.hf import GrowthCallback, restore_checkpoint

    grow = GrowthCallback(lambda model, opt: torchgrow.Grower(
        model, opt, when=Every(200, times=3), how=Random(seed=0), size=Units(16)))
    trainer = transformers.Trainer(model=model, args=args, train_dataset=ds, callbacks=[grow])
    trainer.train()
    ...
    restore_checkpoint(fresh_model, "out/checkpoint-600")   # before resuming from it
    trainer.train(resume_from_checkpoint="out/checkpoint-600")

The callback builds the grower when training begins over the model and the optimizer the
``Trainer`` made (accelerate's ``AcceleratedOptimizer`` and any wrapper exposing
``.optimizer`` are unwrapped: the wrapped optimizer is what every edit carries, and the
wrapper and the LR scheduler keep working on it), counts one grower step per optimizer
step (``on_step_end``: gradient accumulation never sees growth between micro-batches), and
draws the growth batch, when the trigger fires, from an iterator of its own over the
``Trainer``'s training dataloader (as GradMax's official code draws a separate batch).
Batches are Hugging Face dicts: ``batch_fn`` turns one into the grower's ``(x, y)``
(default ``(batch["input_ids"], batch["labels"])``) and ``loss_fn`` scores the model's
output against ``y`` (default :func:`causal_lm_loss`). Growth events are written to the
``Trainer``'s log history (``torchgrow/params`` ...).

Each checkpoint folder gets ``torchgrow_architecture.pt`` (the grown structure without its
weights, :func:`torchgrow.io.architecture_record`) and ``torchgrow_grower.pt`` (the
grower's counters, events and policy state). The ``Trainer`` loads a checkpoint's weights
into the model it holds before any callback runs, so restore the structure first:
:func:`restore_checkpoint` does, and hands the grower's state to the callback for when
the resumed training begins.

Single-process training only for now.
"""

from __future__ import annotations

import importlib
import io
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

try:
    import transformers
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "torchgrow.integrations.hf needs transformers: pip install torchgrow[hf]"
    ) from exc

from ..errors import CheckpointError, GrowthInputError, warn
from ..grower import Grower, GrowthEvent
from ..io.architecture import architecture_record, restore_architecture

__all__ = [
    "ARCHITECTURE_FILE",
    "GROWER_FILE",
    "GrowthCallback",
    "causal_lm_loss",
    "restore_checkpoint",
    "unwrap_optimizer",
]

ARCHITECTURE_FILE = "torchgrow_architecture.pt"
GROWER_FILE = "torchgrow_grower.pt"

# grower states read by restore_checkpoint, waiting for the callback's on_train_begin
_RESUMED: weakref.WeakKeyDictionary[nn.Module, dict[str, Any]] = weakref.WeakKeyDictionary()


def unwrap_optimizer(optimizer: Any) -> Optimizer:
    """The ``torch.optim.Optimizer`` inside wrappers that expose it as ``.optimizer``
    (accelerate's ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``).

    Raises
    ------
    GrowthInputError
        If no ``torch.optim.Optimizer`` is found.
    """
    for _ in range(8):  # AcceleratedOptimizer is an Optimizer itself: unwrap what wraps one
        inner = getattr(optimizer, "optimizer", None)
        if inner is None or inner is optimizer:
            break
        optimizer = inner
    if not isinstance(optimizer, Optimizer):
        raise GrowthInputError(
            f"no torch.optim.Optimizer inside {type(optimizer).__name__} (a wrapper must expose "
            "it as .optimizer)"
        )
    return optimizer


def causal_lm_loss(output: Any, labels: Tensor) -> Tensor:
    """Next-token cross-entropy of a causal LM's ``output.logits`` against ``labels``
    (shifted by one, ``-100`` ignored), as Hugging Face's causal LM heads compute it."""
    logits = output.logits if hasattr(output, "logits") else output
    logits = logits[:, :-1].reshape(-1, logits.shape[-1])
    return F.cross_entropy(logits.float(), labels[:, 1:].reshape(-1), ignore_index=-100)


def _default_batch(batch: Any) -> tuple[Tensor, Tensor]:
    try:
        return batch["input_ids"], batch["labels"]
    except (KeyError, TypeError) as exc:
        raise GrowthInputError(
            "the growth batch has no 'input_ids' and 'labels': pass GrowthCallback(batch_fn=...) "
            "returning the grower's (x, y) for your batches"
        ) from exc


def restore_checkpoint(
    model: nn.Module, folder: str | Path, *, allow: Iterable[Any] = ()
) -> list[str]:
    """Give ``model`` the grown structure saved in a ``Trainer`` checkpoint folder.

    Call it before ``trainer.train(resume_from_checkpoint=folder)`` or before loading the
    folder's weights into ``model`` yourself; a folder without a record changes nothing.

    Parameters
    ----------
    model : nn.Module
        The model, built from its config at the original size.
    folder : str or Path
        The checkpoint folder (``output_dir/checkpoint-N``).
    allow : iterable of classes
        Your own module classes inside the model (the record is unpickled with
        :func:`torchgrow.load`'s allow-list, to which the ``transformers`` module and
        config classes it names are added).

    Returns
    -------
    list of str
        The submodules replaced.
    """
    folder = Path(folder)
    path = folder / ARCHITECTURE_FILE
    if not path.exists():
        return []
    record = path.read_bytes()
    allowed = _transformers_classes(record)
    # The kernel-function wrappers the stand-in builds are not named by the record: their
    # classes must be allowed for unpickling to restore their state.
    wrappers = [
        w
        for c in allowed
        if isinstance(c, type)
        for w in _kernel_wrappers(importlib.import_module(c.__module__))
    ]
    with torch.serialization.safe_globals(list(dict.fromkeys(wrappers))):
        changed = restore_architecture(model, record, allow=[*allow, *allowed])
    if (folder / GROWER_FILE).exists():  # for the callback when the resumed training begins
        _RESUMED[model] = torch.load(folder / GROWER_FILE, weights_only=True)
    return changed


def _kernel_function(module_name: str, function_name: str) -> nn.Module:
    """A fresh per-module wrapper of a ``transformers`` function the ``kernels`` package made
    swappable (``use_kernel_forward_from_hub`` turns ``apply_rotary_pos_emb`` into a module
    each attention layer holds a copy of); stands in for ``kernels``' own rebuild function,
    which would import and instantiate whatever a record names."""
    if not module_name.startswith("transformers."):
        raise CheckpointError(
            f"the record asks for a kernel function of {module_name!r}; only those of "
            "transformers' own modules are rebuilt"
        )
    try:
        wrapper = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(
            f"the record names {module_name}.{function_name}, which this transformers lacks: {exc}"
        ) from exc
    if not (isinstance(wrapper, nn.Module) and hasattr(wrapper, "kernel_layer_name")):
        raise CheckpointError(
            f"{module_name}.{function_name} is not a kernel function of transformers"
        )
    return type(wrapper)()


class _StandIn:
    """``function`` under the name ``name`` (``module.qualname``) a record refers to: the
    allow-list, like torch's safe globals, finds an object by its module and qualified name."""

    def __init__(self, function: Callable[..., Any], name: str):
        self._function = function
        self.__module__, _, self.__qualname__ = name.rpartition(".")

    def __call__(self, *args: Any) -> Any:
        return self._function(*args)


def _kernel_wrappers(module: Any) -> list[type]:
    """The classes of the kernel-function wrappers a ``transformers`` module defines."""
    return [
        type(v)
        for v in vars(module).values()
        if isinstance(v, nn.Module) and hasattr(v, "kernel_layer_name")
    ]


def _transformers_classes(record: bytes) -> list[Any]:
    """What of the installed ``transformers`` a record may refer to: its module and config
    classes, and the stand-in for ``kernels``' rebuild of kernel-function wrappers.

    Like the layers of ``torch.nn``, they are code installed here, not code from the file;
    unpickling builds instances without running their constructors.
    """
    names = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(record))
    found: list[Any] = []
    for name in names:
        if name.startswith("kernels.") and name.endswith("._rebuild_kernel_func"):
            found.append(_StandIn(_kernel_function, name))
            continue
        if not name.startswith("transformers."):
            continue
        module, _, attr = name.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
        if isinstance(obj, type) and issubclass(
            obj, (nn.Module, transformers.PretrainedConfig, transformers.GenerationConfig)
        ):
            found.append(obj)
    return found


class GrowthCallback(transformers.TrainerCallback):
    """Grows the model during ``Trainer.train()``.

    Parameters
    ----------
    grower : callable
        ``(model, optimizer) -> Grower``, called when training begins with the
        ``Trainer``'s model and its (unwrapped) optimizer.
    batch_fn : callable, optional
        A training batch (a dict) to the grower's ``(x, y)``; default
        ``(batch["input_ids"], batch["labels"])``.
    loss_fn : callable, optional
        ``(output, y) -> loss`` for the growth statistics; default :func:`causal_lm_loss`.

    Attributes
    ----------
    grower : Grower or None
        The grower of the current training.
    """

    def __init__(
        self,
        grower: Callable[[nn.Module, Optimizer], Grower],
        *,
        batch_fn: Callable[[Any], Any] | None = None,
        loss_fn: Callable[[Any, Tensor], Tensor] | None = None,
    ) -> None:
        if not callable(grower) or isinstance(grower, Grower):
            raise GrowthInputError(
                "GrowthCallback needs a function (model, optimizer) -> Grower: the Trainer "
                "builds its optimizer when training begins"
            )
        self._factory = grower
        self.batch_fn = batch_fn or _default_batch
        self.loss_fn = loss_fn or causal_lm_loss
        self.grower: Grower | None = None
        self._batches: Iterator[Any] | None = None
        self._loader: Any = None

    @property
    def events(self) -> list[GrowthEvent]:
        return [] if self.grower is None else list(self.grower.events)

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if args.world_size > 1:
            raise GrowthInputError(
                f"GrowthCallback grows single-process training only (world size "
                f"{args.world_size}); torchgrow.distributed grows under DDP in your own loop"
            )
        if model is None or optimizer is None:
            raise GrowthInputError("the Trainer gave the callback no model or optimizer")
        grower = self._factory(model, unwrap_optimizer(optimizer))
        if not isinstance(grower, Grower):
            raise GrowthInputError(f"the grower function returned {type(grower).__name__}")
        self.grower = grower
        self._loader = kwargs.get("train_dataloader")
        self._batches = None
        resumed = _RESUMED.pop(model, None)
        if resumed is not None:
            self.grower.load_state_dict(resumed)
        elif state.global_step:
            warn(
                f"training resumes at step {state.global_step} but restore_checkpoint(model, "
                "folder) was not called: the grower starts with no events and fresh policy "
                "state"
            )
        self.grower.state.step = max(self.grower.state.step, int(state.global_step))

    def _growth_batch(self) -> tuple[Tensor, Tensor]:
        if self._loader is None:
            raise GrowthInputError("the Trainer gave the callback no training dataloader")
        # A shuffling sampler draws its seed from torch's global generator: the growth
        # batches must not move the training's own data order (or its dropout).
        with torch.random.fork_rng(devices=[]):
            if self._batches is None:
                self._batches = iter(self._loader)
            try:
                batch = next(self._batches)
            except StopIteration:
                self._batches = iter(self._loader)
                batch = next(self._batches)
        return self.batch_fn(batch)

    def on_step_end(self, args, state, control, **kwargs):
        if self.grower is None:
            return control
        events = self.grower.step(self._growth_batch, self.loss_fn)
        if events:
            state.log_history.append(
                {
                    "torchgrow/params": events[-1].params_after,
                    "torchgrow/units_added": sum(e.units_added for e in events),
                    "torchgrow/max_abs_delta": max(e.max_abs_delta for e in events),
                    "step": state.global_step,
                }
            )
        return control

    def on_save(self, args, state, control, model=None, **kwargs):
        if self.grower is None or model is None:
            return control
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not folder.is_dir():
            raise CheckpointError(f"the Trainer's checkpoint folder {folder} is not there")
        (folder / ARCHITECTURE_FILE).write_bytes(architecture_record(model))
        torch.save(self.grower.state_dict(), folder / GROWER_FILE)
        return control
