"""Do GradMax's new units stay alive? LeNet-300-100 grown 0.25x -> 1x on Fashion-MNIST.

The job: LeNet-300-100 (ReLU1) from 784-75-25-10 to 784-300-100-10 by 12 GradMax
events of 25 % of the initial widths, the paper's schedule scaled to 8 epochs
(batch 128), SGD with momentum 0.9 and a cosine schedule. At the end a unit is
*alive* when its pre-activation is positive for at least one of 5,000 training
images: behind ReLU1 a unit negative on every input gets no gradient and never
recovers. Reported per grown layer: the share alive of the units it started
with and of each event's new units.

Settings compared (each for GradMax and Random growth, and the big net built
at 1x for reference):

- ``torchgrow``: SGD lr 0.05, momentum 0.9, cosine (torchgrow's image benchmarks);
- ``paper (CIFAR)``: the official CIFAR configs' optimiser, lr 0.1, Nesterov
  momentum 0.9, weight decay 2e-4, cosine to 0 (``cifar/configs``);
- ``lr 0.01``: a ten times smaller rate.

``--quick`` is a smoke run (a 1,280-image subset, 2 epochs, one setting).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import torchgrow
from benchmarks.common import markdown_table, write_results
from benchmarks.gradmax_images import PAPER
from torchgrow import data as tg_data
from torchgrow import methods, models
from torchgrow.how import Random
from torchgrow.size import Fraction
from torchgrow.train import fit
from torchgrow.when import Every
from torchgrow.where import AllAtOnce

BATCH = 128
THREADS = 1
PROBE = 5000
GROWN = ("fc1", "fc2")


@dataclass(frozen=True)
class Setting:
    name: str
    lr: float
    nesterov: bool = False
    weight_decay: float = 0.0


SETTINGS = (
    Setting("torchgrow", 0.05),
    Setting("paper (CIFAR)", 0.1, nesterov=True, weight_decay=2e-4),
    Setting("lr 0.01", 0.01),
)
METHODS = ("GradMax", "Random", "Big 1x")


def schedule(total_steps: int) -> dict[str, int]:
    every = max(1, round(total_steps * PAPER["every"] / PAPER["steps"]))
    return {"every": every, "start": every * (PAPER["start"] // PAPER["every"]), "events": 12}


def _grower(method: str, model: nn.Module, opt: torch.optim.Optimizer, sched: dict[str, int]):
    if method == "GradMax":
        return methods.GradMax(
            model,
            opt,
            batch_size=BATCH,
            update_frequency=sched["every"],
            start_iteration=sched["start"],
            n_growth_steps=sched["events"],
            loss_fn=F.cross_entropy,
        )
    if method == "Random":
        return torchgrow.Grower(
            model,
            opt,
            when=Every(sched["every"], start=sched["start"], times=sched["events"]),
            where=AllAtOnce(),
            how=Random(scale=0.5, seed=0),
            size=Fraction(0.25, of="initial"),
            loss_fn=F.cross_entropy,
        )
    return None


@torch.no_grad()
def alive(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per hidden layer: whether each unit's pre-activation is positive on some example."""
    h = x.flatten(1)
    out = {}
    for name in GROWN:
        z = getattr(model, name)(h)
        out[name] = (z > 0).any(0)
        h = z.clamp_min(0)
    return out


