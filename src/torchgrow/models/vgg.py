"""VGG-style conv nets."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from ._layers import _check_activation, activation_module, scale_width


def vgg_small(
    cfg: Sequence[int | str] = (32, "M", 64, "M", 128, 128, "M"),
    *,
    in_channels: int = 1,
    input_size: int = 28,
    num_classes: int = 10,
    batchnorm: bool = True,
    width_mult: float = 1.0,
    activation: str = "relu",
) -> nn.Sequential:
    """A small VGG-style network: 3x3 convolutions and 2x2 max pools, then one linear layer.

    Parameters
    ----------
    cfg : sequence of int or "M"
        An int adds a 3x3 convolution (padding 1) with that many output
        channels (scaled by ``width_mult``), followed by batch norm (if
        ``batchnorm``) and the activation; ``"M"`` adds a 2x2 max pool.
    in_channels : int, default 1
        Input channels.
    input_size : int, default 28
        Height and width of the (square) inputs; fixes ``fc``'s input width.
    num_classes : int, default 10
        Output width.
    batchnorm : bool, default True
        Add :class:`torch.nn.BatchNorm2d` after each convolution (which then
        has no bias).
    width_mult : float, default 1.0
        Multiplier of the convolution widths.
    activation : str, default "relu"
        Activation (see :func:`activation_module`).

    Returns
    -------
    nn.Sequential
        Layers ``conv1``, ``bn1``, ``act1``, ``pool1``, ``conv2``, ...,
        ``flatten``, ``fc``.

    Raises
    ------
    ValueError
        If ``cfg`` has no convolution or an unknown entry, or the pools shrink
        the input to nothing.
    """
    _check_activation(activation)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels, side, n_conv, n_pool = in_channels, int(input_size), 0, 0
    for entry in cfg:
        if entry == "M":
            n_pool += 1
            layers[f"pool{n_pool}"] = nn.MaxPool2d(2)
            side //= 2
        elif isinstance(entry, int) and not isinstance(entry, bool) and entry > 0:
            n_conv += 1
            width = scale_width(entry, width_mult)
            layers[f"conv{n_conv}"] = nn.Conv2d(
                channels, width, kernel_size=3, padding=1, bias=not batchnorm
            )
            if batchnorm:
                layers[f"bn{n_conv}"] = nn.BatchNorm2d(width)
            layers[f"act{n_conv}"] = activation_module(activation)
            channels = width
        else:
            raise ValueError(f"cfg entries must be positive ints or 'M', got {entry!r}")
    if n_conv == 0:
        raise ValueError("cfg needs at least one convolution")
    if side < 1:
        raise ValueError(f"input_size={input_size} is too small for {n_pool} pools")
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(channels * side * side, num_classes)
    return nn.Sequential(layers)


#: Convolution widths of VGG-11 in units of the base width, block by block (the official
#: GradMax code's ``architecture[11]``); the first convolution of every block after the first
#: has stride 2 instead of a max pool.
VGG11_BLOCKS: tuple[tuple[int, ...], ...] = ((1,), (2,), (4, 4), (8, 8), (8, 8))


def vgg11(
    *,
    base_width: int = 64,
    width_mult: float = 1.0,
    in_channels: int = 1,
    num_classes: int = 10,
    norm: str = "none",
    activation: str = "relu1",
) -> nn.Sequential:
    """VGG-11 as GradMax's CIFAR experiments build it: strided 3x3 convolutions, no FC layers.

    Eight 3x3 convolutions (no bias) of widths ``base_width x (1, 2, 4, 4, 8, 8, 8, 8)``
    (scaled by ``width_mult``; the paper grows from 0.25 to 1), each followed by the
    activation and, with ``norm="batchnorm"``, a BatchNorm. The first convolution of every
    block after the first has stride 2 (the official code's down-sampling; no pooling). A
    last strided 3x3 convolution with ``num_classes`` filters and a flatten make the logits,
    so a 32x32 (or 28x28) input ends at 1x1.

    Parameters
    ----------
    base_width : int, default 64
        Width of the first convolution at ``width_mult=1`` (64 in the paper; a smaller one
        gives a CPU-sized net).
    width_mult : float, default 1.0
        Multiplier of every hidden width.
    in_channels, num_classes : int
        Input channels and classes.
    norm : {"none", "batchnorm"}
        Normalisation after each activation ("none" in the paper's growth configs).
    activation : str, default "relu1"
        Activation after each convolution (the official code's ``relu1``).

    Returns
    -------
    nn.Sequential
        Layers ``conv1``, ``act1`` (``bn1``), ..., ``conv8``, ``act8``, ``classifier``,
        ``flatten``. Every convolution but ``classifier`` is a growable unit.
    """
    _check_activation(activation)
    if norm not in ("none", "batchnorm"):
        raise ValueError(f"norm must be 'none' or 'batchnorm', got {norm!r}")
    if not (isinstance(base_width, int) and base_width > 0):
        raise ValueError(f"base_width must be a positive int, got {base_width!r}")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels, n = in_channels, 0
    for b, block in enumerate(VGG11_BLOCKS):
        for j, mult in enumerate(block):
            n += 1
            width = scale_width(base_width * mult, width_mult)
            stride = 2 if (b > 0 and j == 0) else 1
            layers[f"conv{n}"] = nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False)
            layers[f"act{n}"] = activation_module(activation)
            if norm == "batchnorm":
                layers[f"bn{n}"] = nn.BatchNorm2d(width)
            channels = width
    layers["classifier"] = nn.Conv2d(channels, num_classes, 3, stride=2, padding=1, bias=False)
    layers["flatten"] = nn.Flatten()
    return nn.Sequential(layers)
