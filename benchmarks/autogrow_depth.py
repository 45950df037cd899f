"""AutoGrow: the depth it finds vs a depth sweep of the same network trained from scratch.

Two set-ups, one seed each:

- ``fashion_mnist_resnet``: a slim CIFAR-style ResNet (basic blocks, channels
  8/16/32, seed 1-1-1, at most 8 blocks per stage) on a 10k-image training
  subset of Fashion-MNIST and the full 10k test set. The images are average-
  pooled to 14x14 so the whole study fits in minutes on 2 CPU cores.
- ``mnist1d_mlp``: a residual MLP (widths 32/32/32, seed 1-1-1, at most 8 blocks
  per stage) on MNIST-1D (4,000/1,000).

AutoGrow variants: p-AutoGrow with K=1 and K=3, and c-AutoGrow (K=6 with the
per-interval staircase), each with GauInit and ZeroInit. Stopping policy:
running maximum of validation accuracy, τ = 0.05 points, J = 5 epochs; growth
budget 60 epochs; tail 10 epochs (x0.1 at 50 % and 75 %). SGD, momentum 0.9,
weight decay 5e-4, batch 128, constant lr during growth. Validation is a 10 %
split of the training data; test accuracy is only reported.

Baselines: the same network at fixed depths 1-1-1, 2-2-2, 4-4-4 and at each
depth AutoGrow found, trained from scratch for 20 epochs (x0.1 at 50 % and
75 %). Reported: depth per stage, test accuracy, parameters, FLOPs per
example, training FLOPs (3 x forward per trained example, see
``torchgrow.why.TrainingCompute``) and wall time.

Run ``python -m benchmarks.autogrow_depth``; ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import markdown_table, results_dir, write_results
from torchgrow import data as tg_data
from torchgrow import methods, models
from torchgrow.how import GauInit, ZeroInit
from torchgrow.train import fit
from torchgrow.why import TrainingCompute, accuracy, count_parameters, flops_per_example

THREADS = 2


@dataclass(frozen=True)
class Setup:
    """One data set and model family."""

    name: str
    lr: float = 0.1
    weight_decay: float = 5e-4
    batch: int = 128
    window: int = 5  # J
    tau: float = 0.05
    max_blocks: int = 8
    max_growth_epochs: int = 60
    tail_epochs: int = 10
    scratch_epochs: int = 20
    sweep: tuple[tuple[int, ...], ...] = ((1, 1, 1), (2, 2, 2), (4, 4, 4))
    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0


SETUPS = {
    "fashion_mnist_resnet": Setup("fashion_mnist_resnet", n_train=10_000),
    "mnist1d_mlp": Setup("mnist1d_mlp", lr=0.05),
}
VARIANTS = {
    # name: (interval K, convergent, init)
    "p-AutoGrow K=1, GauInit": (1, False, "gau"),
    "p-AutoGrow K=1, ZeroInit": (1, False, "zero"),
    "p-AutoGrow K=3, GauInit": (3, False, "gau"),
    "p-AutoGrow K=3, ZeroInit": (3, False, "zero"),
    "c-AutoGrow K=6, GauInit": (6, True, "gau"),
    "c-AutoGrow K=6, ZeroInit": (6, True, "zero"),
}
QUICK = {
    "n_train": 600,
    "n_test": 300,
    "max_growth_epochs": 4,
    "tail_epochs": 1,
    "scratch_epochs": 2,
    "max_blocks": 2,
    "sweep": ((1, 1, 1),),
}
QUICK_VARIANTS = ("p-AutoGrow K=1, GauInit", "c-AutoGrow K=6, ZeroInit")


def load(setup: Setup) -> tg_data.Dataset:
    """The set-up's data (Fashion-MNIST pooled to 14x14, or MNIST-1D)."""
    if setup.name.startswith("fashion_mnist"):
        ds = tg_data.fashion_mnist()
        ds = ds.subset(setup.n_train, setup.n_test, seed=setup.seed)
        pool = nn.AvgPool2d(2)
        return tg_data.Dataset(
            "fashion_mnist_14",
            pool(ds.x_train),
            ds.y_train,
            pool(ds.x_test),
            ds.y_test,
            ds.num_classes,
            (1, 14, 14),
            "classification",
        )
    ds = tg_data.mnist1d()
    return ds.subset(setup.n_train, setup.n_test, seed=setup.seed)


def build(setup: Setup, arch: tuple[int, ...]) -> nn.Module:
    torch.manual_seed(setup.seed)
    if setup.name.endswith("resnet"):
        return models.cifar_resnet(arch, (8, 16, 32), in_channels=1)
    return models.residual_mlp(arch, (32, 32, 32), in_features=40)


