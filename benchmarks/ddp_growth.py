"""A GradMax growth step under DistributedDataParallel vs one process, on LeNet-300-100.

The model is LeNet-300-100 (784-300-100-10, ReLU1 so that zero-fan-in units
can train) on the 5k MNIST subset. Each growth step is a GradMax step that
adds 30 units to the first hidden layer and 10 to the second (10 % of their
initial widths) from a global growth batch of ``--batch`` examples; five
steps are timed, each on a fresh model. Under DDP (``torchrun
--nproc-per-node 2``, gloo, one thread per rank) each rank holds half of the
growth batch; the step then also gathers the batch, checks that the ranks
agree and broadcasts rank 0's values. For scale, the time of one training
step (forward, backward, SGD) on the same global batch is measured too.

Run ``python -m benchmarks.ddp_growth``: it times the single process, then
relaunches itself under torchrun for the 2-rank numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from benchmarks.common import markdown_table, write_results
from torchgrow import Grower, distributed, models
from torchgrow import data as tg_data
from torchgrow.how import GradMax
from torchgrow.size import Fraction
from torchgrow.when import Manual

REPEATS = 5
WARMUP = 1
QUICK_REPEATS = 1


def _time_growth(batch_size: int, repeats: int = REPEATS) -> dict[str, Any]:
    ds = tg_data.mnist5k()
    x, y = ds.x_train[:batch_size], ds.y_train[:batch_size]
    local = distributed.shard((x, y))
    grow_times, step_times = [], []
    for rep in range(WARMUP + repeats):
        torch.manual_seed(rep)
        model = models.lenet_300_100(activation="relu1")
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        grower = Grower(
            model, opt, when=Manual(), how=GradMax(seed=rep), size=Fraction(0.1), measure=False
        )
        forward = distributed.GrowingDDP(model) if distributed.is_active() else model
        # one training step first: momentum state exists and DDP is built, as mid-training
        for timed in (False, True):
            if distributed.is_active():
                dist.barrier()
            t0 = time.perf_counter()
            loss = F.cross_entropy(forward(local[0]), local[1])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if timed and rep >= WARMUP:
                step_times.append(time.perf_counter() - t0)
        if distributed.is_active():
            dist.barrier()
        t0 = time.perf_counter()
        events = grower.grow(local)
        if distributed.is_active():
            dist.barrier()
        if rep >= WARMUP:
            grow_times.append(time.perf_counter() - t0)
        assert sum(e.units_added for e in events) == 40
    return {
        "processes": distributed.world_size(),
        "growth_batch": batch_size,
        "growth_step_s": statistics.median(grow_times),
        "growth_step_all_s": grow_times,
        "train_step_s": statistics.median(step_times),
    }


def _rank_main(batch_size: int, out: Path, repeats: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        res = _time_growth(batch_size, repeats)
        if dist.get_rank() == 0:
            out.write_text(json.dumps(res))
    finally:
        distributed.shutdown()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=512, help="global growth batch")
    ap.add_argument("--quick", action="store_true", help="smoke run (results/quick/)")
    ap.add_argument("--rank-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    repeats = QUICK_REPEATS if args.quick else REPEATS
    if "LOCAL_RANK" in os.environ:  # a torchrun worker
        _rank_main(args.batch, args.rank_out, repeats)
        return {}
    torch.set_num_threads(1)
    single = _time_growth(args.batch, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        rank_out = Path(tmp) / "ddp.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += ["--nproc-per-node", "2", "-m", "benchmarks.ddp_growth"]
        cmd += ["--batch", str(args.batch), "--rank-out", str(rank_out)]
        cmd += ["--quick"] if args.quick else []
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        ddp = json.loads(rank_out.read_text())
    rows = [
        {
            "set-up": "1 process",
            "growth step (ms)": 1e3 * single["growth_step_s"],
            "training step (ms)": 1e3 * single["train_step_s"],
        },
        {
            "set-up": "DDP, 2 ranks (gloo)",
            "growth step (ms)": 1e3 * ddp["growth_step_s"],
            "training step (ms)": 1e3 * ddp["train_step_s"],
        },
    ]
    payload = {
        "quick": args.quick,
        "model": "LeNet-300-100 (ReLU1), GradMax +30/+10 units per step, mnist5k",
        "single": single,
        "ddp": ddp,
        "rows": rows,
        "repeats": repeats,
        "threads": 1,
    }
    md = (
        "One CPU thread per process. A GradMax growth step on LeNet-300-100 (+30 / +10 units) "
        "from a global "
        f"growth batch of {args.batch} examples, and one training step on the same batch; "
        f"medians of {repeats} after {WARMUP} warm-up.\n\n" + markdown_table(rows) + "\n"
        "Under DDP each rank holds half the batch; the growth step gathers it, computes the "
        "GradMax statistics on the whole batch on every rank, checks that the ranks agree and "
        "broadcasts rank 0's values.\n"
    )
    write_results("ddp_growth", payload, md, argv=argv, tables={"rows": markdown_table(rows)})
    return payload


if __name__ == "__main__":
    main()
