"""A growth event under FSDP2 (2 ranks) against one process and against a checkpoint restart.

The model is torchgrow's ``gpt`` (d_model 512, 4 blocks, FFN 2048, 103 symbols,
context 64: 12.9 M parameters), trained with Adam, ``fully_shard`` per block and
at the root on 2 gloo ranks, one CPU thread each. The event grows the FFN of
block 1 by 256 units (``torchgrow.fsdp.grow_ffn``: gather that block's group,
edit, shard again, check on every rank). It is compared, interleaved and in
the same processes, with

- **one process**: the same edit (``torchgrow.ops.grow_ffn``, verified on the
  same example) on an unsharded copy of the model, in each rank's process;
- **DCP restart**: what growing costs when the model must be rebuilt, as the
  published language-model growth codes do: ``torch.distributed.checkpoint``
  save of the model and optimizer, build of the model at its grown size,
  ``fully_shard``, a fresh Adam, and a DCP load of the same (grown) model.
  This is a floor: mapping the old weights into the new shapes and restarting
  the processes are not counted.

Peak memory is each rank's resident-set high-water mark during the event
above its resident set before (``/proc/self/status``, reset through
``/proc/self/clear_refs``), after returning freed memory to the system
(glibc's ``malloc_trim``; otherwise the event reuses pages an earlier step
freed and the mark misses them), set against the full size of what the event
touches (block 1's parameters and Adam moments) and of the whole model.

Run ``python -m benchmarks.fsdp_growth``: it relaunches itself under
``torchrun --nproc-per-node 2``.
"""

from __future__ import annotations

import argparse
import ctypes
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

CONFIG = {"vocab_size": 103, "context": 64, "d_model": 512, "n_layer": 4, "n_head": 8, "d_ff": 2048}
QUICK_CONFIG = {
    "vocab_size": 17,
    "context": 16,
    "d_model": 32,
    "n_layer": 2,
    "n_head": 2,
    "d_ff": 64,
}
K, QUICK_K, BLOCK = 256, 8, 1
REPEATS, QUICK_REPEATS = 5, 1
BATCH = 4  # sequences per rank


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024
    return out


