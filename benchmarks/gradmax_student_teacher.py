"""GradMax's student-teacher experiment (Evci et al. 2022, Fig. 2a and Fig. 3a), reproduced.

Set-up (the official notebook, METHODS.md section 2.7):

- teacher 10 -> 10 (ReLU) -> 10, no biases, weights U(-1, 1), seed 0;
  X ~ N(0, I), 1,000 x 10; Y = teacher(X) (``torchgrow.data.teacher``);
- student 10 -> 5 (ReLU1) -> 10, no biases, Keras' Glorot-uniform init, seed s;
- 1,500 full-batch steps of plain SGD (lr 0.1), MSE loss (mean over all entries);
- growth of 1 unit in ``fc1`` after steps 200, 400, 600, 800 and 1,000 (5 -> 10 units);
- methods: Random, GradMax, GradMaxOpt, Baseline-small (5 units), Baseline-big (10 units).

Fig. 2a protocol ("same state"): just before each growth of the Random run, the
model is copied and every growth rule is applied to its own copy; the norm of
the loss gradient w.r.t. the new fan-in right after growth is compared across
rules on identical model states.

Outputs: ``results/gradmax_student_teacher.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import statistics
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.common import markdown_table, results_dir, write_results
from torchgrow import Grower, data
from torchgrow import how as hows
from torchgrow.nn import ReLU1
from torchgrow.size import Units
from torchgrow.when import Manual, Schedule
from torchgrow.where import Layers

NAME = "gradmax_student_teacher"
METHODS = ("Baseline-small", "Random", "GradMax", "GradMaxOpt", "Baseline-big")
GROWING = ("Random", "GradMax", "GradMaxOpt")
SAME_STATE = ("Random", "GradMax", "GradMaxOpt")
GROWTH_STEPS = (200, 400, 600, 800, 1000)
STEPS = 1500
LR = 0.1
SCALE = 1.0  # the notebook's scale, with scale_method="mean_norm"
SMALL, BIG = 5, 10
D_IN = D_OUT = 10
# GradMaxOpt's Adam lr, swept in the same-state protocol only (the runs use the default)
OPT_LR_SWEEP = (0.01, 0.1, 1.0, 100.0)  # 100: the notebook's Fig. 2a rate
DEFAULT_OPT_LR = hows.GradMaxOpt().lr  # the official code's Adam default, 0.001
PRESERVE_TOL = 1e-6
SUBSAMPLE = 10

mse = F.mse_loss


# ------------------------------------------------------------------ set-up
def teacher_data(n: int = 1000) -> tuple[Tensor, Tensor]:
    """``(X, Y)`` of the notebook's teacher (seed 0, fixed across runs)."""
    ds = data.teacher(n=n, d_in=D_IN, d_hidden=BIG, d_out=D_OUT, seed=0)
    return ds.x_train, ds.y_train


def glorot_uniform_(weight: Tensor, gen: torch.Generator) -> None:
    """Keras' default kernel init: U(-l, l), l = sqrt(6 / (fan_in + fan_out))."""
    fan_out, fan_in = weight.shape
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        weight.copy_((torch.rand(weight.shape, generator=gen) * 2 - 1) * limit)


def student(seed: int, hidden: int = SMALL) -> nn.Sequential:
    """The student 10 -> hidden (ReLU1) -> 10, no biases, Glorot-uniform from ``seed``."""
    model = nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(D_IN, hidden, bias=False),
            act=ReLU1(),
            fc2=nn.Linear(hidden, D_OUT, bias=False),
        )
    )
    gen = torch.Generator().manual_seed(seed)
    glorot_uniform_(model.fc1.weight, gen)
    glorot_uniform_(model.fc2.weight, gen)
    return model


