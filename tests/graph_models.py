"""Models written the way people write them, for the recorded-forward analysis tests.

Each builder returns ``(model, example_input, growable)``: the producers every
unit of which must be found growable.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchgrow.nn import relu1

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.graph_zoo import MobileNetV3ish, UNet  # noqa: E402


def unet():
    return UNet(), torch.randn(3, 1, 8, 8), {"enc1", "enc2", "mid", "dec1"}


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


class EmbeddingLSTM(nn.Module):
    """Embedding (a producer) -> Linear -> bidirectional LSTM (a consumer) -> GRU -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 6)
        self.fc = nn.Linear(6, 5)
        self.rnn = nn.LSTM(5, 7, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(14, 3, batch_first=True)
        self.out = nn.Linear(3, 2)

    def forward(self, ids: Tensor) -> Tensor:
        h = torch.tanh(self.fc(self.emb(ids)))
        h, _ = self.rnn(h)
        h, _ = self.gru(h)
        return self.out(h[:, -1])


def embedding_lstm():
    return EmbeddingLSTM(), torch.randint(0, 20, (3, 5)), {"emb", "fc"}


class Conv1dNet(nn.Module):
    """Conv1d, a depthwise Conv1d, F.max_pool1d and a flatten into a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(2, 4, 3, padding=1)
        self.dw = nn.Conv1d(4, 4, 3, padding=1, groups=4)
        self.c2 = nn.Conv1d(4, 6, 3)
        self.fc = nn.Linear(6 * 3, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.dw(torch.tanh(self.c1(x))))
        h = F.max_pool1d(torch.tanh(self.c2(h)), 2)
        return self.fc(h.flatten(1))


def conv1d_net():
    return Conv1dNet(), torch.randn(3, 2, 8), {"c1", "c2"}


ALL = {
    "unet": unet,
    "mobilenet_v3ish": mobilenet_v3ish,
    "functional_cnn": functional_cnn,
    "layer_scale": layer_scale,
    "tokens_flatten": tokens_flatten,
    "called_twice": called_twice,
    "keyword_stack": keyword_stack,
    "embedding_lstm": embedding_lstm,
    "conv1d_net": conv1d_net,
}
