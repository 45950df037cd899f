"""Models written the way people write them, for the recorded-forward analysis tests.

Each builder returns ``(model, example_input, growable)``: the producers every
unit of which must be found growable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchgrow.nn import relu1


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


def unet():
    return UNet(), torch.randn(3, 1, 8, 8), {"enc1", "enc2", "mid", "dec1"}


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


def mobilenet_v3ish():
    growable = {
        "stem",
        "blocks.0.expand",
        "blocks.0.se.fc1",
        "blocks.1.expand",
        "blocks.1.se.fc1",
        "blocks.1.project",
    }
    return MobileNetV3ish(), torch.randn(3, 1, 8, 8), growable


class FunctionalCNN(nn.Module):
    """``F.relu``, the functional ``relu1``, ``torch.flatten``: no activation modules."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.fc1 = nn.Linear(6 * 3 * 3, 10)
        self.fc2 = nn.Linear(10, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = relu1(self.conv2(h))
        h = torch.flatten(h, 1)
        return self.fc2(relu1(self.fc1(h)))


def functional_cnn():
    return FunctionalCNN(), torch.randn(3, 1, 12, 12), {"conv1", "conv2", "fc1"}


class LayerScaleMLP(nn.Module):
    """A per-channel Parameter and buffer used directly in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 10)
        self.gamma = nn.Parameter(torch.rand(10) + 0.5)
        self.register_buffer("shift", torch.randn(1, 10))
        self.fc2 = nn.Linear(10, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.fc1(x)) * self.gamma + self.shift
        return self.fc2(h)


def layer_scale():
    return LayerScaleMLP(), torch.randn(4, 6), {"fc1"}


class TokensFlatten(nn.Module):
    """A Linear on (B, T, F) features, then Flatten and a Linear: channels inside the flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 6)
        self.flatten = nn.Flatten()
        self.fc2 = nn.Linear(4 * 6, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.flatten(torch.tanh(self.fc1(x))))


def tokens_flatten():
    return TokensFlatten(), torch.randn(3, 4, 5), {"fc1"}


class CalledTwice(nn.Module):
    """One Linear applied to two inputs: its outputs are the same channels."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(5, 7)
        self.fc = nn.Linear(14, 3)

    def forward(self, x: Tensor) -> Tensor:
        a = torch.tanh(self.shared(x))
        b = torch.tanh(self.shared(x.flip(-1)))
        return self.fc(torch.cat([a, b], dim=-1))


def called_twice():
    return CalledTwice(), torch.randn(4, 5), {"shared"}


class Block(nn.Module):
    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.up = nn.Linear(d, hidden)
        self.down = nn.Linear(hidden, d)

    def forward(self, h: Tensor, *, scale: Tensor | None = None) -> Tensor:
        out = self.down(F.gelu(self.up(self.norm(h))))
        return h + (out if scale is None else out * scale)


class KeywordStack(nn.Module):
    """A transformer-like stack in an ``nn.ModuleList``, blocks called with a keyword."""

    def __init__(self, d: int = 8, hidden: int = 12, depth: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(4, d)
        self.layers = nn.ModuleList(Block(d, hidden) for _ in range(depth))
        self.out = nn.Linear(d, 2)

    def forward(self, x: Tensor, scale: Tensor | None = None) -> dict[str, Tensor]:
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h, scale=scale)
        return {"logits": self.out(h)}


def keyword_stack():
    return KeywordStack(), torch.randn(2, 5, 4), {"layers.0.up", "layers.1.up", "layers.2.up"}


class Tied(nn.Module):
    """``fc3.weight = fc2.weight``: a tie torchgrow must not silently untie."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 6)
        self.fc3 = nn.Linear(6, 6)
        self.fc3.weight = self.fc2.weight
        self.out = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.tanh(self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))))


ALL = {
    "unet": unet,
    "mobilenet_v3ish": mobilenet_v3ish,
    "functional_cnn": functional_cnn,
    "layer_scale": layer_scale,
    "tokens_flatten": tokens_flatten,
    "called_twice": called_twice,
    "keyword_stack": keyword_stack,
}
