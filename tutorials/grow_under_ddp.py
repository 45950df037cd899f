"""Grow under DDP: two processes, one model, the same growth on every rank.

``distributed.GrowingDDP`` is a drop-in for ``DistributedDataParallel`` that follows the model
as it grows. Each rank trains on its slice of the same global batch; when the trigger fires,
the growth statistics are gathered from the whole global batch, every rank makes the same
decision and applies the same edit, and each carries its optimizer state. This script starts
two CPU processes (gloo) itself; on a cluster, start it with ``torchrun`` instead.

    python tutorials/grow_under_ddp.py [--quick]
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import torchgrow  # noqa: E402
from torchgrow import distributed, models  # noqa: E402
from torchgrow.how import GradMax  # noqa: E402
from torchgrow.size import Units  # noqa: E402
from torchgrow.when import Every  # noqa: E402

WORLD = 2


def worker(rank: int, port: int, quick: bool, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)  # fmt: skip
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the same initial model on every rank
    ds = torchgrow.data.digits()
    if quick:
        ds = ds.subset(512, 200)
    model = models.mlp([64, 16, 16, 10], activation="relu1")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ddp = distributed.GrowingDDP(model)
    grower = torchgrow.Grower(model, opt, when=Every(10, times=3), how=GradMax(seed=0),
                              size=Units(4))  # fmt: skip
    train, test = ds.loaders(batch_size=64, seed=0)  # the same global batches on every rank
    for _ in range(6 if quick else 20):
        for x, y in train:
            xs, ys = distributed.shard((x, y))  # this rank's slice
            loss = distributed.weighted_loss(F.cross_entropy(ddp(xs), ys), len(xs), len(x))
            opt.zero_grad()
            loss.backward()
            opt.step()
            grower.step((xs, ys))  # gathers the slices, grows alike on every rank
    with torch.no_grad():
        acc = sum(int((model(x).argmax(1) == y).sum()) for x, y in test) / ds.n_test
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    Path(out, f"rank{rank}.json").write_text(json.dumps({
        "widths": [model.fc1.out_features, model.fc2.out_features],
        "events": len(grower.events), "checksum": checksum, "accuracy": acc,
    }))  # fmt: skip
    distributed.shutdown()  # frees the DDP wrappers, then destroys the group


def run(quick: bool) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(worker, args=(port, quick, out), nprocs=WORLD, join=True)
        ranks = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(WORLD)]
    for r, got in enumerate(ranks):
        print(f"rank {r}: widths {got['widths']}, {got['events']} events, test accuracy "
              f"{got['accuracy']:.1%}, parameter checksum {got['checksum']:.6f}")  # fmt: skip
    return {"ranks": ranks}


if __name__ == "__main__":
    _common.main(run, __doc__)
