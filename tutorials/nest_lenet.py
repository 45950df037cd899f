"""NeST on LeNet-300-100: grow connections and neurons from gradients, then prune by magnitude.

NeST (Dai, Yin, Jha 2018) starts from a sparse seed (10 % of the connections of a LeNet-300-100
at 0.4 of its width), grows dormant connections where the gradient says they would help and new
neurons where a "bridging gradient" says so, until a target accuracy, then prunes the smallest
weights while the accuracy holds. The result is compact: few active parameters and FLOPs.

    python tutorials/nest_lenet.py [--quick]
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
    ds = torchgrow.data.mnist5k()  # 5,000 real MNIST digits
    if quick:
        ds = ds.subset(2000, 300)
    model = torchgrow.models.lenet_300_100(width_mult=0.4)  # the seed: width ratio 0.4
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rounds = {"max_grow_rounds": 2, "grow_epochs": 3, "max_prune_rounds": 1} if quick else {}
    nest = torchgrow.methods.NeST(model, opt, ds, target_accuracy=0.97, **rounds)
    history = nest.run()  # one row per round
    for row in history:
        print({k: row[k] for k in ("phase", "val_accuracy", "parameters") if k in row})
    summary = nest.summary()  # the kept network (a pruning round that lost accuracy is undone)
    print(summary)
    return {
        "phases": [row["phase"] for row in history],
        "test_accuracy": summary["test_accuracy"],
        "active_parameters": summary["parameters"],
        "dense_parameters": sum(p.numel() for p in nest.model.parameters()),
    }


if __name__ == "__main__":
    _common.main(run, __doc__)
