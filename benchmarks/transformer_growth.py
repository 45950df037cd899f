"""Growing a character-level GPT: each method against the target trained from scratch.

The target is ``models.gpt`` with 4 layers, d_model 128, 4 heads of 32, FFN 512 and
context 64 on ``data.text_chars`` (CPython's bundled documentation). Every method
gets the same number of optimizer steps at batch 32 x 64 tokens and the same data
order; the growing ones start smaller, so they spend fewer FLOPs. Training FLOPs
per token are ``6 * (weights in matrix multiplies) + 12 * layers * T * d_attn``
(the full score matrix), counted at the executed shapes (a masked structure is
charged from the moment it exists), the small phases included. Validation loss
is measured every ``eval_every`` steps and around every growth.

Methods (their settings follow each paper's protocol scaled to the run; the
deviations are named in ``docs/transformers.md``):

* ``scratch``: the target, warm-up + cosine over all steps.
* ``G_stack``: 1 layer, stacked g=4 at 3.3 % of the steps (the official README's
  10B-of-300B practice); fresh AdamW and a new warm-up + cosine after.
* ``MIDAS``: 1 layer, a copy of the middle block at 5, 15 and 30 %; one schedule,
  optimizer carried.
* ``MSG``: 1 layer, d_model 64, 2 heads, FFN 128: FFN -> 512 at 10 %, layers
  1 -> 2 at 20 %, hidden size 64 -> 128 at 30 % (masked norms), heads 2 -> 4 at 40 %,
  layers 2 -> 4 at 50 %, each through a mask ramped over 5 % of the steps; new weights N(0, 0.02); linear schedule rewound to
  the peak at the first two events; optimizer carried. ``MSG, d_model held`` is the
  same schedule without the hidden-size event (d_model 128 from the start).
* ``HyperCloning``: 4 layers at d_model 64 (2 heads, FFN 256) for 40 %, cloned x2
  (residual stream, heads, FFN); fresh AdamW, warm-up + cosine over the rest.
  ``HyperCloning 10 dB`` adds the paper's symmetry-breaking noise at 10 dB.
* ``LEMON``: 2 layers at d_model 64 for 40 %, cloned x2 in width with every
  reader's weight split ``W - C`` / ``C`` over the copies it reads (``C`` = 0.1 x
  N(0, 0.02), LEMON's ``comp`` rule) and each block followed by an identity copy;
  fresh AdamW, re-warm-up from 0.1 of the peak over 4 % of the steps, cosine to 0.1.

Each contender is the :mod:`torchgrow.methods` class of that name, run through
its ``update(step)``; the small phases of HyperCloning and LEMON run their own
warm-up + cosine schedule to the expansion.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import markdown_table, results_dir, write_results
from torchgrow import data as tg_data
from torchgrow import methods, models

TARGET = {"n_layer": 4, "d_model": 128, "n_head": 4, "d_ff": 512}
BATCH, CONTEXT, PEAK_LR = 32, 64, 2e-3
THREADS = 2


# ---------------------------------------------------------------- FLOPs and training pieces
def flops_per_token(model: nn.Module, context: int = CONTEXT) -> float:
    """``6 * P_mm + 12 * sum over blocks of T * d_attn`` (training, per token)."""
    p_mm = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    attn = sum(context * b.attn.q.out_features for b in model.blocks)
    return 6.0 * p_mm + 12.0 * attn


def param_groups(model: nn.Module, weight_decay: float = 0.1) -> list[dict[str, Any]]:
    """Decay on matrices of linear layers only (not biases, norms, embeddings)."""
    decay, rest = [], []
    for mod in model.modules():
        for name, p in mod.named_parameters(recurse=False):
            (decay if isinstance(mod, nn.Linear) and name == "weight" else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def adamw(model: nn.Module) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model), lr=PEAK_LR, betas=(0.9, 0.95))


class Scratch(methods.ScheduledGrowth):
    """The target trained from scratch: no events, one warm-up + cosine schedule."""

    name = "scratch"
    events: list = []


@dataclass
class Contender:
    """A method's name, the model it starts from, and how to build its schedule."""

    name: str
    start: dict[str, int]
    build: Callable[..., methods.ScheduledGrowth]  # (model, optimizer, steps, example)


def contenders() -> list[Contender]:
    """The contenders (see the module docstring); each is a :mod:`torchgrow.methods` class."""
    small_w = {"n_layer": 4, "d_model": 64, "n_head": 2, "d_ff": 256}
    msg_start = {"n_layer": 1, "d_model": 64, "n_head": 2, "head_dim": 32, "d_ff": 128}
    msg_target = {k: TARGET[k] for k in ("d_ff", "n_head", "n_layer", "d_model")}
    return [
        Contender("scratch", TARGET, Scratch),
        Contender("G_stack", {**TARGET, "n_layer": 1}, methods.GStack),
        Contender("MIDAS", {**TARGET, "n_layer": 1}, methods.MIDAS),
        Contender("MSG", msg_start, lambda *a: methods.MSG(*a, **msg_target)),
        Contender(
            "MSG, d_model held",
            {**msg_start, "d_model": TARGET["d_model"]},
            lambda *a: methods.MSG(*a, **{**msg_target, "d_model": None}),
        ),
        Contender("HyperCloning", small_w, methods.HyperCloning),
        Contender("HyperCloning 10 dB", small_w, lambda *a: methods.HyperCloning(*a, snr_db=10.0)),
        Contender("LEMON", {**small_w, "n_layer": 2}, methods.LEMON),
    ]