def make_how(method: str, seed: int, opt_lr: float | None = None) -> hows.How:
    """The growth rule of ``method`` (the notebook's scale 1.0, ``mean_norm``)."""
    if method == "Random":
        return hows.Random(scale=SCALE, scale_method="mean_norm", seed=seed)
    if method == "GradMax":
        return hows.GradMax(scale=SCALE, scale_method="mean_norm")
    if method == "GradMaxOpt":
        kw = {} if opt_lr is None else {"lr": opt_lr}
        return hows.GradMaxOpt(scale=SCALE, scale_method="mean_norm", seed=seed, **kw)
    raise ValueError(f"no growth rule for {method!r}")


def full_loss(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float(mse(model(x), y))


def grow_copy(model: nn.Module, rule: hows.How, x: Tensor, y: Tensor) -> dict[str, Any]:
    """Grow a deep copy of ``model`` by one ``fc1`` unit with ``rule``; the event's numbers."""
    twin = copy.deepcopy(model)
    grower = Grower(  # measured by a backward pass: compared with the closed form below
        twin, None, when=Manual(), where=Layers(["fc1"]), how=rule, size=Units(1), loss_fn=mse,
        measure="full",
    )  # fmt: skip
    (ev,) = grower.grow((x, y))
    return {
        "grad_norm_fan_in": ev.grad_norm_fan_in,
        "max_abs_delta": ev.max_abs_delta,
        "seconds": ev.seconds,
        "info": {k: v for k, v in ev.info.items() if isinstance(v, (int, float, str))},
    }


def same_state(
    model: nn.Module,
    step: int,
    seed: int,
    random_rule: hows.Random,
    x: Tensor,
    y: Tensor,
    opt_lrs: Sequence[float],
) -> dict[str, Any]:
    """Fig. 2a: every rule applied to a copy of the Random run's model just before it grows.

    The Random rule gets the run's generator state, so it draws exactly what the
    run is about to draw (the run's own event must give the same norm).
    """
    rnd = make_how("Random", seed)
    rnd.load_state_dict(copy.deepcopy(random_rule.state_dict()))
    gm = hows.GradMax(scale=SCALE, scale_method="mean_norm")
    opt_seed = 1000 * seed + step  # a different random start at every growth
    out: dict[str, Any] = {
        "step": step,
        "loss": full_loss(model, x, y),
        "Random": grow_copy(model, rnd, x, y),
        "GradMax": grow_copy(model, gm, x, y),
        "GradMaxOpt": grow_copy(model, make_how("GradMaxOpt", opt_seed), x, y),
    }
    # the closed-form optimum for one unit: r * sigma_1(M), r = mean norm of fc2's columns
    r = float(model.fc2.weight.detach().norm(dim=0).mean())
    out["gradmax_optimum"] = r * out["GradMax"]["info"]["sigma_1"]
    # function preservation without float32 rounding: the same growths in float64
    x64, y64, m64 = x.double(), y.double(), copy.deepcopy(model).double()
    out["max_abs_delta_float64"] = {
        "Random": grow_copy(m64, make_how("Random", opt_seed), x64, y64)["max_abs_delta"],
        "GradMax": grow_copy(m64, hows.GradMax(scale=SCALE), x64, y64)["max_abs_delta"],
    }
    out["GradMaxOpt_lr_sweep"] = {
        str(lr): grow_copy(model, make_how("GradMaxOpt", opt_seed, opt_lr=lr), x, y)[
            "grad_norm_fan_in"
        ]
        for lr in opt_lrs
    }
    return out


def train(
    method: str,
    seed: int,
    x: Tensor,
    y: Tensor,
    steps: int = STEPS,
    growth_steps: Sequence[int] = GROWTH_STEPS,
    opt_lrs: Sequence[float] = (),
) -> dict[str, Any]:
    """One run: ``losses[t]`` is the full-batch loss after ``t`` SGD steps (``t = 0..steps``)."""
    model = student(seed, BIG if method == "Baseline-big" else SMALL)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.0)
    grower = rule = None
    if method in GROWING:
        rule = make_how(method, seed)
        grower = Grower(
            model,
            opt,
            when=Schedule(list(growth_steps)),
            where=Layers(["fc1"]),
            how=rule,
            size=Units(1),
            loss_fn=mse,
        )
    growth_set = set(growth_steps)
    losses: list[float] = []
    events: list[dict[str, Any]] = []
    probes: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for t in range(1, steps + 1):
        loss = mse(model(x), y)
        losses.append(float(loss.detach()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if grower is None:
            continue
        if method == "Random" and t in growth_set:
            probes.append(same_state(model, t, seed, rule, x, y, opt_lrs))
        for ev in grower.step((x, y)):
            events.append(
                {
                    "step": ev.step,
                    "width_after": ev.width_after,
                    "grad_norm_fan_in": ev.grad_norm_fan_in,
                    "grad_norm_fan_out": ev.grad_norm_fan_out,
                    "max_abs_delta": ev.max_abs_delta,
                    "max_abs_output": float(model(x).detach().abs().max()),
                    "seconds": ev.seconds,
                }
            )
    losses.append(full_loss(model, x, y))
    return {
        "method": method,
        "seed": seed,
        "hidden_final": model.fc1.out_features,
        "losses": losses,
        "final_loss": losses[-1],
        "events": events,
        "same_state": probes,
        "seconds": time.perf_counter() - t0,
    }


def run_seed(
    seed: int,
    methods: Sequence[str] = METHODS,
    steps: int = STEPS,
    growth_steps: Sequence[int] = GROWTH_STEPS,
    opt_lrs: Sequence[float] = (),
    data_xy: tuple[Tensor, Tensor] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every method of ``methods`` for student seed ``seed``: method -> run (see :func:`train`).

    The Random run (if asked for) carries the same-state probes (Fig. 2a) in
    ``run["same_state"]``, one per growth step.
    """
    x, y = data_xy if data_xy is not None else teacher_data()
    return {m: train(m, seed, x, y, steps, growth_steps, opt_lrs) for m in methods}


# ------------------------------------------------------------------ summaries
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    vals = list(values)
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def pm(values: Sequence[float], digits: int = 3) -> str:
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def grad_norm_rows(runs: list[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    probes = [r["Random"]["same_state"] for r in runs]
    rows = []
    for i in range(len(probes[0])):
        at = [p[i] for p in probes]
        norm = {m: [a[m]["grad_norm_fan_in"] for a in at] for m in SAME_STATE}
        ratios = [g / r for g, r in zip(norm["GradMax"], norm["Random"], strict=True)]
        opt_vs = [o / g for o, g in zip(norm["GradMaxOpt"], norm["GradMax"], strict=True)]
        rows.append(
            {
                "growth": i + 1,
                "step": at[0]["step"],
                "Random": pm(norm["Random"]),
                "GradMax": pm(norm["GradMax"]),
                "GradMaxOpt": pm(norm["GradMaxOpt"]),
                "GradMax/Random (mean of ratios)": pm(ratios, 2),
                "GradMax/Random (ratio of means)": f"{mean_std(norm['GradMax'])[0] / mean_std(norm['Random'])[0]:.2f}",
                "min per-seed ratio": f"{min(ratios):.2f}",
                "GradMaxOpt/GradMax": pm(opt_vs, 2),
            }
        )
    return rows


def loss_rows(runs: list[dict[str, dict[str, Any]]], methods: Sequence[str]) -> list[dict]:
    rows = []
    for m in methods:
        finals = [r[m]["final_loss"] for r in runs]
        rows.append(
            {
                "method": m,
                "hidden units at the end": runs[0][m]["hidden_final"],
                f"final loss (step {len(runs[0][m]['losses']) - 1})": pm(finals),
                "min": f"{min(finals):.3f}",
                "max": f"{max(finals):.3f}",
                "seeds": len(finals),
            }
        )
    return rows


def curve_stats(runs: list[dict[str, dict[str, Any]]], method: str) -> tuple[list, list, list]:
    """Per step: mean, sample std and minimum over seeds of the loss."""
    curves = [r[method]["losses"] for r in runs]
    means, stds, mins = [], [], []
    for vals in zip(*curves, strict=True):
        m, s = mean_std(vals)
        means.append(m)
        stds.append(s)
        mins.append(min(vals))
    return means, stds, mins


def plot(
    runs: list[dict[str, dict[str, Any]]],
    methods: Sequence[str],
    growth_steps: Sequence[int],
    path: Path,
) -> None:
    """Fig. 3a: training loss (log scale), mean over seeds with a +-std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        "Baseline-small": "tab:gray",
        "Random": "tab:blue",
        "GradMax": "tab:red",
        "GradMaxOpt": "tab:orange",
        "Baseline-big": "black",
    }
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for m in methods:
        mean, std, low = curve_stats(runs, m)
        steps = list(range(len(mean)))
        # mean - std can be negative (log scale): the band stops at the best seed's loss
        lo = [max(a - b, c) for a, b, c in zip(mean, std, low, strict=True)]
        hi = [a + b for a, b in zip(mean, std, strict=True)]
        ax.plot(steps, mean, label=m, color=colors.get(m), lw=1.6)
        ax.fill_between(steps, lo, hi, color=colors.get(m), alpha=0.15, lw=0)
    for i, s in enumerate(growth_steps):
        ax.axvline(s, color="0.4", ls=":", lw=1, label="growth (+1 unit)" if i == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("SGD step (full batch)")
    ax.set_ylabel("training loss (MSE)")
    ax.set_title(
        f"Student-teacher, 5 -> 10 hidden units: mean ± std over {len(runs)} seeds", fontsize=10
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _ulp(x: float) -> float:
    """Spacing of float32 numbers at magnitude ``x``."""
    return math.ldexp(torch.finfo(torch.float32).eps, math.frexp(x)[1] - 1)


def _rounded(obj: Any, digits: int = 6) -> Any:
    """``obj`` with every float rounded to ``digits`` significant digits (a smaller JSON)."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v, digits) for v in obj]
    return obj


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# the independent numpy re-implementation of METHODS.md 2.8 (5 seeds): final MSE mean, std
REFERENCE_FINAL = {
    "Baseline-small": (0.77, 0.03),
    "Random": (0.20, 0.03),
    "GradMax": (0.18, 0.06),
    "Baseline-big": (0.05, 0.03),
}


def reading(
    grad_rows: list[dict],
    runs: list[dict[str, dict[str, Any]]],
    methods: Sequence[str],
    acc: dict[str, Any],
    sweep: dict,
) -> str:
    """A short reading of the results, against the expectations of METHODS.md 2.8-2.9."""
    n = len(runs)
    finals = {m: [r[m]["final_loss"] for r in runs] for m in methods}
    means = {m: mean_std(v)[0] for m, v in finals.items()}
    order = sorted(means, key=means.get)
    ratios = [float(r["GradMax/Random (ratio of means)"]) for r in grad_rows]
    lines = [
        "## Reading\n",
        f"- Gradient norm at growth (same state, {n} seeds): GradMax / Random ratio of means "
        f"{min(ratios):.2f}-{max(ratios):.2f} over the {len(ratios)} growths (an independent "
        "re-implementation measured about 3x; the paper reports no number; acceptance "
        f">= 2x): the acceptance {'holds' if acc['ratio_ok'] else 'FAILS'}. The smallest per-seed "
        f"ratio is {acc['min_per_seed_ratio']:.2f}; the ratio of means is lowest at growth "
        f"{1 + ratios.index(min(ratios))}.",
        f"- GradMax's norm equals the closed-form optimum r·sigma_1 up to a relative "
        f"{acc['max_rel_err_vs_optimum']:.1e}; the same-state Random copy reproduces the Random "
        f"run's own growth exactly (max difference {acc['random_probe_matches_run']:.1g}).",
        f"- Function preserved: max |Δ output| over all {acc['growth_events']} growths "
        f"(runs and same-state copies) is {acc['max_abs_delta']:.3g}, "
        f"{'within' if acc['preserved_ok'] else 'ABOVE'} the absolute {PRESERVE_TOL:g}; relative "
        f"to max |output| it is {acc['max_rel_delta']:.2g} (one to two float32 ulps: the widened "
        "matmul sums in a different order). The same growths in float64 change the output by at "
        f"most {acc['max_abs_delta_float64']:.2g}: the function is preserved up to rounding"
        + (
            "."
            if acc["preserved_ok"]
            else f"; {acc['growths_above_tol']} growths exceed the absolute {PRESERVE_TOL:g}, "
            "which is about one float32 ulp at these outputs (max |output| "
            f"{acc['max_abs_output']:.1f}, ulp {_ulp(acc['max_abs_output']):.2g}): too tight a bound "
            "for float32."
        ),
        f"- Final loss order (low to high): {' < '.join(order)}; expected big < GradMax <= "
        "Random < small. Measured vs the numpy re-implementation: "
        + "; ".join(
            f"{m} {pm(finals[m])} vs {REFERENCE_FINAL[m][0]:.2f} ± {REFERENCE_FINAL[m][1]:.2f}"
            for m in methods
            if m in REFERENCE_FINAL
        )
        + ".",
    ]
    if "GradMax" in finals and "Random" in finals:
        wins = sum(g < r for g, r in zip(finals["GradMax"], finals["Random"], strict=True))
        lines.append(
            f"- Seed by seed, GradMax ends below Random in {wins} of {n} seeds (same student "
            f"init). Gap of the means {means['Random'] - means['GradMax']:.3f}, std over seeds "
            f"{mean_std(finals['Random'])[1]:.3f} (Random) and {mean_std(finals['GradMax'])[1]:.3f} "
            "(GradMax)."
        )
    closed = sweep["GradMax (closed form)"]
    best_adam = max(v for k, v in sweep.items() if k.startswith("lr "))
    below = all(float(r["GradMaxOpt/GradMax"].split(" ± ")[0]) < 1 for r in grad_rows)
    lines.append(
        f"- GradMaxOpt (100 Adam steps, re-projected; default lr {DEFAULT_OPT_LR:g}) "
        + ("stays below" if below else "does not always stay below")
        + " GradMax's closed form (GradMaxOpt/GradMax column). Same-state mean norm over seeds "
        "and growths: "
        + ", ".join(f"{k}: {v:.3f}" for k, v in sweep.items())
        + (
            f". At the default rate it reaches {sweep[_default_key()] / closed:.0%} of the closed "
            f"form; no Adam lr reaches it (best {best_adam / closed:.0%}): Adam's "
            "per-coordinate step normalisation, followed by re-projection onto the norm sphere, "
            "stalls short of the top singular vector; the official `AddGradmaxOptim` recipe "
            "(Adam + re-projection) behaves so, rather than a bug."
            if best_adam < 0.99 * closed
            else "."
        )
    )
    return "\n".join(lines) + "\n"


def _default_key() -> str:
    return f"lr {DEFAULT_OPT_LR:g} (default)"


def summary(
    grad_rows: list[dict], runs: list, acc: dict, sweep: dict, lr_sweep: Sequence[float]
) -> str:
    """The README's paragraph: every number in it comes from this run."""
    ratios = [float(r["GradMax/Random (ratio of means)"]) for r in grad_rows]
    finals = {m: [r[m]["final_loss"] for r in runs] for m in ("GradMax", "Random")}
    wins = sum(g < r for g, r in zip(finals["GradMax"], finals["Random"], strict=True))
    closed = sweep["GradMax (closed form)"]
    best = max(v for k, v in sweep.items() if k.startswith("lr "))
    return (
        f"GradMax's fan-in gradient is {min(ratios):.1f}–{max(ratios):.1f}× Random's (an "
        "independent re-implementation measured about 3×; the paper gives the figure, not a "
        f"number), equal to the closed-form optimum r·σ₁ to {acc['max_rel_err_vs_optimum']:.0e}, "
        f"and GradMax ends below Random in {wins} of {len(runs)} seeds. GradMaxOpt (100 Adam "
        f"steps, as in the official code) reaches {sweep[_default_key()] / closed:.0%} of the "
        f"closed form at the official rate {DEFAULT_OPT_LR:g} and at most {best / closed:.0%} at "
        f"the rates tried ({', '.join(f'{lr:g}' for lr in lr_sweep)}): Adam's "
        "per-coordinate steps with re-projection stall short of the top singular vector."
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=10, help="student seeds 0..N-1 (default 10)")
    ap.add_argument("--quick", action="store_true", help="2 seeds (a smoke run)")
    ap.add_argument("--out", type=Path, default=None, help="folder of the PNG (default: results)")
    args = ap.parse_args(argv)
    n_seeds = 1 if args.quick else args.seeds
    steps, growth_steps = (300, (60, 120, 180)) if args.quick else (STEPS, GROWTH_STEPS)
    lr_sweep = OPT_LR_SWEEP[:1] if args.quick else OPT_LR_SWEEP
    t0 = time.perf_counter()
    with torch_threads(1):
        x, y = teacher_data()
        runs = [
            run_seed(s, METHODS, steps, growth_steps, lr_sweep, data_xy=(x, y))
            for s in range(n_seeds)
        ]
    wall = time.perf_counter() - t0

    by_seed = [r["Random"]["same_state"] for r in runs]
    probes = [p for ps in by_seed for p in ps]
    deltas = [ev["max_abs_delta"] for r in runs for m in GROWING for ev in r[m]["events"]]
    rel = [
        ev["max_abs_delta"] / ev["max_abs_output"]
        for r in runs
        for m in GROWING
        for ev in r[m]["events"]
    ]
    deltas += [p[m]["max_abs_delta"] for p in probes for m in SAME_STATE]
    # the same-state Random copy must draw exactly what the Random run drew
    run_vs_probe = max(
        abs(ev["grad_norm_fan_in"] - p["Random"]["grad_norm_fan_in"])
        for r in runs
        for ev, p in zip(r["Random"]["events"], r["Random"]["same_state"], strict=True)
    )
    per_seed_ratios = [
        p["GradMax"]["grad_norm_fan_in"] / p["Random"]["grad_norm_fan_in"] for p in probes
    ]
    grad_rows = grad_norm_rows(runs)
    ratio_of_means = [
        mean_std([p[i]["GradMax"]["grad_norm_fan_in"] for p in by_seed])[0]
        / mean_std([p[i]["Random"]["grad_norm_fan_in"] for p in by_seed])[0]
        for i in range(len(growth_steps))
    ]
    acc = {
        "ratio_of_means": ratio_of_means,
        "ratio_of_means_min": min(ratio_of_means),
        "min_per_seed_ratio": min(per_seed_ratios),
        "ratio_ok": min(ratio_of_means) >= 2.0,
        "max_abs_delta": max(deltas),
        "max_rel_delta": max(rel),
        "preserved_ok": max(deltas) <= PRESERVE_TOL,
        "growths_above_tol": sum(d > PRESERVE_TOL for d in deltas),
        "max_abs_output": max(
            ev["max_abs_output"] for r in runs for m in GROWING for ev in r[m]["events"]
        ),
        "max_abs_delta_float64": max(
            v for p in probes for v in p["max_abs_delta_float64"].values()
        ),
        "growth_events": len(deltas),
        "max_rel_err_vs_optimum": max(
            abs(p["GradMax"]["grad_norm_fan_in"] - p["gradmax_optimum"]) / p["gradmax_optimum"]
            for p in probes
        ),
        "random_probe_matches_run": run_vs_probe,
    }
    sweep = {_default_key(): mean_std([p["GradMaxOpt"]["grad_norm_fan_in"] for p in probes])[0]}
    for lr in lr_sweep:
        sweep[f"lr {lr}"] = mean_std([p["GradMaxOpt_lr_sweep"][str(lr)] for p in probes])[0]
    sweep["GradMax (closed form)"] = mean_std([p["GradMax"]["grad_norm_fan_in"] for p in probes])[0]
    own = [
        {
            "method": m,
            **{
                f"growth {i + 1}": pm([r[m]["events"][i]["grad_norm_fan_in"] for r in runs])
                for i in range(len(growth_steps))
            },
        }
        for m in GROWING
    ]
    loss_table = loss_rows(runs, METHODS)
    png = (args.out or results_dir(args.quick)) / f"{NAME}.png"
    plot(runs, METHODS, growth_steps, png)

    md = (
        f"Student-teacher (10 -> 5..10 -> 10, ReLU1, no biases), {steps} full-batch SGD steps "
        f"(lr {LR}), +1 unit in fc1 after steps {list(growth_steps)}, scale {SCALE} x mean_norm; "
        f"{n_seeds} student seeds, teacher seed 0. Mean ± sample std over seeds. "
        f"Wall time {wall:.0f} s (1 thread).\n\n"
        "## Norm of the loss gradient w.r.t. the new fan-in right after growth (Fig. 2a, same state)\n\n"
        "Each rule is applied to a copy of the Random run's model just before it grows.\n\n"
        + markdown_table(grad_rows)
        + "\n## Final training loss\n\n"
        + markdown_table(loss_table)
        + f"\n![training loss]({NAME}.png)\n\n"
        "## Gradient norm at growth in each method's own run (different states)\n\n"
        + markdown_table(own)
        + "\n"
        + reading(grad_rows, runs, METHODS, acc, sweep)
    )
    payload = {
        "quick": args.quick,
        "seeds": n_seeds,
        "wall_seconds": wall,
        "threads": 1,
        "setup": {
            "teacher": "10 -> 10 (ReLU) -> 10, no biases, U(-1, 1), seed 0 (torchgrow.data.teacher)",
            "data": "X ~ N(0, I), 1000 x 10",
            "student": "10 -> 5 (ReLU1) -> 10, no biases, Glorot uniform, seed s",
            "optimizer": f"SGD lr {LR}, no momentum, full batch, {steps} steps",
            "growth_steps": list(growth_steps),
            "scale": SCALE,
            "scale_method": "mean_norm",
            "loss": "torch.nn.functional.mse_loss (mean)",
            "gradmaxopt_lr_sweep": list(lr_sweep),
            "gradmaxopt_default_lr": DEFAULT_OPT_LR,
        },
        "acceptance": acc,
        "grad_norm_same_state": grad_rows,
        "grad_norm_own_run": own,
        "final_loss": loss_table,
        "gradmaxopt_lr_sweep_mean_norm": sweep,
        "loss_curves_every_10_steps": _rounded(
            {
                m: {
                    "steps": list(range(0, steps + 1, SUBSAMPLE)),
                    "mean": curve_stats(runs, m)[0][::SUBSAMPLE],
                    "std": curve_stats(runs, m)[1][::SUBSAMPLE],
                    "min": curve_stats(runs, m)[2][::SUBSAMPLE],
                }
                for m in METHODS
            }
        ),
        "runs": _rounded(
            [
                {
                    m: {
                        "seed": run["seed"],
                        "final_loss": run["final_loss"],
                        "losses_every_10_steps": run["losses"][::SUBSAMPLE],
                        "events": run["events"],
                        "same_state": run["same_state"],
                        "seconds": run["seconds"],
                    }
                    for m, run in r.items()
                }
                for r in runs
            ]
        ),
        "plot": png.name,
    }
    tables = {
        "same_state": markdown_table(grad_rows),
        "final_loss": markdown_table(loss_table),
        "summary": summary(grad_rows, runs, acc, sweep, lr_sweep),
    }
    write_results(NAME, payload, md, argv=argv, tables=tables)
    print(f"wall time {wall:.1f} s; plot {png}")
    return payload


if __name__ == "__main__":
    main()
