"""AutoGrow on a ResNet: add residual blocks stage by stage until accuracy stops improving.

AutoGrow (Wen et al. 2020) starts from one block per stage and, every ``interval`` epochs,
adds a block to each stage that is still growing; a stage stops when its accuracy has not
improved by ``tau`` over a window of growth steps. New blocks start at zero output, so the
network computes the same function right after each growth step. Here a CIFAR-style ResNet
with three stages learns the 8x8 digits.

    python tutorials/autogrow_resnet.py [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import torchgrow  # noqa: E402


def run(quick: bool) -> dict:
    torch.manual_seed(0)
    ds = torchgrow.data.digits()
    if quick:
        ds = ds.subset(600, 200)
    model = torchgrow.models.cifar_resnet((1, 1, 1), (8, 16, 32), in_channels=1)  # seed 1-1-1
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    settings = (
        {"interval": 1, "window": 2, "max_blocks": 3, "tail_epochs": 1}
        if quick
        else {"interval": 2, "window": 3, "max_blocks": 6, "tail_epochs": 10}
    )
    ag = torchgrow.methods.AutoGrow(model, opt, ds, batch_size=64, **settings)
    result = ag.run()
    print(result)
    return {k: result[k] for k in ("arch", "test_accuracy", "parameters", "growth_steps")}


if __name__ == "__main__":
    _common.main(run, __doc__)
