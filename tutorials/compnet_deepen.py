"""CompNet: deepen a trained network by a function-preserving layer, kept compact.

CompNet (Lu, Ma, Faltings 2018) trains a parent network to convergence, inserts a new layer
that computes the identity (the child starts exactly where the parent ended), then trains the
child with a group-lasso penalty that drives whole units of the new layer to zero, trims them
and fine-tunes: the network gets deeper and only as wide as it needs. The child is kept only
if it is at least as accurate as the parent on the validation split (``kept`` in the result
says whether it was; on these digits, in the quick version, it is not, and the parent stays).

    python tutorials/compnet_deepen.py [--quick]
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
    model = torchgrow.models.mlp([64, 32, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    epochs = (
        {"parent_epochs": 4, "sparse_epochs": 2, "finetune_epochs": 1}
        if quick
        else {"parent_epochs": 50, "sparse_epochs": 5, "finetune_epochs": 3}
    )
    cn = torchgrow.methods.CompNet(model, opt, ds, lam=0.1, batch_size=64, **epochs)
    result = cn.run()
    for d in result["deepenings"]:
        print(f"inserted {d['new_layer']} after {d['after']} (max|Δout| {d['max_abs_delta']:.1e}), "
              f"trimmed to {d['width']} units; val {d['val_accuracy']:.1%}; kept: {d['kept']}")  # fmt: skip
    print(f"parent val {result['parent']['val_accuracy']:.1%}; result: test "
          f"{result['test_accuracy']:.1%}, {result['parameters']:,} parameters")  # fmt: skip
    return result


if __name__ == "__main__":
    _common.main(run, __doc__)