def _measured(fn) -> tuple[float, float, Any]:
    """(seconds, peak resident bytes above the start, result) of ``fn()``, the max over ranks."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed pages back to the system
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark to the current resident set
        start = _status()["VmRSS"]
    except OSError:
        start = None
    dist.barrier()
    t0 = time.perf_counter()
    res = fn()
    seconds = time.perf_counter() - t0
    peak = float("nan") if start is None else float(_status()["VmHWM"] - start)
    both = torch.tensor([seconds, peak], dtype=torch.float64)
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    return float(both[0]), float(both[1]), res


def _model(config: dict[str, int], sharded: bool, d_ff: int | None = None):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from torchgrow import models

    torch.manual_seed(0)
    model = models.gpt(**{**config, **({"d_ff": d_ff} if d_ff else {})})
    if sharded:
        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
    return model


def _batch(config: dict[str, int], step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    x = torch.randint(0, config["vocab_size"], (BATCH, config["context"] + 1), generator=g)
    return x[:, :-1], x[:, 1:]


def _train_step(model, opt, config, step: int) -> None:
    x, y = _batch(config, step)
    opt.zero_grad()
    F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
    opt.step()


def _trained(config: dict[str, int], sharded: bool):
    from torchgrow.graph import set_example

    model = _model(config, sharded)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _train_step(model, opt, config, 0)  # Adam has its moments
    set_example(model, _batch(config, 1)[0][:2])
    return model, opt


def _fsdp_event(config: dict[str, int], k: int) -> tuple[float, float]:
    from torchgrow import fsdp

    model, opt = _trained(config, True)
    g = torch.Generator().manual_seed(3)
    t, peak, rec = _measured(
        lambda: fsdp.grow_ffn(model, k, block=BLOCK, generator=g, optimizer=opt)
    )
    assert model.blocks[BLOCK].mlp.up.out_features == config["d_ff"] + k
    _train_step(model, opt, config, 2)  # it trains on
    return t, peak


def _single_event(config: dict[str, int], k: int) -> tuple[float, float]:
    from torchgrow import ops
    from torchgrow.graph import example_of

    model, opt = _trained(config, False)  # the full model in this process, no FSDP
    g = torch.Generator().manual_seed(3)
    x = example_of(model)[0][0]
    t, peak, _ = _measured(
        lambda: ops.grow_ffn(model, k, block=BLOCK, generator=g, optimizer=opt, example=x)
    )
    return t, peak


def _restart(config: dict[str, int], k: int, folder: Path) -> tuple[float, float]:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    grown = config["d_ff"] + k
    model = _model(config, True, d_ff=grown)  # "the same model": the grown one, saved and rebuilt
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _train_step(model, opt, config, 0)

    def run() -> None:
        msd, osd = get_state_dict(model, [opt])
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(folder))
        fresh = _model(config, True, d_ff=grown)
        fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
        msd2, osd2 = get_state_dict(fresh, [fresh_opt])
        state = {"model": msd2, "optim": osd2}
        dcp.load(state, checkpoint_id=str(folder))
        set_state_dict(fresh, [fresh_opt], model_state_dict=state["model"],
                       optim_state_dict=state["optim"])  # fmt: skip

    return _measured(run)[:2]


def _sizes(config: dict[str, int], k: int) -> dict[str, float]:
    model = _model(config, False)
    block = sum(p.numel() for p in model.blocks[BLOCK].parameters())
    total = sum(p.numel() for p in model.parameters())
    return {
        "block_params": block,
        "model_params": total,
        # parameters + Adam's two moments, float32
        "block_state_bytes": 3 * 4 * block,
        "model_state_bytes": 3 * 4 * total,
    }


def _rank_main(quick: bool, out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    config, k = (QUICK_CONFIG, QUICK_K) if quick else (CONFIG, K)
    repeats = QUICK_REPEATS if quick else REPEATS
    times: dict[str, list[float]] = {"fsdp": [], "single": [], "restart": []}
    peaks: dict[str, list[float]] = {"fsdp": [], "single": [], "restart": []}
    steps, step_peaks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ckpt"
        if dist.get_rank() == 0:
            folder.mkdir()
        names = [str(folder)]
        dist.broadcast_object_list(names)  # rank 0's folder, for every rank
        folder = Path(names[0])
        _fsdp_event(config, k)  # warm-up
        for r in range(repeats):
            order = ["fsdp", "single", "restart"]
            order = order[r % 3 :] + order[: r % 3]  # interleaved, rotating
            for name in order:
                if name == "fsdp":
                    t, p = _fsdp_event(config, k)
                elif name == "single":
                    t, p = _single_event(config, k)
                else:
                    t, p = _restart(config, k, folder)
                    dist.barrier()
                times[name].append(t)
                peaks[name].append(p)
            model, opt = _trained(config, True)
            t, p, _ = _measured(lambda m=model, o=opt: _train_step(m, o, config, 5))
            steps.append(t)
            step_peaks.append(p)
        dist.barrier()  # rank 0's folder goes at the end of this block
    if dist.get_rank() == 0:
        res = {
            "config": config, "k": k, "block": BLOCK, "repeats": repeats,
            "times_s": times, "peaks_bytes": peaks, "train_step_s": steps, "train_step_peak_bytes": step_peaks,
            "sizes": _sizes(config, k), "world_size": dist.get_world_size(),
        }  # fmt: skip
        out.write_text(json.dumps(res))
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke run (results/quick/)")
    ap.add_argument("--rank-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if "LOCAL_RANK" in os.environ:  # a torchrun worker
        _rank_main(args.quick, args.rank_out)
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        rank_out = Path(tmp) / "fsdp.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += [
            "--nproc-per-node",
            "2",
            "-m",
            "benchmarks.fsdp_growth",
            "--rank-out",
            str(rank_out),
        ]
        cmd += ["--quick"] if args.quick else []
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
        res = json.loads(rank_out.read_text())
    med = {n: statistics.median(v) for n, v in res["times_s"].items()}
    peak = {n: statistics.median(v) for n, v in res["peaks_bytes"].items()}
    sizes, mb = res["sizes"], 2.0**20
    step = statistics.median(res["train_step_s"])
    step_peak = statistics.median(res["train_step_peak_bytes"])
    labels = {
        "fsdp": "FSDP2, 2 ranks: torchgrow.fsdp.grow_ffn in place",
        "single": "1 process, no FSDP: torchgrow.ops.grow_ffn",
        "restart": "FSDP2, 2 ranks: DCP save + rebuild + load (floor)",
    }
    rows = [
        {
            "growth event": labels[n],
            "time (ms)": 1e3 * med[n],
            "vs in place": med[n] / med["fsdp"],
            "training steps": med[n] / step,
            "peak extra memory (MB)": peak[n] / mb,
        }
        for n in ("fsdp", "single", "restart")
    ]
    ratio = {
        "fsdp_vs_single": med["fsdp"] / med["single"],
        "restart_vs_fsdp": med["restart"] / med["fsdp"],
        "fsdp_peak_vs_block_state": peak["fsdp"] / sizes["block_state_bytes"],
        "fsdp_peak_vs_model_state": peak["fsdp"] / sizes["model_state_bytes"],
        "fsdp_peak_vs_train_step_peak": peak["fsdp"] / step_peak,
    }
    payload = {"quick": args.quick, **res, "medians_s": med, "peak_median_bytes": peak,
               "train_step_median_s": step, "rows": rows, "ratios": ratio, "threads": 1}  # fmt: skip
    c = res["config"]
    md = (
        f"torchgrow's `gpt` (d_model {c['d_model']}, {c['n_layer']} blocks, FFN {c['d_ff']}, "
        f"{sizes['model_params'] / 1e6:.1f} M parameters), Adam, `fully_shard` per block and at "
        f"the root on 2 gloo ranks (one CPU thread each). The event adds {res['k']} FFN units to "
        f"block {res['block']}; medians of {res['repeats']} interleaved repeats (the max over "
        "ranks of each).\n\n" + markdown_table(rows) + "\n"
        f"Block {res['block']}'s parameters and Adam moments: "
        f"{sizes['block_state_bytes'] / mb:.1f} MB in full; the whole model's: "
        f"{sizes['model_state_bytes'] / mb:.1f} MB. The in-place event's peak is "
        f"{ratio['fsdp_peak_vs_block_state']:.2f}x the full size of the block it grows "
        f"({ratio['fsdp_peak_vs_model_state']:.2f}x the whole model's); it includes the two "
        "forward passes on the example input that check the edit (each all-gathers every "
        f"block in turn). A training step on {BATCH} sequences per rank takes "
        f"{1e3 * step:.0f} ms and peaks at {step_peak / mb:.1f} MB above its start, so the "
        f"event's peak is {ratio['fsdp_peak_vs_train_step_peak']:.2f}x a training step's.\n"
    )
    write_results("fsdp_growth", payload, md, argv=argv, tables={"rows": markdown_table(rows)})
    return payload


if __name__ == "__main__":
    main()
