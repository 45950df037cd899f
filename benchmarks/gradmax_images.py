"""GradMax on images: an MLP and a small VGG grown from 0.25x to 1x width, vs Random growth.

For each (data, model) pair four methods are trained for the same number of
optimizer steps ``T`` with the same optimizer, schedule and batches:

- ``GradMax``: :func:`torchgrow.methods.GradMax` (zero fan-in, fan-out from the
  gradient's top singular vectors at 0.5 x the mean existing fan-out norm,
  all units at once, 25 % of the initial width per event);
- ``Random``: the same :class:`torchgrow.Grower` settings with
  :class:`torchgrow.how.Random` (zero fan-in, uniform random fan-out at the
  same norm), GradMax's ``AddRandom`` baseline;
- ``Small 0.25x`` and ``Big 1x``: static models at the start and end widths.

The paper's CIFAR schedule (200 epochs at batch 128 = 78,200 steps; growth at
step 10,000 and every 2,500 steps after, 12 times) is scaled to ``T``:
``every = round(T * 2500 / 78200)`` and ``start = 4 * every`` (the paper's
ratio, keeping ``start`` a multiple of ``every`` so that :class:`~torchgrow.when.Every`
fires exactly at ``start``). Twelve events of 25 % of the initial width take
every grown layer from 0.25x to exactly 1x.

Reported per method: test accuracy (mean +- std over seeds), final parameters,
training FLOPs (``torchgrow.why.TrainingCompute`` via ``fit``), wall time,
max |output change| over all growth events, and the norm of the new fan-in's
gradient right after growth (GradMax's objective). ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import torchgrow
from benchmarks.common import markdown_table, write_results
from torchgrow import data as tg_data
from torchgrow import methods, models
from torchgrow.graph import growable_units
from torchgrow.how import Random
from torchgrow.size import Fraction
from torchgrow.train import fit
from torchgrow.when import Every
from torchgrow.where import AllAtOnce
from torchgrow.why import count_parameters

BATCH = 128
PAPER = {"steps": 78_200, "start": 10_000, "every": 2_500, "events": 12, "batch": 128}
METHODS = ("GradMax", "Random", "Small 0.25x", "Big 1x")
GROWING = ("GradMax", "Random")
SCALE = 0.5
FRACTION = 0.25
MOMENTUM = 0.9
WEIGHT_DECAY = 0.0
THREADS = 2  # measured: 2 threads ~1.5-1.9x faster than 1 for these sizes (see the report)


# --------------------------------------------------------------------------- set-ups
def fmnist_mlp(width_mult: float) -> nn.Module:
    """784-256-256-10 at 1x (784-64-64-10 at 0.25x)."""
    return models.mlp([784, 256, 256, 10], width_mult=width_mult, activation="relu1")


def fmnist_vgg(width_mult: float) -> nn.Module:
    """vgg_small (32, M, 64, M, 128, 128, M; fc) without normalisation."""
    return models.vgg_small(width_mult=width_mult, batchnorm=False, activation="relu1")


def mnist1d_mlp(width_mult: float) -> nn.Module:
    """40-128-128-10 at 1x (40-32-32-10 at 0.25x)."""
    return models.mlp([40, 128, 128, 10], width_mult=width_mult, activation="relu1")


@dataclass(frozen=True)
class Setup:
    """One (data, model) pair and its training length."""

    key: str
    data: str
    model: str
    build: Callable[[float], nn.Module]
    epochs: int
    lr: float
    n_train: int | None = None  # None: the whole training split
    n_test: int | None = None


SETUPS: dict[str, Setup] = {
    s.key: s
    for s in (
        Setup("fashion_mnist/mlp", "fashion_mnist", "MLP 784-256-256-10", fmnist_mlp, 5, 0.05),
        Setup(
            "fashion_mnist/vgg_small",
            "fashion_mnist",
            "vgg_small (no BN) 32-64-128-128",
            fmnist_vgg,
            2,
            0.05,
        ),
        Setup("mnist1d/mlp", "mnist1d", "MLP 40-128-128-10", mnist1d_mlp, 60, 0.05),
    )
}

# 4 epochs of 5 batches: 20 steps, the fewest that fit 12 growth events (every step from 4)
QUICK = {key: {"epochs": 4, "n_train": 640, "n_test": 200} for key in SETUPS}


def load_data(name: str) -> tg_data.Dataset:
    if name == "fashion_mnist":
        return tg_data.fashion_mnist()
    if name == "mnist1d":
        return tg_data.mnist1d()
    raise ValueError(f"unknown data set {name!r}")


def scaled_schedule(total_steps: int) -> dict[str, int]:
    """The paper's growth schedule scaled from 78,200 steps to ``total_steps``."""
    every = max(1, round(total_steps * PAPER["every"] / PAPER["steps"]))
    start = every * (PAPER["start"] // PAPER["every"])
    last = start + (PAPER["events"] - 1) * every
    if last > total_steps:
        raise ValueError(f"{total_steps} steps are too few for 12 growth events")
    return {"start": start, "every": every, "events": PAPER["events"], "last": last}


def make_grower(
    method: str, model: nn.Module, opt: torch.optim.Optimizer, sched: dict[str, int], seed: int
) -> torchgrow.Grower | None:
    if method == "GradMax":
        return methods.GradMax(
            model,
            opt,
            batch_size=BATCH,
            update_frequency=sched["every"],
            start_iteration=sched["start"],
            n_growth_steps=sched["events"],
            where="all_at_once",
            fraction=FRACTION,
            scale=SCALE,
            scale_method="mean_norm",
            seed=seed,
        )
    if method == "Random":
        return torchgrow.Grower(
            model,
            opt,
            when=Every(sched["every"], start=sched["start"], times=sched["events"]),
            where=AllAtOnce(),
            how=Random(scale=SCALE, seed=seed),
            size=Fraction(FRACTION, of="initial"),
        )
    return None


def _forward64(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's output in eval mode, computed in float64 on a copy."""
    m = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        return m(x.double())


def watch_function(grower: torchgrow.Grower, log: list[dict[str, float]]) -> None:
    """Record, at every growth step, the output change in float64 and the output's size.

    ``GrowthEvent.max_abs_delta`` compares float32 outputs, so it also sees the
    rounding of the wider matrix products (~1e-7 relative); the float64
    comparison separates a real change of function from that rounding.
    """
    inner = grower.grow

    def grow(batch: Any, loss_fn: Any = None) -> list[torchgrow.GrowthEvent]:
        x = batch[0]
        before = _forward64(grower.model, x)
        events = inner(batch, loss_fn)
        after = _forward64(grower.model, x)
        log.append(
            {
                "step": grower.state.step,
                "max_abs_output": float(before.abs().max()),
                "max_abs_delta_float64": float((after - before).abs().max()),
            }
        )
        return events

    grower.grow = grow  # type: ignore[method-assign]


@torch.no_grad()
def alive_by_event(
    model: nn.Module, events: list[dict[str, Any]], x: torch.Tensor
) -> dict[str, dict[str, Any]]:
    """Per grown unit: the share of its original units and of each event's new units alive.

    A unit is alive when its producer's output (the pre-activation) is positive for at least
    one example of ``x`` (at any position, for a convolution): behind ReLU1 a unit negative
    on every input gets no gradient and never recovers.
    """
    modules = dict(model.named_modules())
    grown = list(dict.fromkeys(e["unit"] for e in events))
    peak: dict[str, torch.Tensor] = {}
    hooks = [
        modules[u].register_forward_hook(
            lambda _m, _i, out, u=u: peak.__setitem__(
                u, out.transpose(0, 1).reshape(out.shape[1], -1).amax(1)
            )
        )
        for u in grown
    ]
    was = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    out = {}
    for u in grown:
        alive = peak[u] > 0
        mine = [e for e in events if e["unit"] == u]
        first = mine[0]["width_before"]
        per = [float(alive[e["width_before"] : e["width_after"]].float().mean()) for e in mine]
        out[u] = {
            "original": float(alive[:first].float().mean()),
            "new": float(alive[first:].float().mean()),
            "per_event": per,
        }
    return out


def widths(model: nn.Module) -> dict[str, int]:
    return {u.name: u.width for u in growable_units(model)}


def shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(n, tuple(p.shape)) for n, p in model.named_parameters()]


# --------------------------------------------------------------------------- one run
def run(setup: Setup, dataset: tg_data.Dataset, method: str, seed: int) -> dict[str, Any]:
    """Train one (setup, method, seed); return what the report needs."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    steps_per_epoch = math.ceil(dataset.n_train / BATCH)
    total = setup.epochs * steps_per_epoch
    sched = scaled_schedule(total)
    torch.manual_seed(seed)
    model = setup.build(1.0 if method == "Big 1x" else FRACTION)
    width0 = widths(model)
    params0 = count_parameters(model)
    opt = torch.optim.SGD(
        model.parameters(), lr=setup.lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    grower = make_grower(method, model, opt, sched, seed)
    checks: list[dict[str, float]] = []
    if grower is not None:
        watch_function(grower, checks)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hist = fit(
            model,
            opt,
            dataset,
            epochs=setup.epochs,
            grower=grower,
            scheduler=scheduler,
            scheduler_interval="step",
            eval_every="last",
            batch_size=BATCH,
            seed=seed,
            progress=False,
        )
    wall = time.perf_counter() - t0
    last = hist.last
    assert last is not None and last["step"] == total, (last, total)
    big = setup.build(1.0)
    events = [
        {
            "step": e.step,
            "unit": e.unit,
            "width_before": e.width_before,
            "width_after": e.width_after,
            "max_abs_delta": e.max_abs_delta,
            "grad_norm_fan_in": e.grad_norm_fan_in,
            "solver": e.info.get("solver", e.info.get("how", "")),
            "seconds": e.seconds,
        }
        for e in hist.events
    ]
    warn_counts = Counter(
        f"{w.category.__name__}: {str(w.message).split(':')[0][:90]}" for w in caught
    )
    return {
        "setup": setup.key,
        "method": method,
        "seed": seed,
        "steps": total,
        "schedule": sched,
        "val_accuracy": last["val_accuracy"],
        "val_loss": last["val_loss"],
        "train_loss_last_epoch": last["train_loss"],
        "params_initial": params0,
        "params_final": last["parameters"],
        "training_flops": last["training_flops"],
        "flops_per_example_final": last["flops_per_example"],
        "widths_initial": width0,
        "widths_final": widths(model),
        "matches_big": shapes(model) == shapes(big),
        "params_big": count_parameters(big),
        "seconds": wall,
        "growth_seconds": sum(e["seconds"] for e in events),
        "events": events,
        "alive": alive_by_event(model, events, dataset.x_test[:1000]) if events else {},
        "function_checks": checks,
        "warnings": dict(warn_counts),
    }


# --------------------------------------------------------------------------- summary
def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else float("nan")


def _std(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (setup, method), aggregated over seeds."""
    rows = []
    keys = list(dict.fromkeys((r["setup"], r["method"]) for r in runs))
    big_flops = {
        s: _mean([r["training_flops"] for r in runs if r["setup"] == s and r["method"] == "Big 1x"])
        for s, _ in keys
    }
    for setup, method in keys:
        rs = [r for r in runs if r["setup"] == setup and r["method"] == method]
        accs = [r["val_accuracy"] for r in rs]
        evs = [e for r in rs for e in r["events"]]
        checks = [c for r in rs for c in r["function_checks"]]
        rel = [
            max(e["max_abs_delta"] for e in r["events"] if e["step"] == c["step"])
            / max(c["max_abs_output"], 1e-30)
            for r in rs
            for c in r["function_checks"]
        ]
        flops = _mean([r["training_flops"] for r in rs])
        alive_new = [a["new"] for r in rs for a in r.get("alive", {}).values()]
        alive_old = [a["original"] for r in rs for a in r.get("alive", {}).values()]
        solvers: dict[str, set[str]] = {}
        for e in evs:
            solvers.setdefault(e["unit"], set()).add(e["solver"])
        rows.append(
            {
                "setup": setup,
                "method": method,
                "seeds": len(rs),
                "accuracy_mean": _mean(accs),
                "accuracy_std": _std(accs),
                "accuracy": f"{100 * _mean(accs):.2f} ± {100 * _std(accs):.2f}",
                "params_initial": rs[0]["params_initial"],
                "params_final": rs[0]["params_final"],
                "widths_final": "/".join(str(w) for w in rs[0]["widths_final"].values()),
                "training_flops": flops,
                "GFLOPs": f"{flops / 1e9:.1f}",
                "FLOPs vs big": flops / big_flops[setup] if big_flops[setup] else float("nan"),
                "wall_s_mean": _mean([r["seconds"] for r in rs]),
                "growth_s_mean": _mean([r["growth_seconds"] for r in rs]) if evs else None,
                "growth_events": len(evs) // max(len(rs), 1),
                "max_abs_delta": max((e["max_abs_delta"] for e in evs), default=None),
                "max_rel_delta": max(rel, default=None),
                "max_abs_delta_float64": max(
                    (c["max_abs_delta_float64"] for c in checks), default=None
                ),
                "new_fan_in_grad_norm_mean": _mean([e["grad_norm_fan_in"] for e in evs])
                if evs
                else None,
                "new_units_alive": _mean(alive_new) if alive_new else None,
                "original_units_alive": _mean(alive_old) if alive_old else None,
                "ends_at_big_architecture": all(r["matches_big"] for r in rs),
                "solvers": {u: sorted(s) for u, s in solvers.items()},
            }
        )
    return rows


def _fmt_opt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def paired_differences(
    runs: list[dict[str, Any]], setup: str, a: str = "GradMax", b: str = "Random"
) -> list[float]:
    """Per-seed accuracy ``a - b``.

    Runs of one seed share the data order; the 0.25x runs (Small, GradMax,
    Random) also share the initial weights and are identical up to the first
    growth, so these differences remove most of the seed-to-seed spread.
    """
    by = {(r["method"], r["seed"]): r["val_accuracy"] for r in runs if r["setup"] == setup}
    seeds = sorted({s for (m, s) in by if m == a} & {s for (m, s) in by if m == b})
    return [by[(a, s)] - by[(b, s)] for s in seeds]


def _paired(d: list[float]) -> str:
    ahead = sum(x > 0 for x in d)
    return (
        f"{100 * _mean(d):+.2f} pp (per seed "
        + ", ".join(f"{100 * x:+.2f}" for x in d)
        + f"; > 0 on {ahead}/{len(d)} seeds)"
    )


def reading(runs: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    """Plain statements computed from the numbers (no hand-written conclusions)."""
    out = []
    for setup in dict.fromkeys(r["setup"] for r in rows):
        acc = {r["method"]: r for r in rows if r["setup"] == setup}
        if not all(m in acc for m in METHODS):
            continue
        spread = 100 * max(acc["GradMax"]["accuracy_std"], acc["Random"]["accuracy_std"])
        lo = 100 * acc["Small 0.25x"]["accuracy_mean"]
        hi = 100 * acc["Big 1x"]["accuracy_mean"]
        between = {m: lo <= 100 * acc[m]["accuracy_mean"] <= hi for m in GROWING}
        gn = {m: acc[m]["new_fan_in_grad_norm_mean"] for m in GROWING}
        out.append(
            f"- **{setup}**: GradMax − Random = "
            + _paired(paired_differences(runs, setup))
            + f"; the unpaired seed std is up to {spread:.2f} pp. "
            + "Over Small: GradMax "
            + _paired(paired_differences(runs, setup, "GradMax", "Small 0.25x"))
            + ", Random "
            + _paired(paired_differences(runs, setup, "Random", "Small 0.25x"))
            + ". Big over GradMax "
            + _paired(paired_differences(runs, setup, "Big 1x", "GradMax"))
            + f". Means: Small {lo:.2f} %, Big {hi:.2f} % (room for growth {hi - lo:.2f} pp); "
            + "grown mean between them: "
            + ", ".join(f"{m} {'yes' if between[m] else 'no'}" for m in GROWING)
            + ". New fan-in gradient norm right after growth (mean over events): GradMax "
            f"{_fmt_opt(gn['GradMax'], '.3g')} vs Random {_fmt_opt(gn['Random'], '.3g')}"
            + (
                f" ({gn['GradMax'] / gn['Random']:.1f}x)."
                if gn["GradMax"] is not None and gn["Random"]
                else "."
            )
        )
    return "\n".join(out) + "\n"


def markdown(
    runs: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    settings: dict[str, Any],
    wall: float,
    quick: bool,
) -> str:
    parts = []
    if quick:
        parts.append("**Quick smoke run (`--quick`): tiny subsets, not a result.**\n")
    parts.append(
        "GradMax (Evci et al. 2022) vs Random growth and the static 0.25x / 1x baselines, each "
        "trained the same number of steps with the same SGD (momentum 0.9, cosine decay to 0 "
        f"per step, batch {BATCH}, weight decay {WEIGHT_DECAY:g}). Both growing methods: zero "
        f"fan-in, fan-out at {SCALE:g} x the mean existing fan-out norm, all units at once, "
        f"12 events of {FRACTION:g} x the initial width (0.25x -> 1x). "
        "All models use `relu1` (derivative 1 at 0: zero-fan-in units can train). "
        f"Total wall time {wall / 60:.1f} min on {settings['threads']} torch threads "
        "(shared machine: times are indicative).\n"
    )
    for setup in dict.fromkeys(r["setup"] for r in rows):
        s = settings["setups"][setup]
        sched = s["schedule"]
        parts.append(
            f"\n## {setup}: {s['model']}\n\n"
            f"Data: {s['data']} ({s['n_train']} train / {s['n_test']} test), {s['epochs']} "
            f"epochs = {s['steps']} steps, lr {s['lr']:g}. Growth at steps {sched['start']}, "
            f"{sched['start'] + sched['every']}, ..., {sched['last']} (every {sched['every']}; "
            f"paper: 10,000 + k x 2,500 of 78,200). Widths {s['widths_small']} -> "
            f"{s['widths_big']}. Seeds {settings['seeds']}.\n\n"
        )
        table = []
        for r in rows:
            if r["setup"] != setup:
                continue
            table.append(
                {
                    "method": r["method"],
                    "test acc % (mean ± std)": r["accuracy"],
                    "final params": r["params_final"],
                    "training GFLOPs": r["GFLOPs"],
                    "FLOPs vs big": r["FLOPs vs big"],
                    "wall s/run": r["wall_s_mean"],
                    "growth s/run": _fmt_opt(r["growth_s_mean"], ".1f"),
                    "max abs Δ output at growth (float32)": _fmt_opt(r["max_abs_delta"], ".1e"),
                    "relative": _fmt_opt(r["max_rel_delta"], ".1e"),
                    "float64": _fmt_opt(r["max_abs_delta_float64"], ".1e"),
                    "new fan-in grad norm": _fmt_opt(r["new_fan_in_grad_norm_mean"], ".3g"),
                    "new units alive %": _fmt_opt(
                        None if r["new_units_alive"] is None else 100 * r["new_units_alive"], ".0f"
                    ),
                    "original alive %": _fmt_opt(
                        None
                        if r["original_units_alive"] is None
                        else 100 * r["original_units_alive"],
                        ".0f",
                    ),
                }
            )
        parts.append(markdown_table(table))
        solver_rows = [
            {"method": r["method"], **{u: "/".join(v) for u, v in r["solvers"].items()}}
            for r in rows
            if r["setup"] == setup and r["solvers"]
        ]
        if solver_rows:
            parts.append("\nInitialiser per grown layer (`GrowthEvent.info`):\n\n")
            parts.append(markdown_table(solver_rows))
        warn = Counter()
        for r in runs:
            if r["setup"] == setup:
                warn.update(r["warnings"])
        if warn:
            parts.append(
                "\nWarnings raised during the runs (count over all seeds and methods):\n\n"
            )
            parts.extend(f"- {n} x `{w}`\n" for w, n in sorted(warn.items()))
    parts.append("\n## Reading (computed from the numbers above)\n\n")
    parts.append(
        "The paper's claims: GradMax's final accuracy >= Random growth's (differences small "
        "on CIFAR), grown nets between the small and big baselines, and a larger gradient "
        "norm of the new weights for GradMax (about 3x Random in the student-teacher "
        "figure). These runs are short (hundreds to a few thousand steps, vs 78,200 in the "
        "paper), 3 seeds; 'per seed' differences compare runs with the same data order "
        "(and, for the 0.25x models, the same initial weights).\n\n"
    )
    parts.append(reading(runs, rows))
    parts.append(
        "\nNotes:\n\n"
        "- Function preservation, three ways, max over every growth step of every seed: "
        "'float32' is `GrowthEvent.max_abs_delta` (eval-mode outputs on the growth batch), "
        "which includes the rounding of the wider matrix products; 'relative' divides it by "
        "the largest output magnitude on that batch; 'float64' recomputes before/after "
        "outputs in float64 on copies of the model, which removes that rounding.\n"
        "- 'new fan-in grad norm': L2 norm of the loss gradient w.r.t. the new units' fan-in "
        "right after growth (GradMax's objective; `GrowthEvent.grad_norm_fan_in`), mean over "
        "events and seeds.\n"
        "- 'new units alive %': at the end, the share of the grown units whose pre-activation is "
        "positive for at least one of 1,000 test examples (any position for a convolution), mean "
        "over grown layers and seeds; 'original alive %' the same for the units the run started "
        "with. Behind ReLU1 a unit negative on every input gets no gradient and stays dead. Per "
        "event, in the JSON (`runs[].alive`).\n"
        "- Training FLOPs follow `torchgrow.why.TrainingCompute` as `fit` charges them: 3 x "
        "forward FLOPs per example per step at the current width, plus one forward of the growth "
        "batch per growth event. The cost of GradMax's solver (SVD, or subspace iteration with "
        "double backward when a max-pool sits between the pair) is *not* in the FLOPs; it shows "
        "in the wall time ('growth s/run').\n"
        "- `vgg_small` is used without BatchNorm, as in the official GradMax configs; growth with "
        "zero fan-in under train-mode BatchNorm is a different regime (the new channels' batch "
        "statistics are 0/0) and is not measured here.\n"
        "- The official VGG config uses `scale_method='fixed'`; here `mean_norm` is used for every "
        "model (the WRN/ImageNet setting), for both GradMax and Random.\n"
        "- Pairs conv -> max-pool -> conv are solved by the iterative solver (same objective as "
        "the closed form); the conv -> flatten -> linear pair falls back to random growth with a "
        "warning, as the official code does. For an MLP's last hidden layer the consumer has 10 "
        "outputs, so at most 10 directions carry gradient; GradMax fills the rest as documented "
        "(GradMaxRankWarning).\n"
    )
    return "".join(parts)


# --------------------------------------------------------------------------- main
def benchmark(
    setups: list[Setup],
    seeds: list[int],
    datasets: dict[str, tg_data.Dataset],
    method_list: tuple[str, ...] = METHODS,
    log: Callable[[str], None] | None = print,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run every (setup, seed, method); return the runs and the settings used."""
    runs: list[dict[str, Any]] = []
    settings: dict[str, Any] = {"seeds": seeds, "setups": {}}
    for setup in setups:
        ds = datasets[setup.key]
        total = setup.epochs * math.ceil(ds.n_train / BATCH)
        settings["setups"][setup.key] = {
            "data": setup.data,
            "model": setup.model,
            "n_train": ds.n_train,
            "n_test": ds.n_test,
            "epochs": setup.epochs,
            "steps": total,
            "lr": setup.lr,
            "schedule": scaled_schedule(total),
            "widths_small": "/".join(str(w) for w in widths(setup.build(FRACTION)).values()),
            "widths_big": "/".join(str(w) for w in widths(setup.build(1.0)).values()),
        }
        for seed in seeds:
            for method in method_list:
                r = run(setup, ds, method, seed)
                runs.append(r)
                if log is not None:
                    log(
                        f"{setup.key:26s} seed {seed} {method:12s} acc {r['val_accuracy']:.4f} "
                        f"params {r['params_final']:>8d} GFLOPs {r['training_flops'] / 1e9:8.1f} "
                        f"{r['seconds']:6.1f} s"
                    )
    return runs, settings


def readme_tables(runs: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, str]:
    """The fragments README.md quotes: the summary table and a paragraph computed from it."""
    table = [
        {
            "data / model": r["setup"],
            "method": r["method"],
            "test acc % (seeds)": f"{r['accuracy']} ({r['seeds']})",
            "final params": r["params_final"],
            "training GFLOPs": r["GFLOPs"],
            "FLOPs vs big": f"{r['FLOPs vs big']:.2f}",
            "new units alive %": _fmt_opt(
                None if r["new_units_alive"] is None else 100 * r["new_units_alive"], ".0f"
            ),
        }
        for r in rows
    ]
    setups = list(dict.fromkeys(r["setup"] for r in rows))
    diffs = {s: _mean(paired_differences(runs, s)) for s in setups}
    by = {(r["setup"], r["method"]): r for r in rows}
    alive = [by[(s, m)]["new_units_alive"] for s in setups for m in GROWING if (s, m) in by]
    alive = [a for a in alive if a is not None]
    flops = [by[(s, m)]["FLOPs vs big"] for s in setups for m in GROWING if (s, m) in by]
    text = (
        "GradMax − Random, per-seed means: "
        + ", ".join(f"{s} {100 * d:+.2f} points" for s, d in diffs.items())
        + f". Grown runs cost {min(flops):.2f}–{max(flops):.2f}× the big network's training "
        "FLOPs"
        + (
            f"; at the end {100 * min(alive):.0f}–{100 * max(alive):.0f} % of the grown units are "
            "alive (positive pre-activation on some test example)"
            if alive
            else ""
        )
        + "."
    )
    return {"summary": markdown_table(table), "reading": text}


def rerender(path: str | None = None) -> None:
    """Rewrite the Markdown (and JSON summary) from a results JSON, without retraining."""
    import json

    from benchmarks.common import RESULTS

    payload = json.loads(Path(path or RESULTS / "gradmax_images.json").read_text())
    for key in ("benchmark", "command", "meta", "tables"):
        payload.pop(key, None)
    runs = payload["runs"]
    payload["summary"] = summarise(runs)
    md = markdown(
        runs, payload["summary"], payload["settings"], payload["wall_seconds"], payload["quick"]
    )
    write_results(
        "gradmax_images",
        payload,
        md,
        argv=["--rerender"],
        tables=readme_tables(runs, payload["summary"]),
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="1 seed, tiny subsets (a smoke run)")
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; 1 quick)")
    ap.add_argument(
        "--setups", nargs="*", choices=sorted(SETUPS), default=None, help="subset of set-ups"
    )
    ap.add_argument("--threads", type=int, default=THREADS, help="torch threads")
    ap.add_argument(
        "--rerender",
        action="store_true",
        help="rewrite the report from results/gradmax_images.json without training",
    )
    args = ap.parse_args(argv)
    if args.rerender:
        rerender()
        return {}
    torch.set_num_threads(args.threads)
    n_seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    seeds = list(range(n_seeds))
    # --quick leaves the VGG set-up out unless asked for: its iterative solver (max-pools
    # between the pairs) takes half a minute even over 20 steps
    default = [k for k in SETUPS if not (args.quick and "vgg" in k)]
    chosen = [SETUPS[k] for k in (args.setups or default)]
    if args.quick:
        chosen = [
            Setup(
                s.key,
                s.data,
                s.model,
                s.build,
                QUICK[s.key]["epochs"],
                s.lr,
                QUICK[s.key]["n_train"],
                QUICK[s.key]["n_test"],
            )
            for s in chosen
        ]
    t0 = time.perf_counter()
    cache: dict[str, tg_data.Dataset] = {}
    datasets = {}
    for s in chosen:
        if s.data not in cache:
            cache[s.data] = load_data(s.data)
        ds = cache[s.data]
        if s.n_train is not None or s.n_test is not None:
            ds = ds.subset(s.n_train, s.n_test, seed=0)
        datasets[s.key] = ds
    runs, settings = benchmark(chosen, seeds, datasets)
    wall = time.perf_counter() - t0
    settings.update(
        {
            "threads": torch.get_num_threads(),
            "batch": BATCH,
            "optimizer": f"SGD momentum {MOMENTUM}, weight decay {WEIGHT_DECAY}, cosine to 0 "
            "per step",
            "scale": SCALE,
            "scale_method": "mean_norm",
            "fraction": FRACTION,
            "paper_schedule": PAPER,
        }
    )
    rows = summarise(runs)
    md = markdown(runs, rows, settings, wall, args.quick)
    payload = {
        "quick": args.quick,
        "settings": settings,
        "wall_seconds": wall,
        "summary": rows,
        "runs": runs,
        "threads": torch.get_num_threads(),
    }
    write_results("gradmax_images", payload, md, argv=argv, tables=readme_tables(runs, rows))
    return payload


if __name__ == "__main__":
    main()
