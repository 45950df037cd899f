"""Grow your own CNN with GradMax.

A small CNN written the usual way (named layers, its own ``forward``) learns the 8x8 digits
of scikit-learn. GradMax adds units to both convolutions and the hidden dense layer every 40
steps (10 with ``--quick``): zero fan-in (the network computes the same function right after each growth step),
fan-out from the SVD of the loss gradient (the new units get the largest gradient possible).
The optimizer's momentum is carried through every edit. ``conv2`` feeds the dense layer
through a flatten: GradMax's closed form covers a pair of layers of one kind, so there, as in
the official code, the new units' fan-out is random (a ``GradMaxFallbackWarning`` says so;
``GradMax(mixed="iterative")`` solves the mixed pair instead).

    python tutorials/grow_your_cnn.py [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import torchgrow  # noqa: E402
from torchgrow.how import GradMax  # noqa: E402
from torchgrow.nn import ReLU1  # noqa: E402
from torchgrow.size import Units  # noqa: E402
from torchgrow.when import Every  # noqa: E402


class SmallCNN(nn.Module):
    def __init__(self, c1: int = 4, c2: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc = nn.Linear(c2 * 4 * 4, hidden)
        self.out = nn.Linear(hidden, 10)
        self.act = ReLU1()  # GradMax needs a slope at 0: new zero-fan-in units start at 0

    def forward(self, x):
        x = self.act(self.conv1(x))
        x = F.max_pool2d(self.act(self.conv2(x)), 2)
        return self.out(self.act(self.fc(x.flatten(1))))


def accuracy(model: nn.Module, loader) -> float:
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    model.train()
    return hits / len(loader.dataset)


def run(quick: bool) -> dict:
    torch.manual_seed(0)
    ds = torchgrow.data.digits()
    if quick:
        ds = ds.subset(512, 200)
    train, test = ds.loaders(batch_size=32, seed=0)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    grower = torchgrow.Grower(
        model, opt, when=Every(10 if quick else 40, times=3), how=GradMax(seed=0), size=Units(4)
    )
    for _ in range(4 if quick else 10):
        for x, y in train:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            for e in grower.step((x, y), F.cross_entropy):
                print(f"step {e.step}: {e.unit} {e.width_before} -> {e.width_after}, "
                      f"max|Δout| {e.max_abs_delta:.1e}")  # fmt: skip
    acc = accuracy(model, test)
    print(f"test accuracy {acc:.1%}; widths conv1 {model.conv1.out_channels}, conv2 "
          f"{model.conv2.out_channels}, fc {model.fc.out_features}")  # fmt: skip
    return {
        "accuracy": acc,
        "widths": [model.conv1.out_channels, model.conv2.out_channels, model.fc.out_features],
        "max_abs_delta": max(e.max_abs_delta for e in grower.events),
        "events": len(grower.events),
    }


if __name__ == "__main__":
    _common.main(run, __doc__)
