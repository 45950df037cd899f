"""CompNet: deepen a trained network by a compact, function-preserving layer (a reconstruction).

Set-ups:

- MLPs 784-100-10 and 784-256-10 on the 5k MNIST subset (3.6k/0.4k/1k) and on
  Fashion-MNIST (54k/6k/10k);
- a small CNN on a 10k Fashion-MNIST subset: conv 3x3 (16) - ReLU - pool -
  conv 3x3 (32) - ReLU - pool - fc; the layer is added after the second conv.

For each set-up and seed, the parent is trained to convergence (SGD, lr 0.1,
0.05 for the CNN, momentum 0.9, batch 128, until the validation loss has not
improved for 5 epochs, at most 60 epochs). Then, from copies of the converged
parent, at a tenth of that rate:

- ``CompNet``: identity insertion after the hidden layer's ReLU, then
  ``sparse_epochs`` with the group-lasso proximal step, trimming of units with
  group norm <= 1e-3, and ``finetune_epochs`` without the penalty; one child
  per λ of the sweep;
- ``CompNet (morphism)``: the same with the morphism-equation layer (2 x rank
  paired units; MLPs only);
- ``Net2Net (no compaction)``: identity insertion and the same epochs with
  λ = 0, so the added layer stays as wide as the one it follows;
- ``Scratch (deeper)``: the child's architecture at full width trained from
  scratch for the parent's epochs (at lr) + the child's epochs (at lr / 10).

**λ is chosen on validation.** λ is swept through proximal budgets
``lr/10 * λ * (optimizer steps of the sparse phase)`` in ``PROX_BUDGETS`` (the
norm a unit's group would lose without any gradient pushing back, so data sets
of different sizes get comparable pressure). For each set-up and variant, the
chosen budget is the one with the narrowest mean added layer among those whose
mean validation accuracy over seeds is at least Net2Net's - 0.2 points (or, if
none is, the one with the best mean validation accuracy). Test accuracy is
only reported.

**Convergence.** An exact insertion starts at the parent's accuracy, so
"epochs to the parent's accuracy" is 0 by construction. Two measures that are
not: the deepest dip of validation accuracy below the parent's after
insertion, and the epochs until validation accuracy is within 0.2 points of
Net2Net's final validation accuracy, counted from the insertion for the
children and from initialisation for the net trained from scratch.

**Repeated deepening.** ``CompNet(max_deepenings=3, tolerance=0)`` on the MLPs
with the budget the sweep chose for the identity variant: deepen, compact,
fine-tune, and deepen again while validation accuracy improves.

Run ``python -m benchmarks.compnet_deepen`` (3 seeds: the sweep, then repeated
deepening). ``--part sweep`` or ``--part repeated`` runs one part (repeated
deepening reads the chosen budgets from the committed sweep); ``--seeds 1``
runs one seed and merges it into the committed results (so set-ups and seeds
can run in parallel processes); ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import json
import math
import statistics
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import markdown_table, meta, results_dir, write_results
from torchgrow import data as tg_data
from torchgrow import methods, models
from torchgrow.train import fit
from torchgrow.why import accuracy, count_parameters

THREADS = 2
SEEDS = (0, 1, 2)
FINETUNE_FACTOR = 0.1  # the children (and the scratch net's last epochs) train at lr / 10
PROX_BUDGETS = (0.3, 1.0, 1.5, 2.0, 2.5, 3.0)
REPEAT_DEEPENINGS = 3
WIDTH_GOAL = 0.30  # the added layer at most 30 % of the layer it follows ...
ACCURACY_GOAL = 0.002  # ... at accuracy >= Net2Net's - 0.2 points
NET2NET = "Net2Net (no compaction)"
SCRATCH = "Scratch (deeper)"
VARIANTS = {"CompNet": "identity", "CompNet (morphism)": "morphism"}


@dataclass(frozen=True)
class Setup:
    name: str
    dataset: str
    model: str  # "mlp100", "mlp256" or "cnn"
    lr: float = 0.1
    n_train: int | None = None
    sparse_epochs: int = 10
    finetune_epochs: int = 5
    parent_epochs: int = 60
    patience: int = 5
    seed: int = 0


SETUPS = {
    s.name: s
    for s in (
        Setup("mnist5k_mlp100", "mnist5k", "mlp100"),
        Setup("mnist5k_mlp256", "mnist5k", "mlp256"),
        Setup("fashion_mnist_mlp100", "fashion_mnist", "mlp100", sparse_epochs=5, finetune_epochs=3),
        Setup("fashion_mnist_mlp256", "fashion_mnist", "mlp256", sparse_epochs=5, finetune_epochs=3),
        Setup("fashion_mnist_cnn", "fashion_mnist", "cnn", lr=0.05, n_train=10_000,
              sparse_epochs=5, finetune_epochs=3),
    )
}  # fmt: skip
QUICK = {"n_train": 400, "parent_epochs": 2, "sparse_epochs": 1, "finetune_epochs": 1}
QUICK_SETUPS, QUICK_SEEDS, QUICK_BUDGETS = ("mnist5k_mlp100",), (0,), (1.0, 3.0)


def load(setup: Setup) -> tg_data.Dataset:
    ds = tg_data.mnist5k() if setup.dataset == "mnist5k" else tg_data.fashion_mnist()
    if setup.n_train is not None:
        ds = ds.subset(setup.n_train, None, seed=0)  # the same subset for every seed
    return ds


def cnn(deeper: bool = False) -> nn.Sequential:
    layers = [
        ("conv1", nn.Conv2d(1, 16, 3, padding=1)),
        ("act1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(16, 32, 3, padding=1)),
        ("act2", nn.ReLU()),
    ]
    if deeper:
        layers += [("conv3", nn.Conv2d(32, 32, 3, padding=1)), ("act3", nn.ReLU())]
    layers += [("pool2", nn.MaxPool2d(2)), ("flat", nn.Flatten()), ("fc", nn.Linear(32 * 49, 10))]
    return nn.Sequential(OrderedDict(layers))


def build(setup: Setup, deeper: bool = False) -> nn.Module:
    torch.manual_seed(setup.seed)
    if setup.model == "cnn":
        return cnn(deeper)
    width = 100 if setup.model == "mlp100" else 256
    return models.mlp([784, width, width, 10] if deeper else [784, width, 10])


def _sgd(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def _insertion_point(setup: Setup) -> list[str]:
    return ["conv2"] if setup.model == "cnn" else ["fc1"]


def _variants(setup: Setup) -> list[str]:
    return ["CompNet"] if setup.model == "cnn" else list(VARIANTS)


def _lam(setup: Setup, n_train: int, budget: float) -> float:
    steps = math.ceil(n_train / 128) * setup.sparse_epochs
    return budget / (setup.lr * FINETUNE_FACTOR * steps)


def _child_curve(cn: methods.CompNet) -> list[float]:
    """Validation accuracy at insertion (index 0) and after each epoch of the first deepening."""
    rows = [r for r in cn.history if r["phase"] in ("inserted", "sparse", "finetune")]
    return [r["val_accuracy"] for r in rows]


def run_seed(setup: Setup, budgets: tuple[float, ...] = PROX_BUDGETS) -> dict[str, Any]:
    """One seed of one set-up: the parent, the λ sweep of both variants, Net2Net and scratch."""
    ds = load(setup)
    t0 = time.perf_counter()
    parent_model = build(setup)
    parent = methods.CompNet(
        parent_model,
        _sgd(parent_model, setup.lr),
        ds,
        layers=_insertion_point(setup),
        max_deepenings=0,
        parent_epochs=setup.parent_epochs,
        patience=setup.patience,
        seed=setup.seed,
    )
    parent_out = parent.run()
    parent_epochs = sum(1 for r in parent.history if r["phase"] == "parent")
    n_train = len(parent.train_set.x_train)
    finetune_lr = setup.lr * FINETUNE_FACTOR
    result: dict[str, Any] = {
        "seed": setup.seed,
        "parent": {
            "test_accuracy": parent_out["test_accuracy"],
            "val_accuracy": parent_out["val_accuracy"],
            "parameters": parent_out["parameters"],
            "epochs": parent_epochs,
            "seconds": time.perf_counter() - t0,
        },
        "children": [],
    }
    runs = [(label, VARIANTS[label], b) for label in _variants(setup) for b in budgets]
    runs.append((NET2NET, "identity", 0.0))
    for label, variant, budget in runs:
        model, opt = copy.deepcopy((parent.model, parent.optimizer))
        t = time.perf_counter()
        lam = _lam(setup, n_train, budget)
        child = methods.CompNet(
            model,
            opt,
            ds,
            layers=_insertion_point(setup),
            variant=variant,
            lam=lam,
            parent_epochs=0,
            sparse_epochs=setup.sparse_epochs,
            finetune_epochs=setup.finetune_epochs,
            finetune_lr=finetune_lr,
            tolerance=-1.0,  # report the child whatever its accuracy
            seed=setup.seed,
        )
        out = child.run()
        (d,) = out["deepenings"]
        result["children"].append(
            {
                "variant": label,
                "budget": budget,
                "lam": lam,
                "test_accuracy": out["test_accuracy"],
                "val_accuracy": out["val_accuracy"],
                "parameters": out["parameters"],
                "layer_width": d["layer_width"],
                "width_at_insertion": d["width_at_insertion"],
                "width": d["width"],
                "max_abs_delta": d["max_abs_delta"],
                "val_curve": _child_curve(child),
                "epochs": parent_epochs + setup.sparse_epochs + setup.finetune_epochs,
                "seconds": time.perf_counter() - t,
            }
        )
        c = result["children"][-1]
        print(
            f"{setup.name} seed {setup.seed} {label} budget {budget}: test "
            f"{100 * c['test_accuracy']:.2f} val {100 * c['val_accuracy']:.2f} width "
            f"{c['width']}/{c['layer_width']} ({c['seconds']:.0f} s)",
            flush=True,
        )
    result["children"].append(_scratch(setup, ds, parent_epochs))
    return result


def _scratch(setup: Setup, ds: tg_data.Dataset, parent_epochs: int) -> dict[str, Any]:
    """The deeper net from scratch, full width, for the same total epochs and the same rates:
    the parent's epochs at lr, then the children's at lr / 10."""
    model = build(setup, deeper=True)
    opt = _sgd(model, setup.lr)
    total = parent_epochs + setup.sparse_epochs + setup.finetune_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda e: 1.0 if e < parent_epochs else FINETUNE_FACTOR
    )
    train, val = ds.split_validation(0.1, seed=setup.seed)
    g = torch.Generator().manual_seed(setup.seed)
    loaders = (
        DataLoader(
            TensorDataset(train.x_train, train.y_train), batch_size=128, shuffle=True, generator=g
        ),
        DataLoader(TensorDataset(val.x_test, val.y_test), batch_size=512),
    )
    t = time.perf_counter()
    history = fit(model, opt, loaders, epochs=total, scheduler=scheduler, seed=setup.seed)
    return {
        "variant": SCRATCH,
        "budget": None,
        "lam": None,
        "test_accuracy": accuracy(model, (ds.x_test, ds.y_test)),
        "val_accuracy": accuracy(model, (val.x_test, val.y_test)),
        "parameters": count_parameters(model),
        "layer_width": None,
        "width_at_insertion": None,
        "width": 32 if setup.model == "cnn" else (100 if setup.model == "mlp100" else 256),
        "max_abs_delta": None,
        "val_curve": [r["val_accuracy"] for r in history.rows],  # index 0: after epoch 1
        "epochs": total,
        "seconds": time.perf_counter() - t,
    }


def run_repeated(setup: Setup, budget: float) -> dict[str, Any]:
    """CompNet with up to ``REPEAT_DEEPENINGS`` deepenings, kept while validation improves."""
    ds = load(setup)
    model = build(setup)
    train, _ = ds.split_validation(0.1, seed=setup.seed)
    t = time.perf_counter()
    cn = methods.CompNet(
        model,
        _sgd(model, setup.lr),
        ds,
        layers=_insertion_point(setup),
        lam=_lam(setup, len(train.x_train), budget),
        parent_epochs=setup.parent_epochs,
        patience=setup.patience,
        sparse_epochs=setup.sparse_epochs,
        finetune_epochs=setup.finetune_epochs,
        finetune_lr=setup.lr * FINETUNE_FACTOR,
        max_deepenings=REPEAT_DEEPENINGS,
        tolerance=0.0,
        seed=setup.seed,
    )
    out = cn.run()
    keep = ("width_at_insertion", "width", "layer_width", "val_accuracy", "test_accuracy", "kept")
    return {
        "seed": setup.seed,
        "budget": budget,
        "parent": out["parent"],
        "deepenings": [{k: d[k] for k in keep} for d in out["deepenings"]],
        "test_accuracy": out["test_accuracy"],
        "val_accuracy": out["val_accuracy"],
        "parameters": out["parameters"],
        "seconds": time.perf_counter() - t,
    }


# ---------------------------------------------------------------- aggregation
def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def epochs_to(curve: list[float], level: float, offset: int) -> int | None:
    """The first epoch (curve index + ``offset``) whose value is >= ``level``; None if never."""
    return next((i + offset for i, v in enumerate(curve) if v >= level - 1e-12), None)


def summarise(seeds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds per (variant, budget); the λ choice on validation; the issue's targets."""
    runs = [seeds[k] for k in sorted(seeds, key=int)]
    groups: dict[tuple[str, float | None], list[tuple[dict, dict]]] = {}
    for run in runs:
        for c in run["children"]:
            groups.setdefault((c["variant"], c["budget"]), []).append((run, c))
    net2net_final = {run["seed"]: _by(run)[NET2NET]["val_accuracy"] for run in runs}
    rows = []
    for (variant, budget), items in groups.items():
        test = _mean_std([c["test_accuracy"] for _, c in items])
        val = _mean_std([c["val_accuracy"] for _, c in items])
        row: dict[str, Any] = {
            "variant": variant,
            "budget": budget,
            "lam": items[0][1]["lam"],
            "test": test,
            "val": val,
            "width": statistics.fmean(c["width"] for _, c in items),
            "width_at_insertion": statistics.fmean(
                c["width_at_insertion"] or c["width"] for _, c in items
            ),
            "layer_width": items[0][1]["layer_width"],
            "parameters": statistics.fmean(c["parameters"] for _, c in items),
            "max_abs_delta": max((c["max_abs_delta"] or 0.0) for _, c in items),
            "seconds": statistics.fmean(c["seconds"] for _, c in items),
        }
        scratch = variant == SCRATCH
        dips, reach = [], []
        for run, c in items:
            level = net2net_final[run["seed"]] - ACCURACY_GOAL
            reach.append(epochs_to(c["val_curve"], level, offset=1 if scratch else 0))
            if scratch:
                dips.append(None)
                reach_parent = epochs_to(c["val_curve"], run["parent"]["val_accuracy"], 1)
                row.setdefault("scratch_epochs_to_parent", []).append(reach_parent)
            else:
                dips.append(100 * (min(c["val_curve"]) - run["parent"]["val_accuracy"]))
        row["dip_points"] = None if scratch else statistics.fmean(dips)
        row["epochs_to_net2net"] = reach
        rows.append(row)
    chosen = {v: choose(rows, v) for v in VARIANTS if any(r["variant"] == v for r in rows)}
    parent = {
        "test": _mean_std([r["parent"]["test_accuracy"] for r in runs]),
        "val": _mean_std([r["parent"]["val_accuracy"] for r in runs]),
        "epochs": statistics.fmean(r["parent"]["epochs"] for r in runs),
        "parameters": runs[0]["parent"]["parameters"],
    }
    out = {"seeds": [r["seed"] for r in runs], "parent": parent, "rows": rows, "chosen": chosen}
    out["goal"] = {v: goal(rows, i) for v, i in chosen.items()}
    return out