def run(ds: tg_data.Dataset, setting: Setting, method: str, epochs: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = models.lenet_300_100(width_mult=1.0 if method == "Big 1x" else 0.25, activation="relu1")
    opt = torch.optim.SGD(
        model.parameters(),
        lr=setting.lr,
        momentum=0.9,
        nesterov=setting.nesterov,
        weight_decay=setting.weight_decay,
    )
    total = epochs * math.ceil(ds.n_train / BATCH)
    sched = schedule(total)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    grower = _grower(method, model, opt, sched)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GradMax's rank warning on fc2 (10 outputs)
        hist = fit(
            model,
            opt,
            ds,
            epochs=epochs,
            grower=grower,
            scheduler=scheduler,
            scheduler_interval="step",
            eval_every="last",
            batch_size=BATCH,
            seed=0,
            progress=False,
        )
    state = alive(model, ds.x_train[:PROBE])
    layers = {}
    for name in GROWN:
        a = state[name]
        events = [e for e in hist.events if e.unit == name]
        first = events[0].width_before if events else len(a)
        layers[name] = {
            "width": len(a),
            "original_alive": float(a[:first].float().mean()),
            "new_alive": float(a[first:].float().mean()) if events else None,
            "per_event": [float(a[e.width_before : e.width_after].float().mean()) for e in events],
        }
    return {
        "setting": setting.name,
        "method": method,
        "test_accuracy": hist.last["val_accuracy"],
        "steps": total,
        "schedule": sched,
        "layers": layers,
        "seconds": time.perf_counter() - t0,
    }


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f}"


def tables(runs: list[dict[str, Any]]) -> dict[str, str]:
    rows = []
    for r in runs:
        row = {
            "setting": r["setting"],
            "method": r["method"],
            "test acc %": f"{100 * r['test_accuracy']:.2f}",
        }
        for name in GROWN:
            lay = r["layers"][name]
            row[f"{name}: original alive %"] = _pct(lay["original_alive"])
            row[f"{name}: new alive %"] = _pct(lay["new_alive"])
        rows.append(row)
    per_event = [
        {
            "setting": r["setting"],
            "method": r["method"],
            **{
                f"{name} per event %": " ".join(_pct(v) for v in r["layers"][name]["per_event"])
                for name in GROWN
            },
        }
        for r in runs
        if r["method"] != "Big 1x"
    ]
    grown = [r for r in runs if r["method"] == "GradMax"]
    listed = ", ".join(f"{r['setting']} {_pct(r['layers']['fc1']['new_alive'])} %" for r in grown)
    started = statistics.fmean(r["layers"]["fc1"]["original_alive"] for r in grown)
    text = (
        f"GradMax's new fc1 units alive at the end: {listed}, against {_pct(started)} % of the "
        "units the runs started with."
    )
    return {
        "summary": markdown_table(rows),
        "per_event": markdown_table(per_event),
        "reading": text,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke run")
    ap.add_argument("--threads", type=int, default=THREADS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = tg_data.fashion_mnist()
    epochs, settings = 8, SETTINGS
    if args.quick:
        ds, epochs, settings = ds.subset(1280, 500, seed=0), 2, SETTINGS[:1]
    t0 = time.perf_counter()
    runs = []
    for setting in settings:
        for method in METHODS:
            runs.append(run(ds, setting, method, epochs))
            r = runs[-1]
            print(
                f"{setting.name:14s} {method:8s} acc {r['test_accuracy']:.4f} fc1 new alive "
                f"{_pct(r['layers']['fc1']['new_alive'])} % ({r['seconds']:.0f} s)",
                flush=True,
            )
    out = tables(runs)
    md = (
        f"LeNet-300-100 (ReLU1) grown 784-75-25-10 -> 784-300-100-10 on Fashion-MNIST "
        f"({ds.n_train} training images), {epochs} epochs at batch {BATCH}, 12 events of 25 % of "
        "the initial widths on the paper's schedule scaled to the run, cosine learning rate. A "
        f"unit is alive when its pre-activation is positive on at least one of {PROBE:,} "
        "training images.\n\n"
        + out["summary"]
        + "\nPer event (share of that event's new units alive at the end):\n\n"
        + out["per_event"]
        + "\n"
        + out["reading"]
        + "\n"
    )
    payload = {
        "quick": args.quick,
        "threads": args.threads,
        "epochs": epochs,
        "settings": [asdict(s) for s in settings],
        "runs": runs,
        "wall_s": time.perf_counter() - t0,
    }
    write_results("gradmax_alive", payload, md, argv=argv, tables=out)
    return payload


if __name__ == "__main__":
    main()
