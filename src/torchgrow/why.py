"""Why: the goal of growing, and the metrics every method is judged on.

Growing methods are compared at equal cost, so this module measures the cost
side (parameters, inference FLOPs, cumulative training FLOPs) and the quality
side (accuracy, loss) the same way for every method.

Dormant connections, i.e. entries of a weight whose connection mask
(:func:`torchgrow.ops.apply_mask`) is 0, are neither parameters nor
FLOPs: a masked layer costs only what its active connections cost.

FLOP convention
---------------
:func:`flops_per_example` follows the convention of the NeST paper's tables
(Dai, Yin and Jha, 2019), in which a multiply-accumulate is 2 FLOPs:

* ``nn.Linear``: ``2 * active_weights`` per example, times the number of
  positions when the input has more than two dimensions (``(N, L, in)``
  costs ``L`` times as much as ``(N, in)``).
* ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d``: ``2 * active_weights`` times
  the number of output positions (``H_out * W_out`` for 2-D). With
  ``groups > 1`` the weight already holds ``in_channels / groups`` input
  channels, so the same formula holds. Padded positions count like any other.
  A ``Conv2d`` with a partial-area input mask (:mod:`torchgrow.ops.area`)
  counts only the MACs that read an input position inside its area.
* ``nn.ConvTranspose1d/2d/3d``: ``2 * active_weights`` times the number of
  *input* positions (each input element meets every weight of its group once).
* Biases are not counted.
* BatchNorm (1d/2d/3d, SyncBatchNorm): 2 FLOPs per output element (the
  inference-time scale and shift). LayerNorm: 5 FLOPs per output element.
* Everything else (activations, pooling, additions, functional calls such as
  ``F.linear`` made outside a counted module) costs 0.

With this convention the LeNet-300-100 (784-300-100-10) costs 532,400 FLOPs
(the paper's "532K") and the Caffe LeNet-5 costs exactly 4,586,000 (the
paper's "4,586K").

Training compute
----------------
:class:`TrainingCompute` charges a training step ``3x`` the forward FLOPs per
example (forward, plus a backward pass that costs about twice the forward:
one product for the gradient of the input and one for the gradient of the
weights), and a forward-only pass (statistics batches of a growth step,
evaluation) ``1x``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .modes import eval_mode
from .ops.area import input_mask_of, masked_conv_macs
from .ops.masks import mask_of, weight_parameter

__all__ = [
    "Data",
    "count_parameters",
    "flops_per_example",
    "flops_breakdown",
    "accuracy",
    "evaluate",
    "mean_loss",
    "TrainingCompute",
    "gradient_norm",
    "METRICS",
    "metric",
]

Data: TypeAlias = DataLoader | Dataset | tuple[Tensor, Tensor]
"""What the quality metrics accept: a ``DataLoader`` yielding ``(x, y)`` batches,
a ``Dataset`` of ``(x, y)`` pairs, or a tuple ``(x, y)`` of tensors."""

ModelInput: TypeAlias = Tensor | Sequence[Tensor]

_BATCH_NORMS = (nn.modules.batchnorm._BatchNorm,)  # BatchNorm1d/2d/3d, both SyncBatchNorms
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_COUNTED = (nn.Linear, *_CONVS, *_CONV_TRANSPOSES, *_BATCH_NORMS, nn.LayerNorm)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _active_weights(module: nn.Module) -> int:
    mask = mask_of(module)
    if mask is not None:
        return int(torch.count_nonzero(mask))
    return weight_parameter(module).numel()


def _active_mask(module: nn.Module) -> Tensor:
    mask = mask_of(module)
    w = weight_parameter(module)
    return torch.ones_like(w) if mask is None else mask.ne(0).to(w.dtype)


def _module_flops(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    """FLOPs of one call of a counted module on a whole batch."""
    if not isinstance(output, Tensor):
        return 0
    if isinstance(module, nn.Linear):
        positions = output.numel() // max(module.out_features, 1)
        return 2 * _active_weights(module) * positions
    if isinstance(module, nn.Conv2d) and input_mask_of(module) is not None:
        batch = inputs[0].shape[0] if inputs[0].dim() == 4 else 1
        return 2 * masked_conv_macs(module, _active_mask(module)) * batch
    if isinstance(module, _CONVS):
        positions = output.numel() // max(module.out_channels, 1)
        return 2 * _active_weights(module) * positions
    if isinstance(module, _CONV_TRANSPOSES):
        x = inputs[0]
        positions = x.numel() // max(module.in_channels, 1)
        return 2 * _active_weights(module) * positions
    if isinstance(module, _BATCH_NORMS):
        return 2 * output.numel()
    if isinstance(module, nn.LayerNorm):
        return 5 * output.numel()
    return 0


def _as_inputs(example_input: ModelInput) -> tuple[Tensor, ...]:
    if isinstance(example_input, Tensor):
        inputs: tuple[Tensor, ...] = (example_input,)
    elif isinstance(example_input, (tuple, list)) and all(
        isinstance(t, Tensor) for t in example_input
    ):
        inputs = tuple(example_input)
    else:
        raise TypeError(
            "example_input must be a Tensor (or a tuple of Tensors passed as positional "
            f"arguments), got {type(example_input).__name__}"
        )
    if not inputs or inputs[0].dim() == 0:
        raise ValueError(
            "example_input needs a leading batch dimension, e.g. x[:1] for a single example"
        )
    if inputs[0].shape[0] == 0:
        raise ValueError("example_input has an empty batch: give at least one example")
    return inputs


def _count_flops(model: nn.Module, example_input: ModelInput) -> dict[str, int]:
    """Per-module FLOPs for the whole batch of ``example_input``, and the batch size."""
    inputs = _as_inputs(example_input)
    batch = inputs[0].shape[0]
    device = _model_device(model)
    inputs = tuple(t.to(device) for t in inputs)

    totals: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if not isinstance(module, _COUNTED):
            continue

        def hook(mod: nn.Module, args: tuple[Any, ...], out: Any, _name: str = name) -> None:
            totals[_name] = totals.get(_name, 0) + _module_flops(mod, args, out)

        handles.append(module.register_forward_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return {name: total // batch for name, total in totals.items()}


# ---------------------------------------------------------------------------
# cost
# ---------------------------------------------------------------------------


def count_parameters(
    model: nn.Module, *, active_only: bool = True, trainable_only: bool = False
) -> int:
    """Number of scalar parameters of ``model``.

    Each parameter tensor is counted once, including the trainable tensors that
    live inside parametrizations (``module.parametrizations.weight.original``)
    and tensors shared between modules.

    Parameters
    ----------
    model : nn.Module
        The model.
    active_only : bool, default True
        Count only the active entries (mask != 0) of masked weights; dormant
        connections are not parameters. With ``False`` the full dense size of
        every tensor is counted.
    trainable_only : bool, default False
        Skip parameters with ``requires_grad=False``.

    Returns
    -------
    int
        The number of parameters.

    Raises
    ------
    ValueError
        If the model holds uninitialized (lazy) parameters.
    """
    masks: dict[int, Tensor] = {}
    if active_only:
        for module in model.modules():
            mask = mask_of(module)
            if mask is not None:
                masks.setdefault(id(weight_parameter(module)), mask)
    total = 0
    for name, p in model.named_parameters():
        if isinstance(p, nn.parameter.UninitializedParameter):
            raise ValueError(
                f"parameter {name!r} is not initialized yet (lazy module): "
                "run one forward pass before counting parameters"
            )
        if trainable_only and not p.requires_grad:
            continue
        mask = masks.get(id(p))
        total += int(torch.count_nonzero(mask)) if mask is not None else p.numel()
    return total


def flops_breakdown(model: nn.Module, example_input: ModelInput) -> dict[str, int]:
    """Forward FLOPs per example of each counted module.

    Runs one real forward pass with hooks (see the module docstring for the
    convention). Only counted modules that ran appear; a module called twice
    is charged twice.

    Parameters
    ----------
    model : nn.Module
        The model. It is run in eval mode under ``torch.no_grad``; each
        submodule's train/eval mode is restored afterwards.
    example_input : Tensor or sequence of Tensor
        A batch of any size (first dimension) on which to run the model; a
        sequence is passed as positional arguments, the first one giving the
        batch size. It is moved to the model's device.

    Returns
    -------
    dict of str to int
        FLOPs per example keyed by qualified module name (``""`` for the model
        itself), in the order the modules first ran.
    """
    return _count_flops(model, example_input)


def flops_per_example(model: nn.Module, example_input: ModelInput) -> int:
    """FLOPs of one forward pass per example.

    ``2 x`` the multiply-accumulates of the active (unmasked) weights of linear
    and convolution layers, plus 2 FLOPs per BatchNorm output element and 5
    per LayerNorm output element; biases and everything else are free. See the
    module docstring for the full convention, which matches the NeST paper's
    tables (LeNet-300-100: 532,400, LeNet-5: 4,586,000).

    Parameters
    ----------
    model : nn.Module
        The model. It is run once in eval mode under ``torch.no_grad``; each
        submodule's train/eval mode is restored afterwards.
    example_input : Tensor or sequence of Tensor
        A batch of any size; the total is divided by the batch size (the first
        dimension), so the answer does not depend on it.

    Returns
    -------
    int
        FLOPs per example.
    """
    return sum(_count_flops(model, example_input).values())


class TrainingCompute:
    """Running total of the FLOPs spent on training.

    The per-example forward FLOPs are counted once, at construction, and
    cached: counting needs a forward pass, so it is not repeated every step.
    Call :meth:`refresh` after the architecture changes (a growth step).

    Convention: a training step costs ``3x`` the forward FLOPs per example
    (the backward pass costs about twice the forward); a forward-only pass
    (statistics batches for growth, evaluation if it should count) ``1x``.

    Parameters
    ----------
    model : nn.Module
        The model being trained (kept by reference, so :meth:`refresh` sees
        the grown model).
    example_input : Tensor or sequence of Tensor
        An example batch; only its first example is kept.

    Attributes
    ----------
    model : nn.Module
        The model whose FLOPs :meth:`refresh` recounts.
    total : int
        Cumulative FLOPs spent so far.
    steps : int
        Number of :meth:`add_step` calls.
    examples_trained : int
        Examples seen by training steps.
    examples_forward : int
        Examples seen by forward-only passes.
    """

    step_multiplier: int = 3
    """FLOPs of a training step, in units of forward FLOPs."""

    def __init__(self, model: nn.Module, example_input: ModelInput) -> None:
        inputs = _as_inputs(example_input)
        self.model = model
        self._example = tuple(t[:1].detach().clone() for t in inputs)
        self.total: int = 0
        self.steps: int = 0
        self.examples_trained: int = 0
        self.examples_forward: int = 0
        self._flops: int = flops_per_example(model, self._example)

    @property
    def flops_per_example(self) -> int:
        """The cached forward FLOPs per example of the current architecture."""
        return self._flops

    @staticmethod
    def _check_batch(batch_size: int) -> int:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
            raise ValueError(f"batch_size must be a non-negative int, got {batch_size!r}")
        return batch_size

    def add_step(self, batch_size: int) -> int:
        """Charge one training step (forward + backward) on ``batch_size`` examples.

        Parameters
        ----------
        batch_size : int
            Examples in the step.

        Returns
        -------
        int
            The FLOPs added: ``3 * flops_per_example * batch_size``.
        """
        n = self._check_batch(batch_size)
        added = self.step_multiplier * self._flops * n
        self.total += added
        self.steps += 1
        self.examples_trained += n
        return added

    def add_forward(self, batch_size: int) -> int:
        """Charge a forward-only pass on ``batch_size`` examples.

        Parameters
        ----------
        batch_size : int
            Examples in the pass.

        Returns
        -------
        int
            The FLOPs added: ``flops_per_example * batch_size``.
        """
        n = self._check_batch(batch_size)
        added = self._flops * n
        self.total += added
        self.examples_forward += n
        return added

    def refresh(self, example_input: ModelInput | None = None) -> int:
        """Recount the per-example FLOPs (after the architecture changed).

        Parameters
        ----------
        example_input : Tensor or sequence of Tensor, optional
            A new example batch (e.g. if the input shape changed); by default
            the one given at construction.

        Returns
        -------
        int
            The new per-example forward FLOPs.
        """
        if example_input is not None:
            self._example = tuple(t[:1].detach().clone() for t in _as_inputs(example_input))
        self._flops = flops_per_example(self.model, self._example)
        return self._flops

    def state_dict(self) -> dict[str, int]:
        """The counters, for checkpointing.

        Returns
        -------
        dict of str to int
            ``total``, ``flops_per_example``, ``steps``, ``examples_trained``
            and ``examples_forward``.
        """
        return {
            "total": self.total,
            "flops_per_example": self._flops,
            "steps": self.steps,
            "examples_trained": self.examples_trained,
            "examples_forward": self.examples_forward,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore counters saved by :meth:`state_dict`.

        Parameters
        ----------
        state : dict of str to int
            A state from :meth:`state_dict`. ``flops_per_example`` is restored
            too (the model is expected to be restored alongside).

        Raises
        ------
        ValueError
            If a key is missing or a value is not a non-negative integer.
        """
        keys = ("total", "flops_per_example", "steps", "examples_trained", "examples_forward")
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"TrainingCompute state is missing {missing}")
        values = {}
        for k in keys:
            v = state[k]
            if isinstance(v, Tensor):
                v = v.item()
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(
                    f"TrainingCompute state {k!r} must be a non-negative int, got {v!r}"
                )
            values[k] = v
        self.total = values["total"]
        self._flops = values["flops_per_example"]
        self.steps = values["steps"]
        self.examples_trained = values["examples_trained"]
        self.examples_forward = values["examples_forward"]

    def __repr__(self) -> str:
        return (
            f"TrainingCompute(total={self.total:,}, flops_per_example={self._flops:,}, "
            f"steps={self.steps})"
        )