def _by(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["variant"]: c for c in run["children"] if c["budget"] in (None, 0.0)}


def choose(rows: list[dict[str, Any]], variant: str) -> int:
    """Index of the chosen budget of ``variant``: on validation only (see the module doc)."""
    net2net = next(r for r in rows if r["variant"] == NET2NET)
    cands = [i for i, r in enumerate(rows) if r["variant"] == variant]
    ok = [i for i in cands if rows[i]["val"][0] >= net2net["val"][0] - ACCURACY_GOAL - 1e-12]
    if ok:
        return min(ok, key=lambda i: (rows[i]["width"], -rows[i]["val"][0]))
    return max(cands, key=lambda i: rows[i]["val"][0])


def goal(rows: list[dict[str, Any]], i: int) -> dict[str, Any]:
    """The issue's targets for the chosen child, on mean test accuracy."""
    c = rows[i]
    n = next(r for r in rows if r["variant"] == NET2NET)
    ratio = c["width"] / c["layer_width"]
    return {
        "width_ratio": ratio,
        "width_at_most_30_percent": ratio <= WIDTH_GOAL,
        "accuracy_minus_net2net_points": 100 * (c["test"][0] - n["test"][0]),
        "accuracy_within_0.2_points_of_net2net": c["test"][0] >= n["test"][0] - ACCURACY_GOAL,
        "preserved_at_insertion": c["max_abs_delta"] <= 1e-5,
    }