# ---------------------------------------------------------------- one run
def _eval(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 128) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(x[i : i + batch])
            total += float(
                F.cross_entropy(logits.flatten(0, 1), y[i : i + batch].flatten(), reduction="sum")
            )
    model.train()
    return total / y.numel()


def run(contender: Contender, text: tg_data.TextData, steps: int, seed: int, eval_every: int,
        n_eval: int | None, batch: int = BATCH) -> dict[str, Any]:  # fmt: skip
    torch.manual_seed(seed)
    model = models.gpt(text.vocab_size, context=CONTEXT, **contender.start)
    vx, vy = text.windows("valid")
    tx, ty = text.windows("test")
    if n_eval is not None:
        vx, vy, tx, ty = vx[:n_eval], vy[:n_eval], tx[:n_eval], ty[:n_eval]
    method = contender.build(model, adamw(model), steps, vx[:8])
    event_steps = set(method.event_steps())
    batches = text.batches(batch, seed=1000 + seed)
    flops, curve, growths = 0.0, [], []
    t0 = time.perf_counter()
    for step in range(steps):
        before = _eval(model, vx, vy) if step in event_steps else None
        for _ in method.update(step):
            after = _eval(model, vx, vy)
            e = method.log[-1]
            growths.append({"step": step, "event": e["event"], "val_before": before,
                            "val_after": after, "max_abs_dout": e["max_abs_dout"],
                            "params_after": models.count_parameters(model)})  # fmt: skip
            curve.append({"step": step, "flops": flops, "val": after})
        if step % eval_every == 0 and not (curve and curve[-1]["step"] == step):
            curve.append({"step": step, "flops": flops, "val": _eval(model, vx, vy)})
        xb, yb = next(batches)
        loss = F.cross_entropy(model(xb).flatten(0, 1), yb.flatten())
        method.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        method.optimizer.step()
        flops += flops_per_token(model) * batch * CONTEXT
    curve.append({"step": steps, "flops": flops, "val": _eval(model, vx, vy)})
    return {
        "method": contender.name, "seed": seed, "start": contender.start, "curve": curve,
        "growths": growths, "flops": flops, "val": curve[-1]["val"], "test": _eval(model, tx, ty),
        "params": models.count_parameters(model), "seconds": time.perf_counter() - t0,
        "small_flops": _flops_before(curve, growths[-1]["step"]) if growths else 0.0,
        "description": method.describe(),
        "asymmetry": asymmetry(model, vx[:32]) if contender.name.startswith(("Hyper", "LEMON"))
        else None,
    }  # fmt: skip


def asymmetry(model: nn.Module, x: torch.Tensor) -> float:
    """``||a - b|| / ||a||`` of the two halves of the residual stream before the final norm.

    A width-cloned model starts as two exact copies (0); without noise, deterministic
    kernels keep them equal, so this says whether the cloned halves ever diverged.
    """
    seen = {}
    handle = model.norm_f.register_forward_pre_hook(lambda m, a: seen.update(h=a[0].detach()))
    try:
        with torch.no_grad():
            model.eval()
            model(x)
            model.train()
    finally:
        handle.remove()
    a, b = seen["h"].chunk(2, dim=-1)
    return float((a - b).norm() / a.norm().clamp_min(1e-12))


def _flops_before(curve: list[dict[str, Any]], step: int) -> float:
    return max((c["flops"] for c in curve if c["step"] <= step), default=0.0)


# ---------------------------------------------------------------- reading
def crossing(curve: list[dict[str, Any]], target: float) -> float | None:
    """Training FLOPs at the first evaluation with loss <= target, interpolated in log-FLOPs."""
    prev = None
    for c in curve:
        if c["val"] <= target:
            if prev is None or prev["flops"] <= 0:
                return c["flops"]
            a, b = math.log(prev["flops"]), math.log(c["flops"])
            frac = (prev["val"] - target) / max(1e-12, prev["val"] - c["val"])
            return math.exp(a + frac * (b - a))
        prev = c
    return None


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    seeds = sorted({r["seed"] for r in runs})
    names = list(dict.fromkeys(r["method"] for r in runs))
    rows = []
    for name in names:
        ratios, reuse, vals, tests, flops, secs = [], [], [], [], [], []
        for seed in seeds:
            scratch = next(r for r in runs if r["method"] == "scratch" and r["seed"] == seed)
            target = sum(c["val"] for c in scratch["curve"][-2:]) / 2
            c_scratch = crossing(scratch["curve"], target)
            r = next(r for r in runs if r["method"] == name and r["seed"] == seed)
            c = crossing(r["curve"], target)
            ratios.append(None if c is None or not c_scratch else c / c_scratch)
            reuse.append(None if c is None or not c_scratch else (c - r["small_flops"]) / c_scratch)
            vals.append(r["val"])
            tests.append(r["test"])
            flops.append(r["flops"])
            secs.append(r["seconds"])
        reached = [x for x in ratios if x is not None]
        rows.append({
            "method": name,
            "reached L* (seeds)": f"{len(reached)}/{len(seeds)}",
            "FLOPs to L* / scratch": _mean_std(reached) if reached else "not reached",
            "saved": f"{100 * (1 - sum(reached) / len(reached)):.0f} %" if reached else "–",
            "excluding the small phase": _mean_std([x for x in reuse if x is not None])
            if any(x is not None for x in reuse) and name.startswith(("HyperCloning", "LEMON")) else "–",
            "final val loss": _mean_std(vals), "final test loss": _mean_std(tests),
            "test bits/char": f"{tg_data.bits_per_char(sum(tests) / len(tests)):.3f}",
            "training TFLOPs": f"{sum(flops) / len(flops) / 1e12:.3g}",
            "wall s/run": f"{sum(secs) / len(secs):.0f}",
            "halves' asymmetry at the end": _asym(runs, name),
        })  # fmt: skip
    return {"rows": rows, "seeds": seeds}


