"""Fully connected nets: any-depth MLPs and LeNet-300-100 (GradMax, NeST)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from ._layers import _check_activation, activation_module, scale_width


def mlp(
    widths: Sequence[int],
    *,
    activation: str = "relu",
    bias: bool = True,
    width_mult: float = 1.0,
    batchnorm: bool = False,
    layernorm: bool = False,
    flatten: bool = True,
) -> nn.Sequential:
    """A fully connected network.

    Parameters
    ----------
    widths : sequence of int
        ``[in, h1, ..., out]``: input width, hidden widths, output width (at
        least two entries).
    activation : str, default "relu"
        Activation after every hidden layer (see :func:`activation_module`).
    bias : bool, default True
        Give the linear layers biases.
    width_mult : float, default 1.0
        Multiplier of the hidden widths (not of ``in`` or ``out``).
    batchnorm : bool, default False
        Put a :class:`torch.nn.BatchNorm1d` (``bn{i}``) between each hidden
        linear layer and its activation.
    layernorm : bool, default False
        Put a :class:`torch.nn.LayerNorm` (``ln{i}``) there instead.
    flatten : bool, default True
        Start with an :class:`torch.nn.Flatten` named ``flatten``.

    Returns
    -------
    nn.Sequential
        Layers ``flatten``, ``fc1``, [``bn1`` | ``ln1``], ``act1``, ``fc2``,
        ..., ``fc{n}`` (no activation after the last).

    Raises
    ------
    ValueError
        If fewer than two widths are given, a width is not positive, both
        norms are asked for, or the activation is unknown.
    """
    widths = [int(w) for w in widths]
    if len(widths) < 2:
        raise ValueError(f"widths needs at least [in, out], got {widths}")
    if any(w < 1 for w in widths):
        raise ValueError(f"widths must be positive, got {widths}")
    if batchnorm and layernorm:
        raise ValueError("choose batchnorm or layernorm, not both")
    _check_activation(activation)
    sizes = [widths[0]] + [scale_width(w, width_mult) for w in widths[1:-1]] + [widths[-1]]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if flatten:
        layers["flatten"] = nn.Flatten()
    n = len(sizes) - 1
    for i in range(1, n + 1):
        layers[f"fc{i}"] = nn.Linear(sizes[i - 1], sizes[i], bias=bias)
        if i < n:
            if batchnorm:
                layers[f"bn{i}"] = nn.BatchNorm1d(sizes[i])
            if layernorm:
                layers[f"ln{i}"] = nn.LayerNorm(sizes[i])
            layers[f"act{i}"] = activation_module(activation)
    return nn.Sequential(layers)


def lenet_300_100(
    *,
    in_features: int = 784,
    num_classes: int = 10,
    width_mult: float = 1.0,
    activation: str = "relu",
) -> nn.Sequential:
    """LeNet-300-100: ``in -> 300 -> 100 -> classes`` (266,610 parameters on MNIST).

    Parameters
    ----------
    in_features : int, default 784
        Input width (inputs are flattened first).
    num_classes : int, default 10
        Output width.
    width_mult : float, default 1.0
        Multiplier of the two hidden widths.
    activation : str, default "relu"
        Hidden activation (see :func:`activation_module`).

    Returns
    -------
    nn.Sequential
        Layers ``flatten``, ``fc1``, ``act1``, ``fc2``, ``act2``, ``fc3``.
    """
    return mlp([in_features, 300, 100, num_classes], activation=activation, width_mult=width_mult)