# ---------------------------------------------------------------- reporting
def _pm(ms: tuple[float, float]) -> str:
    return f"{100 * ms[0]:.2f} ± {100 * ms[1]:.2f}"


def _epochs(values: list[int | None]) -> str:
    return ", ".join("never" if v is None else str(v) for v in values)


def markdown(payload: dict[str, Any]) -> str:
    parts = [
        "CompNet (a reconstruction) vs Net2Net-style deepening without compaction vs the deeper "
        "net from scratch. Mean ± std over seeds; every decision (convergence, λ) on a 10 % "
        "validation split, test accuracy only reported. `budget` = lr · λ · (sparse-phase "
        "steps); **bold** = the budget chosen on validation (narrowest layer within 0.2 points "
        "of Net2Net's mean validation accuracy). `dip` = lowest validation accuracy after "
        "insertion minus the parent's (points). `epochs to Net2Net` = epochs until validation "
        "accuracy is within 0.2 points of Net2Net's final one, per seed (children: from the "
        "insertion; scratch: from initialisation).\n"
    ]
    for name, res in payload["summary"].items():
        p = res["parent"]
        parts.append(
            f"\n## {name}\n\nSeeds {', '.join(map(str, res['seeds']))}. Parent: test "
            f"{_pm(p['test'])} %, {p['parameters']:,} parameters, converged after "
            f"{p['epochs']:.1f} epochs on average.\n\n"
        )
        chosen = set(res["chosen"].values())
        table = []
        for i, r in enumerate(res["rows"]):
            label = r["variant"] + ("" if r["budget"] in (None, 0.0) else f" {r['budget']:g}")
            if i in chosen:
                label = f"**{label}**"
            scratch = r["variant"] == SCRATCH
            table.append(
                {
                    "variant, budget": label,
                    "λ": "-" if not r["lam"] else f"{r['lam']:.3g}",
                    "test acc %": _pm(r["test"]),
                    "val acc %": _pm(r["val"]),
                    "added layer width": f"{r['width']:.0f}"
                    if scratch
                    else f"{r['width_at_insertion']:.0f} → {r['width']:.1f} of {r['layer_width']}",
                    "parameters": f"{r['parameters']:,.0f}",
                    "max abs Δout at insertion": "-" if scratch else f"{r['max_abs_delta']:.1e}",
                    "dip": "-" if scratch else f"{r['dip_points']:+.2f}",
                    "epochs to Net2Net": _epochs(r["epochs_to_net2net"]),
                    "seconds": f"{r['seconds']:.1f}",
                }
            )
        parts.append(markdown_table(table))
        scratch = next(r for r in res["rows"] if r["variant"] == SCRATCH)
        parts.append(
            "\nThe deeper net from scratch reaches the parent's validation accuracy after "
            f"{_epochs(scratch['scratch_epochs_to_parent'])} epochs (per seed); every exact "
            "insertion starts there.\n"
        )
        for variant, g in res["goal"].items():
            parts.append(
                f"\nTargets ({variant}, chosen budget): "
                + ", ".join(
                    f"{k}: {('yes' if v else 'no') if isinstance(v, bool) else f'{v:.3g}'}"
                    for k, v in g.items()
                )
                + ".\n"
            )
    if payload.get("repeated"):
        parts.append(
            f"\n## Repeated deepening\n\n`CompNet(max_deepenings={REPEAT_DEEPENINGS}, "
            "tolerance=0)` with the budget chosen for the identity variant: a layer is added "
            "after the hidden layer, compacted and fine-tuned; the next one is added while "
            "validation accuracy improves; the last (not kept) is undone.\n\n"
        )
        rows = []
        for name, seeds in payload["repeated"].items():
            for seed in sorted(seeds, key=int):
                r = seeds[seed]
                steps = "; ".join(
                    f"{d['width_at_insertion']}→{d['width']} "
                    f"{100 * d['val_accuracy']:.2f}{'' if d['kept'] else ' (undone)'}"
                    for d in r["deepenings"]
                )
                rows.append(
                    {
                        "set-up": name,
                        "seed": seed,
                        "budget": r["budget"],
                        "parent val / test %": f"{100 * r['parent']['val_accuracy']:.2f} / "
                        f"{100 * r['parent']['test_accuracy']:.2f}",
                        "deepenings: width, val %": steps,
                        "layers kept": sum(d["kept"] for d in r["deepenings"]),
                        "final val / test %": f"{100 * r['val_accuracy']:.2f} / "
                        f"{100 * r['test_accuracy']:.2f}",
                        "parameters": r["parameters"],
                        "seconds": f"{r['seconds']:.0f}",
                    }
                )
        parts.append(markdown_table(rows))
    parts.append(
        "\nEach seed is run (and may be re-run) on its own and merged into this file: "
        "`python -m benchmarks.compnet_deepen --seeds 1`.\n"
    )
    return "".join(parts)


