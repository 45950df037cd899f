"""Teach torchgrow a layer kind and an op it does not know.

torchgrow finds what can grow by recording one forward pass and following every channel
through the modules and functions it meets. A module of your own with parameters of its own is
refused until you say how its tensors change when channels are added or removed (a *layer
kind*: ``torchgrow.ops.register``); a torch function it has no rule for blocks the channels that flow through it until you say
which dimensions of its output carry which channels (an *op rule*:
``torchgrow.graph.register_op``). A few lines each; after that, every method grows models that
use them. New units here are zero fan-in with a random fan-out (``how.Random``): GradMax's
closed form needs the new units' activations and the next layer's input on the same rows, and
the running maximum and the last-step selection between them break that.

Here a per-channel scale (like LayerScale) sits between two dense layers, and a running
maximum over the sequence (``torch.cummax``, which torchgrow has no rule for) follows it.

    python tutorials/custom_layer_and_op.py [--quick]
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
from torchgrow.graph import analyse, growable_units, register_op, set_example  # noqa: E402
from torchgrow.how import Random  # noqa: E402
from torchgrow.nn import ReLU1  # noqa: E402
from torchgrow.ops import LayerOps, Role, register  # noqa: E402
from torchgrow.ops.layers import tensor_change  # noqa: E402
from torchgrow.size import Units  # noqa: E402
from torchgrow.when import Every  # noqa: E402


class ChannelScale(nn.Module):
    """y = x * s, one learned s per channel (dim 1, as torch's norms and convolutions)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return x * self.scale.view(1, -1, *([1] * (x.dim() - 2)))


class SequenceNet(nn.Module):
    """(batch, time, features) -> class scores from the running max over time."""

    def __init__(self, n_in: int = 4, hidden: int = 8, n_out: int = 3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_in, hidden)
        self.scale = ChannelScale(hidden)
        self.act = ReLU1()
        self.fc2 = nn.Linear(hidden, n_out)

    def forward(self, x):
        h = self.fc1(x).transpose(1, 2)  # (batch, channels, time)
        h = self.act(self.scale(h))
        h = torch.cummax(h, dim=2).values  # over time: the channels stay apart
        return self.fc2(h[..., -1])


def cummax_rule(ctx):
    """torch.cummax keeps the channel dims of its input, unless it runs across them."""
    x = ctx.tensor_args[0]
    dims = ctx.dims(x)  # dim -> layout of the channels it carries
    d = ctx.arg(1, "dim") % len(ctx.shape(x))
    if d in dims:  # a running max across the channels mixes them: they cannot grow
        ctx.block("cummax over the channels", [dims.pop(d)])
    for i in range(ctx.n_outputs()):  # values and indices keep the other channel dims
        ctx.output(i, dims)


def data(n: int, seed: int = 0):
    """Which of three features peaks highest over a noisy sequence of 12 steps."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, 4, generator=g)
    return x, x[..., :3].amax(1).argmax(1)


def run(quick: bool) -> dict:
    torch.manual_seed(0)
    model = SequenceNet()
    x, y = data(64)
    set_example(model, x[:4])  # torchgrow records a real forward pass on it
    before = analyse(model).blocked["fc1"]  # why fc1 cannot grow yet
    print("before:", before)
    register_op(torch.cummax, cummax_rule)
    units = [u.name for u in growable_units(model)]
    print("with the op rule, growable:", units)
    # ChannelScale's parameter is a per-channel tensor used by hand, which torchgrow follows
    # by itself (new entries 1, the identity of a product). A layer kind states the surgery
    # explicitly, and is what a module torchgrow cannot see through needs:
    register(LayerOps(
        kind=ChannelScale, role=Role.PER_CHANNEL,
        out_width=lambda m: m.scale.numel(), in_width=lambda m: m.scale.numel(),
        grow_channels=lambda m, k: [tensor_change(m, "scale", 0, block=torch.ones(k))],
        keep_channels=lambda m, keep: [tensor_change(m, "scale", 0, keep=keep)],
    ))  # fmt: skip

    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    grower = torchgrow.Grower(model, opt, when=Every(25, times=2), how=Random(seed=0),
                              size=Units(4))  # fmt: skip
    steps = 100 if quick else 1000
    for step in range(steps):
        xb, yb = data(64, seed=step + 1)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for e in grower.step((xb, yb), F.cross_entropy):
            print(f"step {e.step}: {e.unit} {e.width_before} -> {e.width_after} "
                  f"(max|Δout| {e.max_abs_delta:.1e})")  # fmt: skip
    xt, yt = data(500, seed=10**6)
    with torch.no_grad():
        acc = float((model(xt).argmax(1) == yt).float().mean())
    print(f"test accuracy {acc:.1%}; the scale has {model.scale.scale.numel()} channels")
    return {
        "refused": before,
        "units": units,
        "widths": [model.fc1.out_features, model.scale.scale.numel(), model.fc2.in_features],
        "max_abs_delta": max(e.max_abs_delta for e in grower.events),
        "accuracy": acc,
    }


if __name__ == "__main__":
    _common.main(run, __doc__)