def _asym(runs: list[dict[str, Any]], name: str) -> str:
    xs = [r["asymmetry"] for r in runs if r["method"] == name and r.get("asymmetry") is not None]
    return f"{sum(xs) / len(xs):.1e}" if xs else "–"


def _mean_std(xs: list[float]) -> str:
    m = sum(xs) / len(xs)
    s = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
    return f"{m:.3f} ± {s:.3f}"


def growth_table(runs: list[dict[str, Any]]) -> str:
    rows = []
    for r in runs:
        for g in r["growths"]:
            rows.append({"method": r["method"], "seed": r["seed"], "step": g["step"], "event": g["event"],
                         "val loss before": f"{g['val_before']:.4f}", "after": f"{g['val_after']:.4f}",
                         "max abs Δlogits": f"{g['max_abs_dout']:.1e}", "params after": g["params_after"]})  # fmt: skip
    return markdown_table(rows)


def plot(runs: list[dict[str, Any]], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    names = list(dict.fromkeys(r["method"] for r in runs))
    colours = matplotlib.colormaps["tab10"]
    for i, name in enumerate(names):
        for r in (r for r in runs if r["method"] == name):
            xs = [c["flops"] / 1e12 for c in r["curve"] if c["flops"] > 0]
            ys = [c["val"] for c in r["curve"] if c["flops"] > 0]
            ax.plot(
                xs,
                ys,
                color=colours(i),
                alpha=0.8,
                lw=1,
                label=name if r["seed"] == runs[0]["seed"] else None,
            )
    ax.set_xscale("log")
    ax.set_xlabel("training TFLOPs (all phases)")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_title("char-level GPT on CPython's docs: loss vs training FLOPs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke run")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=THREADS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    text = tg_data.text_chars(context=CONTEXT)
    steps, seeds, eval_every, n_eval, batch = args.steps, args.seeds, 25, None, BATCH
    if args.quick:
        steps, seeds, eval_every, n_eval, batch = 20, 1, 5, 8, 4
    runs = []
    t0 = time.perf_counter()
    for seed in range(seeds):
        for contender in contenders():
            runs.append(run(contender, text, steps, seed, eval_every, n_eval, batch))
            r = runs[-1]
            print(f"{r['method']:13s} seed {seed}: val {r['val']:.4f} test {r['test']:.4f} "
                  f"TFLOPs {r['flops'] / 1e12:.3f} ({r['seconds']:.0f} s)", flush=True)  # fmt: skip
    wall = time.perf_counter() - t0
    summary = summarise(runs)
    table = markdown_table(summary["rows"])
    scratch_mf = flops_per_token(models.gpt(text.vocab_size, context=CONTEXT, **TARGET)) / 1e6
    md = (
        f"Character-level GPT on `text_chars` ({text.source}), target 4 layers x d_model 128 x 4 "
        f"heads, FFN 512, context {CONTEXT} ({scratch_mf:.2f} MFLOP per training token). {steps} "
        f"steps of {batch} x {CONTEXT} tokens for every method, AdamW (0.9, 0.95), weight decay "
        f"0.1 on matrices, clip 1.0, peak lr {PEAK_LR}; {len(summary['seeds'])} seeds; L* = the "
        f"scratch model's final validation loss (mean of its last two evaluations), per seed. "
        f"Total wall time {wall / 60:.1f} min on {args.threads} threads.\n\n"
        + table + "\nGrowth events (validation loss on the full validation split):\n\n"
        + growth_table(runs)
    )  # fmt: skip
    out = results_dir(args.quick)
    plot(runs, out / "transformer_growth.png")
    payload = {"quick": args.quick, "threads": args.threads, "steps": steps, "runs": runs,
               "summary": summary["rows"], "wall_s": wall}  # fmt: skip
    write_results("transformer_growth", payload, md, argv=argv, tables={"summary": table})
    return payload


if __name__ == "__main__":
    main()
