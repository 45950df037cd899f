"""CompNet: deepen a trained network by a compact, function-preserving layer (a reconstruction).

Set-ups (one seed each):

- MLPs 784-100-10 and 784-256-10 on the 5k MNIST subset (3.6k/0.4k/1k) and on
  Fashion-MNIST (54k/6k/10k);
- a small CNN on a 10k Fashion-MNIST subset: conv 3x3 (16) - ReLU - pool -
  conv 3x3 (32) - ReLU - pool - fc; the layer is added after the second conv.

For each, the parent is trained to convergence (SGD, lr 0.1, 0.05 for the
CNN, momentum 0.9, batch 128, until the validation loss has not improved for 5
epochs, at most 60 epochs), then, from copies of the converged parent, at a
tenth of that rate:

- ``CompNet``: identity insertion after the hidden layer's ReLU, then
  ``sparse_epochs`` with the group-lasso proximal step, trimming of units with
  group norm <= 1e-3, and ``finetune_epochs`` without the penalty;
- ``CompNet (morphism)``: the same with the morphism-equation layer (2 x rank
  paired units; MLPs only);
- ``Net2Net (no compaction)``: identity insertion and the same epochs with
  λ = 0, so the added layer stays as wide as the one it follows;
- ``Scratch (deeper)``: the child's architecture at full width trained from
  scratch for the parent's epochs (at lr) + the child's epochs (at lr / 10).

λ is set so that ``lr/10 * λ * (optimizer steps of the sparse phase) = PROX_BUDGET``
(3): the norm a unit's group would lose without any gradient pushing back, so
data sets of different sizes get the same pressure. Validation is a 10 %
split of the training data; test accuracy is only reported.

Run ``python -m benchmarks.compnet_deepen``; ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import markdown_table, write_results
from torchgrow import data as tg_data
from torchgrow import methods, models
from torchgrow.train import fit
from torchgrow.why import accuracy, count_parameters

THREADS = 2
FINETUNE_FACTOR = 0.1  # the children (and the scratch net's last epochs) train at lr / 10
PROX_BUDGET = 3.0
WIDTH_GOAL = 0.30  # the added layer at most 30 % of the layer it follows ...
ACCURACY_GOAL = 0.002  # ... at accuracy >= Net2Net's - 0.2 points


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
QUICK = {"n_train": 800, "parent_epochs": 3, "sparse_epochs": 2, "finetune_epochs": 1}


def load(setup: Setup) -> tg_data.Dataset:
    ds = tg_data.mnist5k() if setup.dataset == "mnist5k" else tg_data.fashion_mnist()
    if setup.n_train is not None:
        ds = ds.subset(setup.n_train, None, seed=setup.seed)
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


def run_setup(setup: Setup) -> dict[str, Any]:
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
    steps = math.ceil(len(parent.train_set.x_train) / 128) * setup.sparse_epochs
    finetune_lr = setup.lr * FINETUNE_FACTOR
    lam = PROX_BUDGET / (finetune_lr * steps)
    result: dict[str, Any] = {
        "setup": asdict(setup),
        "lam": lam,
        "parent": {
            "test_accuracy": parent_out["test_accuracy"],
            "val_accuracy": parent_out["val_accuracy"],
            "parameters": parent_out["parameters"],
            "epochs": parent_epochs,
            "seconds": time.perf_counter() - t0,
        },
        "children": [],
    }
    variants = [("CompNet", "identity", lam), ("Net2Net (no compaction)", "identity", 0.0)]
    if setup.model != "cnn":
        variants.insert(1, ("CompNet (morphism)", "morphism", lam))
    for label, variant, lam_v in variants:
        model, opt = copy.deepcopy((parent.model, parent.optimizer))
        t = time.perf_counter()
        child = methods.CompNet(
            model,
            opt,
            ds,
            layers=_insertion_point(setup),
            variant=variant,
            lam=lam_v,
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
                "test_accuracy": out["test_accuracy"],
                "val_accuracy": out["val_accuracy"],
                "parameters": out["parameters"],
                "layer_width": d["layer_width"],
                "width_at_insertion": d["width_at_insertion"],
                "width": d["width"],
                "max_abs_delta": d["max_abs_delta"],
                "epochs_to_parent_accuracy": d["epochs_to_parent_accuracy"],
                "epochs": parent_epochs + setup.sparse_epochs + setup.finetune_epochs,
                "seconds": time.perf_counter() - t,
            }
        )
        print(f"{setup.name} {label}: {result['children'][-1]}", flush=True)
    # the deeper net from scratch, full width, for the same total epochs and the same rates:
    # the parent's epochs at lr, then the children's at lr / 10
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
    fit(model, opt, loaders, epochs=total, scheduler=scheduler, eval_every="last", seed=setup.seed)
    out = {
        "test_accuracy": accuracy(model, (ds.x_test, ds.y_test)),
        "val_accuracy": accuracy(model, (val.x_test, val.y_test)),
    }
    result["children"].append(
        {
            "variant": "Scratch (deeper)",
            "test_accuracy": out["test_accuracy"],
            "val_accuracy": out["val_accuracy"],
            "parameters": count_parameters(model),
            "layer_width": None,
            "width_at_insertion": None,
            "width": 32 if setup.model == "cnn" else (100 if setup.model == "mlp100" else 256),
            "max_abs_delta": None,
            "epochs_to_parent_accuracy": None,
            "epochs": total,
            "seconds": time.perf_counter() - t,
        }
    )
    result["goal"] = goal(result)
    return result


def goal(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets for the (identity) CompNet child."""
    by = {c["variant"]: c for c in result["children"]}
    c, n = by["CompNet"], by["Net2Net (no compaction)"]
    ratio = c["width"] / c["layer_width"]
    return {
        "width_ratio": ratio,
        "width_at_most_30_percent": ratio <= WIDTH_GOAL,
        "accuracy_minus_net2net_points": 100 * (c["test_accuracy"] - n["test_accuracy"]),
        "accuracy_within_0.2_points_of_net2net": c["test_accuracy"]
        >= n["test_accuracy"] - ACCURACY_GOAL,
        "preserved_at_insertion": c["max_abs_delta"] <= 1e-5,
        "keeps_parent_accuracy": c["test_accuracy"] >= result["parent"]["test_accuracy"],
    }


