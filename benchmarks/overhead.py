"""Overhead of growth: is a grown model as fast as one built at its size, and how long is an edit?

1. Training-step time (forward, backward, SGD-momentum step) of a model grown by
   ``torchgrow.ops.widen`` to a target size vs the same architecture built at
   that size directly. Target: ratio <= 1.05.
2. Wall time of one ``widen`` with the optimizer carried, on LeNet-300-100 and
   on a CIFAR-style ResNet.

Timings interleave the two models round by round and report medians, so that
drift of a shared machine hits both alike; the quartiles of the per-round
ratios show the noise.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import markdown_table, write_results
from torchgrow import models
from torchgrow.graph import growable_units
from torchgrow.ops import widen


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def step_fn(model: nn.Module, opt: torch.optim.Optimizer, x, y) -> Callable[[], None]:
    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def grow_to(model: nn.Module, target: nn.Module, opt: torch.optim.Optimizer) -> None:
    """Widen every unit of ``model`` until it has ``target``'s widths (random fan-out)."""
    gen = torch.Generator().manual_seed(0)
    for small, big in zip(growable_units(model), growable_units(target), strict=True):
        k = big.width - small.width
        if k <= 0:
            continue
        mods = dict(model.named_modules())
        fan_in = {
            p: 0.01 * torch.randn(k, *mods[p].weight.shape[1:], generator=gen)
            for p in small.producers
        }
        widen(model, small.name, k, fan_in=fan_in, optimizer=opt)


def time_pair(
    a: Callable[[], None], b: Callable[[], None], rounds: int, reps: int
) -> tuple[list, list]:
    for _ in range(3):
        a(), b()
    ta, tb = [], []
    for r in range(rounds):
        order = (a, b) if r % 2 == 0 else (b, a)
        for f in order:
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            (ta if f is a else tb).append((time.perf_counter() - t0) / reps)
    return ta, tb


def step_overhead(name: str, small: nn.Module, big_builder, x, y, rounds: int, reps: int) -> dict:
    opt_small = sgd(small)
    big = big_builder()
    grow_to(small, big, opt_small)
    for (n1, p1), (n2, p2) in zip(small.named_parameters(), big.named_parameters(), strict=True):
        assert p1.shape == p2.shape, (n1, n2, p1.shape, p2.shape)
    big.load_state_dict(small.state_dict())  # same numbers, so both do identical work
    opt_big = sgd(big)
    grown_t, direct_t = time_pair(
        step_fn(small, opt_small, x, y), step_fn(big, opt_big, x, y), rounds, reps
    )
    g, d = statistics.median(grown_t), statistics.median(direct_t)
    paired = sorted(a / b for a, b in zip(grown_t, direct_t, strict=True))
    q1, _, q3 = statistics.quantiles(paired, n=4)
    return {
        "model": name,
        "batch": x.shape[0],
        "rounds": rounds,
        "steps_per_round": reps,
        "grown_step_ms": 1e3 * g,
        "direct_step_ms": 1e3 * d,
        "ratio": g / d,
        "ratio_q1_q3": f"{q1:.3f}-{q3:.3f}",
        "target": "<= 1.05",
        "meets_target": g / d <= 1.05,
    }


def widen_time(name: str, build, unit: str, k: int, x, y, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        model = build()
        opt = sgd(model)
        step_fn(model, opt, x, y)()  # the optimizer has momentum state to carry
        t0 = time.perf_counter()
        rec = widen(model, unit, k, optimizer=opt)
        times.append(time.perf_counter() - t0)
    return {
        "model": name,
        "unit": unit,
        "units_added": k,
        "modules_edited": len(rec.modules),
        "params_after": rec.params_after,
        "widen_ms_median": 1e3 * statistics.median(times),
        "widen_ms_min": 1e3 * min(times),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = ap.parse_args(argv)
    rounds, reps, repeats = (2, 1, 1) if args.quick else (30, 50, 15)
    torch.manual_seed(0)
    mnist_x, mnist_y = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))
    cifar_x, cifar_y = torch.rand(64, 3, 32, 32), torch.randint(0, 10, (64,))

    steps = [
        step_overhead(
            "LeNet-300-100 (grown from 0.5x)",
            models.lenet_300_100(width_mult=0.5),
            models.lenet_300_100,
            mnist_x,
            mnist_y,
            rounds,
            reps,
        ),
        step_overhead(
            "CifarResNet 1-1-1 (grown 8/16/32 -> 16/32/64)",
            models.cifar_resnet((1, 1, 1), (8, 16, 32)),
            lambda: models.cifar_resnet((1, 1, 1), (16, 32, 64)),
            cifar_x,
            cifar_y,
            max(4, rounds // 2),
            max(2, reps // 10),
        ),
    ]
    edits = [
        widen_time("LeNet-300-100", models.lenet_300_100, "fc1", 30, mnist_x, mnist_y, repeats),
        widen_time(
            "CifarResNet 3-3-3 (16/32/64)",
            lambda: models.cifar_resnet((3, 3, 3), (16, 32, 64)),
            "stage2.0.conv1",
            8,
            cifar_x,
            cifar_y,
            repeats,
        ),
        widen_time(
            "CifarResNet 3-3-3 (16/32/64), residual stream",
            lambda: models.cifar_resnet((3, 3, 3), (16, 32, 64)),
            "stage2.0.conv2",
            8,
            cifar_x,
            cifar_y,
            repeats,
        ),
    ]
    md = (
        "## Training step: grown vs built at size\n\n"
        + markdown_table(steps)
        + "\n## One `widen` with SGD-momentum state carried\n\n"
        + markdown_table(edits)
    )
    payload = {"quick": args.quick, "step_overhead": steps, "widen_time": edits}
    tables = {"training_step": markdown_table(steps), "widen": markdown_table(edits)}
    write_results("overhead", payload, md, argv=argv, tables=tables)
    return payload


if __name__ == "__main__":
    main()
