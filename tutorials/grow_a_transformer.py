"""Grow a transformer: MSG on a character-level GPT.

A one-layer GPT (d_model 64, one head, FFN 64) learns CPython's documentation text, one
character at a time. MSG (Yao et al. 2024) grows it on a schedule, each dimension at its share
of the steps: the FFN to 256, the depth to 4 layers, the heads to 2. Every new part enters
behind a mask that ramps from 0 to 1, so the model computes the same function right after each
event, and the optimizer keeps its state.

    python tutorials/grow_a_transformer.py [--quick]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from torchgrow import data, methods, models  # noqa: E402


def run(quick: bool) -> dict:
    torch.manual_seed(0)
    steps = 100 if quick else 1000
    text = data.text_chars(context=64)
    model = models.gpt(text.vocab_size, n_layer=1, d_model=64, n_head=1, head_dim=32, d_ff=64)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95))
    batches = text.batches(8, seed=0)
    msg = methods.MSG(model, opt, steps, next(batches)[0], d_ff=256, n_head=2, n_layer=4)
    losses = []
    for step in range(steps):
        msg.update(step)  # grows when due, sets the learning rate
        x, y = next(batches)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        msg.optimizer.zero_grad()
        loss.backward()
        msg.optimizer.step()
        losses.append(loss.item())
    for e in msg.log:
        print(f"step {e['step']}: {e['event']} (max|Δout| {e['max_abs_dout']:.1e})")
    late = sum(losses[-10:]) / 10
    print(f"training loss {losses[0]:.2f} -> {late:.2f} ({late / math.log(2):.2f} bits/char); "
          f"{len(model.blocks)} layers")  # fmt: skip
    return {
        "events": [e["event"] for e in msg.log],
        "max_abs_dout": max(e["max_abs_dout"] for e in msg.log),
        "first_loss": losses[0],
        "last_loss": late,
        "layers": len(model.blocks),
    }


if __name__ == "__main__":
    _common.main(run, __doc__)