def readme_tables(payload: dict[str, Any]) -> dict[str, str]:
    """README/docs fragments: one row per set-up, and what compaction did to the added layer."""
    rows, notes = [], []
    for name, res in payload["summary"].items():
        by = {r["variant"]: r for r in res["rows"] if r["variant"] in (NET2NET, SCRATCH)}
        row = {
            "set-up": name,
            "parent": _pm(res["parent"]["test"]),
            "Net2Net (full width)": _pm(by[NET2NET]["test"]),
        }
        for variant in VARIANTS:
            if variant not in res["chosen"]:
                row[variant] = "–"
                continue
            c = res["rows"][res["chosen"][variant]]
            row[variant] = (
                f"{c['width_at_insertion']:.0f} → {c['width']:.1f} of {c['layer_width']} units "
                f"(budget {c['budget']:g}), {_pm(c['test'])}"
            )
            trimmed = c["width_at_insertion"] - c["width"]
            notes.append(
                f"{name}, {variant}: the layer starts at {c['width_at_insertion']:.0f} units "
                + (
                    "(the factorisation's rank)"
                    if variant.endswith("(morphism)")
                    else "(the identity's full width)"
                )
                + f" and compaction removes {trimmed:.1f} on average, ending at "
                f"{100 * c['width'] / c['layer_width']:.1f} % of the {c['layer_width']}-unit layer it "
                f"follows; test accuracy {100 * (c['test'][0] - by[NET2NET]['test'][0]):+.2f} points "
                "against Net2Net."
            )
        row["scratch (deeper)"] = _pm(by[SCRATCH]["test"])
        rows.append(row)
    return {"summary": markdown_table(rows), "compaction": "\n".join(f"- {n}" for n in notes)}