def _sgd(model: nn.Module, setup: Setup) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(), lr=setup.lr, momentum=0.9, weight_decay=setup.weight_decay
    )


def run_autogrow(ds: tg_data.Dataset, setup: Setup, variant: str) -> dict[str, Any]:
    interval, convergent, init_name = VARIANTS[variant]
    model = build(setup, (1, 1, 1))
    init = GauInit(seed=setup.seed) if init_name == "gau" else ZeroInit()
    ag = methods.AutoGrow(
        model,
        _sgd(model, setup),
        ds,
        interval=interval,
        convergent=convergent,
        window=setup.window,
        tau=setup.tau,
        init=init,
        max_blocks=setup.max_blocks,
        max_growth_epochs=setup.max_growth_epochs,
        tail_epochs=setup.tail_epochs,
        batch_size=setup.batch,
        seed=setup.seed,
    )
    out = ag.run()
    grown = [e for e in ag.events if "stage" in e]
    return {
        "variant": variant,
        **out,
        "max_abs_delta": max((e["max_abs_delta"] for e in grown), default=0.0),
        "events": ag.events,
        "rows": [
            {k: r[k] for k in ("epoch", "phase", "arch", "val_accuracy", "parameters", "lr")}
            for r in ag.rows
        ],
    }


def run_scratch(ds: tg_data.Dataset, setup: Setup, arch: tuple[int, ...]) -> dict[str, Any]:
    """The network at a fixed depth, trained from scratch with the step schedule."""
    model = build(setup, arch)
    opt = _sgd(model, setup)
    train, val = ds.split_validation(0.1, seed=setup.seed)
    g = torch.Generator().manual_seed(setup.seed)
    loaders = (
        DataLoader(
            TensorDataset(train.x_train, train.y_train),
            batch_size=setup.batch,
            shuffle=True,
            generator=g,
        ),
        DataLoader(TensorDataset(val.x_test, val.y_test), batch_size=512),
    )
    epochs = setup.scratch_epochs
    milestones = sorted({max(1, int(epochs * f)) for f in (0.5, 0.75)})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    compute = TrainingCompute(model, train.x_train[:1])
    t0 = time.perf_counter()
    fit(
        model,
        opt,
        loaders,
        epochs=epochs,
        loss_fn=F.cross_entropy,
        scheduler=scheduler,
        compute=compute,
        eval_every="last",
        progress=False,
        seed=setup.seed,
    )
    return {
        "arch": list(arch),
        "val_accuracy": accuracy(model, (val.x_test, val.y_test)),
        "test_accuracy": accuracy(model, (ds.x_test, ds.y_test)),
        "parameters": count_parameters(model),
        "flops_per_example": flops_per_example(model, ds.x_test[:1]),
        "training_flops": compute.total,
        "seconds": time.perf_counter() - t0,
    }


def run_setup(setup: Setup, variants: tuple[str, ...]) -> dict[str, Any]:
    ds = load(setup)
    found = []
    for v in variants:
        t = time.perf_counter()
        found.append(run_autogrow(ds, setup, v))
        print(
            f"{setup.name} {v}: {found[-1]['arch']} test {found[-1]['test_accuracy']:.4f} "
            f"({time.perf_counter() - t:.0f} s)",
            flush=True,
        )
    archs = list(dict.fromkeys([tuple(a) for a in setup.sweep] + [tuple(f["arch"]) for f in found]))
    scratch = []
    for arch in sorted(archs, key=sum):
        scratch.append(run_scratch(ds, setup, arch))
        print(f"{setup.name} scratch {arch}: test {scratch[-1]['test_accuracy']:.4f}", flush=True)
    return {"autogrow": found, "scratch": scratch, "setup": asdict(setup)}


# --------------------------------------------------------------------------- output
def _arch(a: list[int]) -> str:
    return "-".join(map(str, a))