def gradient_norm(tensors: Tensor | nn.Module | Iterable[Tensor]) -> float:
    """L2 norm of the gradients of ``tensors`` taken together.

    Used, e.g., to report the gradient norm of the weights a growth step just
    added. Tensors without a gradient (``.grad is None``) count as 0.

    Parameters
    ----------
    tensors : Tensor, nn.Module or iterable of Tensor
        The tensors (a module stands for its parameters).

    Returns
    -------
    float
        ``sqrt(sum of squared gradient entries)``, accumulated in float64.
    """
    if isinstance(tensors, nn.Module):
        tensors = list(tensors.parameters())
    elif isinstance(tensors, Tensor):
        tensors = [tensors]
    total = 0.0
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"gradient_norm expects tensors, got {type(t).__name__}")
        g = t.grad
        if g is None:
            continue
        if g.is_sparse:
            g = g.coalesce().values()
        total += float(g.detach().to(torch.float64).pow(2).sum())
    return math.sqrt(total)


# ---------------------------------------------------------------------------
# quality
# ---------------------------------------------------------------------------


def _is_label_dtype(t: Tensor) -> bool:
    return t.dtype == torch.bool or not (t.is_floating_point() or t.is_complex())


def _batches(data: Data, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(data, (tuple, list)):
        if len(data) != 2 or not all(isinstance(t, Tensor) for t in data):
            raise TypeError("data given as a tuple must be (x, y), two tensors")
        x, y = data
        if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"x and y must share their first (example) dimension, got shapes "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        for i in range(0, x.shape[0], batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
        return
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        data = DataLoader(data, batch_size=batch_size)
    if not isinstance(data, DataLoader):
        raise TypeError(
            "data must be a DataLoader, a Dataset or a tuple (x, y) of tensors, "
            f"got {type(data).__name__}"
        )
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError("the DataLoader must yield (x, y) batches")
        yield batch[0], batch[1]


def _is_binary_logit(out: Tensor, y: Tensor) -> bool:
    """A single score per label: shape ``(N,)``, or size 1 along the class dimension."""
    single = out.dim() == 1 or (out.dim() >= 2 and out.shape[1] == 1)
    return single and out.numel() == y.numel()


def _predict(out: Tensor, y: Tensor) -> Tensor:
    if _is_binary_logit(out, y):
        return (out > 0).long().reshape(y.shape)
    if out.dim() < 2:
        raise ValueError(f"cannot read class predictions from an output of shape {out.shape}")
    return out.argmax(dim=1)


def _labels(y: Tensor, what: str) -> Tensor:
    if not _is_label_dtype(y):
        raise ValueError(
            f"{what}: the targets are not class labels (dtype {y.dtype}); accuracy needs "
            "integer class indices (for one-hot targets pass y.argmax(1))"
        )
    return y.long()


def _default_loss(out: Tensor, y: Tensor) -> Tensor:
    if _is_label_dtype(y):
        y = y.long()
        if _is_binary_logit(out, y):
            return F.binary_cross_entropy_with_logits(out.reshape(-1), y.reshape(-1).to(out.dtype))
        return F.cross_entropy(out, y)
    if out.shape != y.shape:
        if out.numel() != y.numel():
            raise ValueError(
                f"MSE needs outputs and targets of the same size, got {tuple(out.shape)} "
                f"and {tuple(y.shape)}"
            )
        y = y.reshape(out.shape)
    return F.mse_loss(out, y.to(out.dtype))


def evaluate(
    model: nn.Module,
    data: Data,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    *,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> dict[str, float | int]:
    """Mean loss (and accuracy, for class labels) of ``model`` on ``data``.

    Parameters
    ----------
    model : nn.Module
        The model, already on ``device``. It runs in eval mode under
        ``torch.no_grad``; each submodule's mode is restored afterwards.
    data : DataLoader, Dataset or tuple of (Tensor, Tensor)
        ``(x, y)`` batches, ``(x, y)`` pairs, or all inputs and targets.
    loss_fn : callable, optional
        ``loss_fn(output, target)`` returning the *mean* loss of the batch.
        Default: cross-entropy for integer (or bool) labels (binary
        cross-entropy with logits for a single output column), mean squared
        error for float targets.
    batch_size : int, default 1024
        Batch size when ``data`` is a tuple or a Dataset.
    device : torch.device or str, optional
        Where the batches are sent; default the model's device.

    Returns
    -------
    dict
        ``{"loss": mean loss over examples, "n": number of examples}``, plus
        ``"accuracy"`` (in [0, 1]) when the targets are class labels.

    Raises
    ------
    ValueError
        If ``data`` holds no examples, or shapes do not fit.
    """
    loss_fn = loss_fn or _default_loss
    dev = torch.device(device) if device is not None else _model_device(model)
    loss_sum = 0.0
    correct = 0
    n = 0
    n_labels = 0
    labels = True
    with eval_mode(model), torch.no_grad():
        for x, y in _batches(data, batch_size):
            x, y = x.to(dev), y.to(dev)
            out = model(x)
            k = y.shape[0]
            loss_sum += float(loss_fn(out, y)) * k
            labels = labels and _is_label_dtype(y)
            if labels:
                pred = _predict(out, y)
                if pred.shape != y.shape:
                    raise ValueError(
                        f"predictions of shape {tuple(pred.shape)} do not match labels of shape "
                        f"{tuple(y.shape)}"
                    )
                correct += int((pred == y.long()).sum())
                n_labels += y.numel()
            n += k
    if n == 0:
        raise ValueError("data holds no examples")
    result: dict[str, float | int] = {"loss": loss_sum / n, "n": n}
    if labels:
        result["accuracy"] = correct / n_labels
    return result


def accuracy(
    model: nn.Module,
    data: Data,
    *,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> float:
    """Fraction of correct class predictions of ``model`` on ``data``.

    The prediction is the argmax over dimension 1 of the output (so dense
    outputs ``(N, C, ...)`` against labels ``(N, ...)`` work too); an output
    with a single column is read as a binary logit (class 1 when positive).

    Parameters
    ----------
    model : nn.Module
        The model, already on ``device``. It runs in eval mode under
        ``torch.no_grad``; each submodule's mode is restored afterwards.
    data : DataLoader, Dataset or tuple of (Tensor, Tensor)
        ``(x, y)`` batches, ``(x, y)`` pairs, or all inputs and labels.
    batch_size : int, default 1024
        Batch size when ``data`` is a tuple or a Dataset.
    device : torch.device or str, optional
        Where the batches are sent; default the model's device.

    Returns
    -------
    float
        Accuracy in [0, 1].

    Raises
    ------
    ValueError
        If the targets are not class labels (float targets), or ``data`` is empty.
    """
    dev = torch.device(device) if device is not None else _model_device(model)
    correct = 0
    total = 0
    with eval_mode(model), torch.no_grad():
        for x, y in _batches(data, batch_size):
            y = _labels(y, "accuracy").to(dev)
            out = model(x.to(dev))
            pred = _predict(out, y)
            if pred.shape != y.shape:
                raise ValueError(
                    f"predictions of shape {tuple(pred.shape)} do not match labels of shape "
                    f"{tuple(y.shape)}"
                )
            correct += int((pred == y).sum())
            total += y.numel()
    if total == 0:
        raise ValueError("data holds no examples")
    return correct / total


def mean_loss(
    model: nn.Module,
    data: Data,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    *,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> float:
    """Mean loss over the examples of ``data``; see :func:`evaluate`.

    Parameters
    ----------
    model : nn.Module
        The model.
    data : DataLoader, Dataset or tuple of (Tensor, Tensor)
        The examples.
    loss_fn : callable, optional
        Mean-reducing loss; default as in :func:`evaluate`.
    batch_size : int, default 1024
        Batch size when ``data`` is a tuple or a Dataset.
    device : torch.device or str, optional
        Where the batches are sent; default the model's device.

    Returns
    -------
    float
        The mean loss.
    """
    return float(evaluate(model, data, loss_fn, batch_size=batch_size, device=device)["loss"])


# ---------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------

METRICS: dict[str, Callable[..., Any]] = {
    "parameters": count_parameters,
    "flops_per_example": flops_per_example,
    "accuracy": accuracy,
    "loss": mean_loss,
}
"""The metrics by name: ``metric(name)(model, ...)``."""


def metric(name: str) -> Callable[..., Any]:
    """Look a metric up by name.

    Parameters
    ----------
    name : str
        One of the keys of :data:`METRICS`.

    Returns
    -------
    callable
        The metric function.

    Raises
    ------
    ValueError
        If ``name`` is unknown; the message lists the valid names.
    """
    try:
        return METRICS[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(METRICS))
        raise ValueError(f"unknown metric {name!r}; valid names: {valid}") from None