@contextlib.contextmanager
def _locked(quick: bool) -> Iterator[None]:
    """Serialise the read-merge-write of the results between processes running other seeds."""
    lock = results_dir(quick) / ".compnet_deepen.lock"
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _previous(path: Path, quick: bool) -> dict[str, Any]:
    """The results this invocation merges into (none for a smoke run)."""
    return json.loads(path.read_text()) if path.exists() and not quick else {}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke run")
    ap.add_argument("--setups", nargs="*", default=None, choices=list(SETUPS))
    ap.add_argument("--seeds", nargs="*", type=int, default=None)
    ap.add_argument("--part", choices=("all", "sweep", "repeated"), default="all")
    ap.add_argument("--threads", type=int, default=THREADS)
    args = ap.parse_args(argv)
    if args.setups is None:
        args.setups = list(QUICK_SETUPS if args.quick else SETUPS)
    if args.seeds is None:
        args.seeds = list(QUICK_SEEDS if args.quick else SEEDS)
    budgets = QUICK_BUDGETS if args.quick else PROX_BUDGETS
    torch.set_num_threads(args.threads)
    stamp = meta("compnet_deepen", argv)
    t0 = time.perf_counter()
    new: dict[str, dict[str, Any]] = {}
    repeated: dict[str, dict[str, Any]] = {}
    path = results_dir(args.quick) / "compnet_deepen.json"
    for name in args.setups:
        for seed in args.seeds:
            setup = replace(SETUPS[name], seed=seed)
            if args.quick:
                setup = replace(setup, **QUICK)
            if args.part in ("all", "sweep"):
                run = run_seed(setup, budgets)
                run["commit"], run["dirty"] = stamp["commit"], stamp["dirty"]
                new.setdefault(name, {})[str(seed)] = run
        if args.part in ("all", "repeated") and SETUPS[name].model != "cnn":
            with _locked(args.quick):
                done = _previous(path, args.quick).get("runs", {})
            seeds = {**done.get(name, {}), **new.get(name, {})}
            if not seeds:
                raise SystemExit(f"{name}: run the sweep first (--part sweep)")
            res = summarise(seeds)
            budget = res["rows"][res["chosen"]["CompNet"]]["budget"]
            for seed in args.seeds:
                setup = replace(SETUPS[name], seed=seed)
                if args.quick:
                    setup = replace(setup, **QUICK)
                rep = run_repeated(setup, budget)
                rep["commit"], rep["dirty"] = stamp["commit"], stamp["dirty"]
                repeated.setdefault(name, {})[str(seed)] = rep
    with _locked(args.quick):
        old = _previous(path, args.quick)
        runs, reps = old.get("runs", {}), old.get("repeated", {})
        for name, seeds in new.items():
            runs.setdefault(name, {}).update(seeds)
        for name, seeds in repeated.items():
            reps.setdefault(name, {}).update(seeds)
        runs = {n: runs[n] for n in SETUPS if n in runs}
        payload = {
            "quick": args.quick,
            "threads": args.threads,
            "budgets": list(budgets),
            "setups": {n: asdict(SETUPS[n]) for n in runs},
            "runs": runs,
            "repeated": {n: reps[n] for n in SETUPS if n in reps},
            "summary": {n: summarise(seeds) for n, seeds in runs.items()},
            "wall_s_last_invocation": time.perf_counter() - t0,
        }
        # seeds run (and merged) one invocation at a time: each run keeps its own commit
        commits = sorted(
            {r.get("commit") or "unknown" for g in (runs, payload["repeated"]) for seeds in g.values()
             for r in seeds.values()}
        )  # fmt: skip
        payload["run_commits"] = commits
        write_results(
            "compnet_deepen", payload, markdown(payload), argv=argv, tables=readme_tables(payload)
        )
    return payload


if __name__ == "__main__":
    main()
