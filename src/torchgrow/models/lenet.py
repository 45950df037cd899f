"""Caffe's LeNet-5, as NeST uses it."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ._layers import _check_activation, activation_module, scale_width


def lenet5(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    width_mult: float = 1.0,
    activation: str = "relu",
    input_size: int = 28,
) -> nn.Sequential:
    """Caffe's LeNet-5, as NeST grows it (431,080 parameters on MNIST).

    ``conv 5x5 (20) -> act -> maxpool 2 -> conv 5x5 (50) -> act -> maxpool 2
    -> fc 800->500 -> act -> fc 500->classes``, no padding.

    Parameters
    ----------
    in_channels : int, default 1
        Input channels.
    num_classes : int, default 10
        Output width.
    width_mult : float, default 1.0
        Multiplier of the hidden widths (20, 50 and 500).
    activation : str, default "relu"
        Activation (see :func:`activation_module`).
    input_size : int, default 28
        Height and width of the (square) input images; fixes ``fc1``'s input
        width (``50 * 4 * 4 == 800`` at 28).

    Returns
    -------
    nn.Sequential
        Layers ``conv1``, ``act1``, ``pool1``, ``conv2``, ``act2``, ``pool2``,
        ``flatten``, ``fc1``, ``act3``, ``fc2``.

    Raises
    ------
    ValueError
        If ``input_size`` is too small for the two conv/pool stages.
    """
    _check_activation(activation)
    c1, c2, h = (scale_width(w, width_mult) for w in (20, 50, 500))
    side = ((input_size - 4) // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"input_size={input_size} is too small for LeNet-5 (needs >= 16)")
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(in_channels, c1, kernel_size=5)),
                ("act1", activation_module(activation)),
                ("pool1", nn.MaxPool2d(2)),
                ("conv2", nn.Conv2d(c1, c2, kernel_size=5)),
                ("act2", activation_module(activation)),
                ("pool2", nn.MaxPool2d(2)),
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(c2 * side * side, h)),
                ("act3", activation_module(activation)),
                ("fc2", nn.Linear(h, num_classes)),
            ]
        )
    )
