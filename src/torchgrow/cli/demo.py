"""``torchgrow demo``: a real growth run on MNIST-1D in about a minute."""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import data as tg_data
from .. import how as tg_how
from .. import models as tg_models
from ..grower import Grower
from ..report import comparison_table, events_table, make_console
from ..size import Units
from ..train import History, fit
from ..when import Every
from ..where import AllAtOnce

__all__ = ["DemoConfig", "DEMO", "DEMO_QUICK"]


# --------------------------------------------------------------------------- demo
@dataclass(frozen=True)
class DemoConfig:
    """Settings of ``torchgrow demo``."""

    n_samples: int | None = None  # mnist1d default: 5,000 (4,000 train / 1,000 test)
    hidden: int = 8
    depth: int = 2
    epochs: int = 40
    batch_size: int = 64
    lr: float = 0.003
    grow_every: int = 200
    grow_times: int = 4
    units: int = 16


DEMO = DemoConfig()
DEMO_QUICK = DemoConfig(
    n_samples=2000, epochs=8, batch_size=32, grow_every=50, grow_times=3, units=8
)


def _demo_run(
    name: str,
    widths: list[int],
    ds: tg_data.Dataset,
    cfg: DemoConfig,
    *,
    grow: bool,
    seed: int,
    out: Path | None,
    progress: bool | None,
) -> History:
    torch.manual_seed(seed)
    model = tg_models.mlp(widths, activation="relu1")
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    grower = None
    if grow:
        grower = Grower(
            model,
            optimizer,
            when=Every(cfg.grow_every, start=cfg.grow_every, times=cfg.grow_times),
            where=AllAtOnce(),
            how=tg_how.Random(seed=seed),
            size=Units(cfg.units),
        )
    return fit(
        model,
        optimizer,
        ds,
        epochs=cfg.epochs,
        grower=grower,
        batch_size=cfg.batch_size,
        seed=seed,
        log_dir=None if out is None else out / name,
        progress=progress,
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    cfg = DEMO_QUICK if args.quick else DEMO
    if args.epochs is not None:
        cfg = DemoConfig(**{**cfg.__dict__, "epochs": args.epochs})
    console = make_console()
    arrow = "→" if (console.encoding or "").lower().startswith("utf") else "->"
    start = time.perf_counter()
    threads = torch.get_num_threads()
    # These networks are tiny: one thread is fastest, and several threads slow to a crawl
    # when the cores are shared with other processes.
    torch.set_num_threads(1)
    try:
        _demo_body(args, cfg, console, arrow)
    finally:
        torch.set_num_threads(threads)
    console.print(f"total time {time.perf_counter() - start:.1f} s")
    return 0


def _demo_body(args: argparse.Namespace, cfg: DemoConfig, console: Any, arrow: str) -> None:
    ds = tg_data.mnist1d(seed=args.seed, n_samples=cfg.n_samples)
    classes = ds.num_classes or 10
    small = [ds.input_shape[0], *[cfg.hidden] * cfg.depth, classes]
    final_hidden = cfg.hidden + cfg.units * cfg.grow_times
    large = [ds.input_shape[0], *[final_hidden] * cfg.depth, classes]
    console.rule("torchgrow demo: growing an MLP on MNIST-1D")
    console.print(
        f"data: mnist1d ({ds.n_train} train / {ds.n_test} test, generated locally); "
        f"Adam lr {cfg.lr:g}, batch {cfg.batch_size}, {cfg.epochs} epochs"
    )
    console.print(
        f"grown: {'-'.join(map(str, small))} ReLU1 MLP; every {cfg.grow_every} steps "
        f"({cfg.grow_times} times) each hidden layer gets {cfg.units} random zero-fan-in units "
        f"{arrow} {'-'.join(map(str, large))}"
    )
    console.print(
        f"baselines: {'-'.join(map(str, small))} and {'-'.join(map(str, large))} trained "
        "statically for the same number of steps"
    )
    runs: dict[str, History] = {}
    plan = [
        ("grown", small, True),
        ("static small", small, False),
        ("static large", large, False),
    ]
    for name, widths, grow in plan:
        runs[name] = _demo_run(
            name.replace(" ", "_"),
            widths,
            ds,
            cfg,
            grow=grow,
            seed=args.seed,
            out=args.out,
            progress=args.progress,
        )
    grown = runs["grown"]
    console.print(
        events_table(grown.events, title="Growth events of the grown run", console=console)
    )
    console.print(comparison_table(runs, title="Test results", console=console))
    acc = {k: (h.last or {}).get("val_accuracy") for k, h in runs.items()}
    if acc["grown"] is not None and acc["static small"] is not None:
        diff = 100 * (acc["grown"] - acc["static small"])
        verdict = "better than" if diff > 0 else "not better than"
        console.print(
            f"grown network: {100 * acc['grown']:.1f}% test accuracy, {verdict} the static small "
            f"network ({100 * acc['static small']:.1f}%, {diff:+.1f} points)"
        )
        large_run = runs["static large"].last
        if acc["static large"] is not None and large_run is not None:
            ratio = large_run["training_flops"] / max(grown.last["training_flops"], 1)
            console.print(
                f"the final-size network trained from the start reaches "
                f"{100 * acc['static large']:.1f}%, using {ratio:.2f}x the training FLOPs "
                "of the grown run"
            )
    deltas = [e.max_abs_delta for e in grown.events if math.isfinite(e.max_abs_delta)]
    if deltas:
        console.print(f"largest output change caused by a growth step: {max(deltas):.2e}")
    if args.out is not None:
        console.print(f"logs written to {args.out}")