def markdown(payload: dict[str, Any]) -> str:
    parts = [
        "CompNet (a reconstruction) vs Net2Net-style deepening without compaction vs the deeper "
        "net from scratch. One seed. Test accuracy only reported; every decision on a 10 % "
        f"validation split. λ from a proximal budget of {PROX_BUDGET} (see the script).\n"
    ]
    for name, res in payload["results"].items():
        p = res["parent"]
        parts.append(
            f"\n## {name}\n\nParent: test {100 * p['test_accuracy']:.2f} %, "
            f"{p['parameters']:,} parameters, converged after {p['epochs']} epochs. "
            f"λ = {res['lam']:.4g}.\n\n"
        )
        rows = []
        for c in res["children"]:
            rows.append(
                {
                    "variant": c["variant"],
                    "test acc %": 100 * c["test_accuracy"],
                    "added layer width": c["width"]
                    if c["layer_width"] is None
                    else f"{c['width_at_insertion']} -> {c['width']} (of {c['layer_width']})",
                    "parameters": c["parameters"],
                    "max abs Δout at insertion": "-"
                    if c["max_abs_delta"] is None
                    else f"{c['max_abs_delta']:.1e}",
                    "epochs to parent acc": "-"
                    if c["epochs_to_parent_accuracy"] is None and c["layer_width"] is None
                    else c["epochs_to_parent_accuracy"],
                    "total epochs": c["epochs"],
                    "seconds": c["seconds"],
                }
            )
        parts.append(markdown_table(rows))
        g = res["goal"]
        parts.append(
            "\nTargets (CompNet): "
            + ", ".join(
                f"{k}: {('yes' if v else 'no') if isinstance(v, bool) else f'{v:.3g}'}"
                for k, v in g.items()
            )
            + ".\n"
        )
    parts.append(f"\nTotal wall time: {payload['wall_s'] / 60:.1f} min.\n")
    return "".join(parts)


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
        if args.quick:
            setup = replace(setup, **QUICK)
        results[name] = run_setup(setup)
    payload = {
        "quick": args.quick,
        "seeds": [0],
        "threads": args.threads,
        "results": results,
        "wall_s": time.perf_counter() - t0,
    }
    write_results("compnet_deepen", payload, markdown(payload))
    return payload


if __name__ == "__main__":
    main()
