"""Models written the way people write them, for the graph-analysis benchmark and tests.

A UNet with ``torch.cat`` skips and ``F.interpolate``, and a MobileNetV3-style
net with depthwise convs and squeeze-excite gates, all functional calls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["UNet", "SqueezeExcite", "InvertedResidual", "MobileNetV3ish"]


class UNet(nn.Module):
    """Two levels, ``torch.cat`` skip, ``F.interpolate`` up-sampling, ``F.max_pool2d`` down."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.enc1 = nn.Conv2d(1, c, 3, padding=1)
        self.enc2 = nn.Conv2d(c, 2 * c, 3, padding=1)
        self.mid = nn.Conv2d(2 * c, 2 * c, 3, padding=1)
        self.dec1 = nn.Conv2d(3 * c, c, 3, padding=1)
        self.head = nn.Conv2d(c, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        e1 = F.relu(self.enc1(x))
        e2 = F.relu(self.enc2(F.max_pool2d(e1, 2)))
        m = torch.tanh(self.mid(e2))
        up = F.interpolate(m, scale_factor=2.0, mode="nearest")
        d1 = F.relu(self.dec1(torch.cat([up, e1], dim=1)))
        return self.head(d1)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int = 2) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    """MobileNetV3's block: expand, depthwise, squeeze-excite, project (+ skip)."""

    def __init__(self, c_in: int, c_exp: int, c_out: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(c_in, c_exp, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_exp)
        self.dw = nn.Conv2d(c_exp, c_exp, 3, padding=1, groups=c_exp, bias=False)
        self.bn2 = nn.BatchNorm2d(c_exp)
        self.se = SqueezeExcite(c_exp)
        self.project = nn.Conv2d(c_exp, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.skip = c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        h = F.hardswish(self.bn1(self.expand(x)))
        h = F.hardswish(self.bn2(self.dw(h)))
        h = self.bn3(self.project(self.se(h)))
        return x + h if self.skip else h


class MobileNetV3ish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.blocks = nn.Sequential(InvertedResidual(8, 16, 8), InvertedResidual(8, 24, 12))
        self.head = nn.Linear(12, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = F.hardswish(self.bn(self.stem(x)))
        h = self.blocks(h)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))
