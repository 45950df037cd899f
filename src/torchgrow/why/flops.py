"""Parameters and inference FLOPs, counted the same way for every method.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import torch
from torch import Tensor, nn

from ..modes import eval_mode
from ..ops.area import input_mask_of, masked_conv_macs
from ..ops.masks import mask_of, weight_parameter

__all__ = ["count_parameters", "flops_breakdown", "flops_per_example"]

ModelInput: TypeAlias = Tensor | Sequence[Tensor]

_BATCH_NORMS = (nn.modules.batchnorm._BatchNorm,)  # BatchNorm1d/2d/3d, both SyncBatchNorms
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_COUNTED = (nn.Linear, *_CONVS, *_CONV_TRANSPOSES, *_BATCH_NORMS, nn.LayerNorm)


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