def summary_tables(payload: dict[str, Any]) -> dict[str, str]:
    """Per set-up: each variant's found depth against the same depth trained from scratch."""
    tables = {}
    for name, res in payload["results"].items():
        scratch = {tuple(r["arch"]): r for r in res["scratch"]}
        rows = []
        for f in res["autogrow"]:
            same = scratch.get(tuple(f["arch"]))
            rows.append(
                {
                    "variant": f["variant"],
                    "found": _arch(f["arch"]),
                    "test %": f"{100 * f['test_accuracy']:.2f}",
                    "scratch at that depth %": "-"
                    if same is None
                    else f"{100 * same['test_accuracy']:.2f}",
                    "cost": "-"
                    if same is None
                    else f"{f['training_flops'] / same['training_flops']:.2f}×",
                    "max abs Δout at growth": f"{f['max_abs_delta']:.2g}",
                }
            )
        tables[f"summary_{name}"] = markdown_table(rows)
        sweep = sorted(res["scratch"], key=lambda r: (sum(r["arch"]), r["arch"]))
        tables[f"sweep_{name}"] = ", ".join(
            f"{_arch(r['arch'])} {100 * r['test_accuracy']:.2f} %" for r in sweep
        )
    return tables


def markdown(payload: dict[str, Any]) -> str:
    parts = [
        "AutoGrow's found depth vs the same network trained from scratch at fixed depths. "
        "One seed. Decisions on a 10 % validation split of the training data; test accuracy "
        "is only reported. Training FLOPs = 3 x forward FLOPs per trained example (AutoGrow: "
        "growth + tail, at the size of the moment).\n"
    ]
    for name, res in payload["results"].items():
        s = res["setup"]
        parts.append(f"\n## {name}\n\n")
        rows = []
        for f in res["autogrow"]:
            rows.append(
                {
                    "variant": f["variant"],
                    "found depth": _arch(f["arch"]),
                    "frozen": ",".join(f["frozen"]) or "-",
                    "growth epochs": f["growth_epochs"],
                    "test acc %": 100 * f["test_accuracy"],
                    "parameters": f["parameters"],
                    "FLOPs/example": f["flops_per_example"],
                    "training GFLOPs": f["training_flops"] / 1e9,
                    "max abs Δout at growth": f["max_abs_delta"],
                    "seconds": f["seconds"],
                }
            )
        parts.append(markdown_table(rows))
        parts.append(f"\nFrom scratch ({s['scratch_epochs']} epochs, step schedule):\n\n")
        rows = [
            {
                "depth": _arch(r["arch"]),
                "test acc %": 100 * r["test_accuracy"],
                "parameters": r["parameters"],
                "FLOPs/example": r["flops_per_example"],
                "training GFLOPs": r["training_flops"] / 1e9,
                "seconds": r["seconds"],
            }
            for r in res["scratch"]
        ]
        parts.append(markdown_table(rows))
        parts.append(
            f"\nSettings: lr {s['lr']} (constant during growth), momentum 0.9, weight decay "
            f"{s['weight_decay']}, batch {s['batch']}; J {s['window']} epochs, tau {s['tau']} "
            f"points, at most {s['max_blocks']} blocks per stage, growth budget "
            f"{s['max_growth_epochs']} epochs, tail {s['tail_epochs']} epochs.\n"
        )
    parts.append(f"\nTotal wall time: {payload['wall_s'] / 60:.1f} min.\n")
    return "".join(parts)


def plot(payload: dict[str, Any], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = payload["results"]
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items(), strict=True):
        sweep = sorted(res["scratch"], key=lambda r: sum(r["arch"]))
        ax.plot(
            [sum(r["arch"]) for r in sweep],
            [100 * r["test_accuracy"] for r in sweep],
            "o-",
            color="gray",
            label="from scratch",
        )
        for i, f in enumerate(res["autogrow"]):
            ax.plot(
                sum(f["arch"]),
                100 * f["test_accuracy"],
                "*" if "GauInit" in f["variant"] else "D",
                ms=11 if "GauInit" in f["variant"] else 7,
                color=f"C{i // 2}",
                label=f"{f['variant']} ({_arch(f['arch'])})",
            )
        ax.set_xlabel("blocks in total")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke run")
    ap.add_argument("--setups", nargs="*", default=list(SETUPS), choices=list(SETUPS))
    ap.add_argument("--threads", type=int, default=THREADS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results = {}
    for name in args.setups:
        setup = SETUPS[name]
        variants = tuple(VARIANTS)
        if args.quick:
            setup = replace(setup, **QUICK)
            variants = QUICK_VARIANTS
        results[name] = run_setup(setup, variants)
    payload = {
        "quick": args.quick,
        "seeds": [0],
        "threads": args.threads,
        "results": results,
        "wall_s": time.perf_counter() - t0,
    }
    write_results(
        "autogrow_depth", payload, markdown(payload), argv=argv, tables=summary_tables(payload)
    )
    plot(payload, results_dir(args.quick) / "autogrow_depth.png")
    return payload


if __name__ == "__main__":
    main()
