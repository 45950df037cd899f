"""Input-area masks of convolutions: NeST's partial-area convolution.

A convolution with an input-area mask multiplies its input by a fixed 0/1
tensor of shape ``(in_channels, height, width)`` before convolving. Masked
positions never contribute, so the multiply-accumulates that read them are
skipped: :func:`torchgrow.why.flops_per_example` counts only the MACs whose
weight is active and whose input position is inside the area (zero padding
counts as inside, so a full mask gives the ordinary count).

The mask is a buffer, ``conv.input_mask``, applied by a forward pre-hook;
both survive ``copy.deepcopy``, ``torchgrow.save``/``load`` and widening or
shrinking of the convolution's input channels (new channels see their whole
area).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import GrowthInputError

__all__ = ["apply_input_mask", "input_mask_of", "remove_input_mask", "masked_conv_macs"]

_BUFFER = "input_mask"
_HOOK_ID = "_torchgrow_input_mask_hook"


def _mask_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: multiply the input by the module's ``input_mask``."""
    return (args[0] * getattr(module, _BUFFER), *args[1:])


def input_mask_of(conv: nn.Module) -> Tensor | None:
    """The convolution's input-area mask ``(C, H, W)``, or ``None``."""
    return getattr(conv, _BUFFER, None) if hasattr(conv, _HOOK_ID) else None


def apply_input_mask(conv: nn.Conv2d, mask: Tensor) -> None:
    """Set (or replace) the input-area mask of an ordinary ``Conv2d``.

    Parameters
    ----------
    conv : nn.Conv2d
        An ordinary convolution (``groups == 1``).
    mask : Tensor
        ``(in_channels, H, W)`` with the input's spatial size; non-zero = kept.

    Raises
    ------
    GrowthInputError
        If ``conv`` is not an ordinary ``Conv2d`` or the mask's shape or
        values are wrong; nothing is changed then.
    """
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise GrowthInputError(
            f"partial-area masks apply to ordinary nn.Conv2d (groups=1), got {conv!r}"
        )
    if not isinstance(mask, Tensor) or mask.dim() != 3 or mask.shape[0] != conv.in_channels:
        raise GrowthInputError(
            f"input mask must be a (in_channels={conv.in_channels}, H, W) tensor, got "
            f"{tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__}"
        )
    if not torch.isfinite(mask.float()).all():
        raise GrowthInputError("input mask contains NaN or Inf")
    w = conv.weight
    binary = mask.detach().ne(0).to(dtype=w.dtype, device=w.device)
    if input_mask_of(conv) is not None:
        setattr(conv, _BUFFER, binary)
        return
    conv.register_buffer(_BUFFER, binary)
    handle = conv.register_forward_pre_hook(_mask_input)
    setattr(conv, _HOOK_ID, handle.id)


def remove_input_mask(conv: nn.Module) -> None:
    """Remove the input-area mask (the convolution sees its whole input again)."""
    if input_mask_of(conv) is None:
        raise GrowthInputError(f"{type(conv).__name__} has no input mask")
    conv._forward_pre_hooks.pop(getattr(conv, _HOOK_ID), None)
    delattr(conv, _HOOK_ID)
    delattr(conv, _BUFFER)


def masked_conv_macs(conv: nn.Conv2d, weight_active: Tensor) -> int:
    """MACs per example of ``conv`` with its input mask and a 0/1 weight-activity tensor.

    Each output position counts, per active weight, one MAC if the input
    position it reads is inside the area; zero padding counts as inside, so a
    full mask gives ``active weights x output positions``.
    """
    mask = input_mask_of(conv)
    assert mask is not None
    if isinstance(conv.padding, str):  # "valid" is (0, 0); "same" pads by dilation*(k-1)/2
        if conv.padding == "valid":
            ph = pw = 0
        else:
            ph, pw = (
                d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size, strict=True)
            )
    else:
        ph, pw = conv.padding
    padded = F.pad(mask[None].double(), (pw, pw, ph, ph), value=1.0)
    counts = F.conv2d(padded, weight_active.double(), stride=conv.stride, dilation=conv.dilation)
    return int(round(counts.sum().item()))
