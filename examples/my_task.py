"""Your own data and model on torchgrow's command line.

From the repository's root::

    torchgrow run --data examples.my_task:spirals --model examples.my_task:two_layer_net \\
        --method gradmax --epochs 5

``spirals`` returns the tensors ``(x_train, y_train, x_test, y_test)`` (integer labels: a
classification task); ``two_layer_net`` takes the data's ``input_shape`` and ``num_classes``
(the command line passes them because its signature names them) and returns an
``nn.Module``. Any importable ``module:function`` works the same way.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from torchgrow.nn import ReLU1


def spirals(n: int = 600, turns: float = 1.5, noise: float = 0.15, seed: int = 0):
    """Two interleaved spirals in the plane, 80 % train / 20 % test."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g) * turns * 2 * math.pi + 0.5
    label = torch.randint(0, 2, (n,), generator=g)
    angle = t + label * math.pi
    x = torch.stack([t * torch.cos(angle), t * torch.sin(angle)], 1) / (turns * 2 * math.pi)
    x = x + noise * torch.randn(n, 2, generator=g) / 4
    cut = int(0.8 * n)
    return x[:cut], label[:cut], x[cut:], label[cut:]


class TwoLayerNet(nn.Module):
    """A model written the user's way: named layers, its own forward."""

    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(n_in, hidden)
        self.act = ReLU1()  # slope 1 at 0: zero-fan-in units can train
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.hidden(x.flatten(1))))


def two_layer_net(input_shape: tuple[int, ...], num_classes: int, hidden: int = 8) -> nn.Module:
    return TwoLayerNet(math.prod(input_shape), hidden, num_classes)
