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
* ``MSG``: 1 layer, 2 heads, FFN 128 (d_model 128): FFN -> 512 at 10 %, layers
  1 -> 2 at 20 %, heads 2 -> 4 at 40 %, layers 2 -> 4 at 50 %, each through a mask
  ramped over 5 % of the steps; new weights N(0, 0.02); linear schedule rewound to
  the peak at the first two events; optimizer carried.
* ``HyperCloning``: 4 layers at d_model 64 (2 heads, FFN 256) for 40 %, cloned x2
  (residual stream, heads, FFN); fresh AdamW, warm-up + cosine over the rest.
* ``LEMON``: 2 layers at d_model 64 for 40 %, cloned x2 in width and each block
  followed by an identity copy; fresh AdamW, re-warm 4 %, cosine to 0.1.
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
from torchgrow import models, ops

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


def regroup(opt: torch.optim.Optimizer, model: nn.Module) -> None:
    """Put every parameter in the group its kind belongs to (an edit adds new ones to one)."""
    want = param_groups(model)
    decay = {id(p) for p in want[0]["params"]}
    params = [p for g in opt.param_groups for p in g["params"]]
    opt.param_groups[0]["params"] = [p for p in params if id(p) in decay]
    opt.param_groups[1]["params"] = [p for p in params if id(p) not in decay]


def cosine(step: int, start: int, length: int, warm: float = 0.05, floor: float = 0.1) -> float:
    """Warm-up (``warm`` of the phase, at least 10 steps) then cosine to ``floor`` of the peak."""
    t = step - start
    w = max(10, round(warm * length))
    if t < w:
        return (t + 1) / w
    progress = min(1.0, (t - w) / max(1, length - w))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class Event:
    """A growth at a step: ``apply(model, opt, x) -> (record, new optimizer or None)``."""

    at: float
    name: str
    apply: Callable[..., tuple[ops.EditRecord, torch.optim.Optimizer | None]]


@dataclass
class Method:
    name: str
    start: dict[str, int]
    events: list[Event]
    lr: Callable[[int, int, list[int]], float]  # (step, total, event steps) -> multiplier
    reuse: bool = False  # HyperCloning/LEMON count savings also without the small phase


def _scratch_lr(step: int, total: int, events: list[int]) -> float:
    return cosine(step, 0, total)


def _restart_lr(step: int, total: int, events: list[int], warm: float = 0.05) -> float:
    """A schedule of its own for the small phase and one for the grown model (fresh restart)."""
    if not events or step < events[-1]:
        return cosine(step, 0, events[-1] if events else total, warm)
    return cosine(step, events[-1], total - events[-1], warm)


def _g_stack_lr(step: int, total: int, events: list[int]) -> float:
    if events and step < events[0]:  # the base: warm-up then constant (checkpoint mid-schedule)
        return min(1.0, (step + 1) / max(1, min(10, events[0])))
    return cosine(step, events[0] if events else 0, total - (events[0] if events else 0))


def _msg_lr(step: int, total: int, events: list[int]) -> float:
    """Linear decay after warm-up, rewound to the peak at the first two events (MSG's rule)."""
    w = max(10, round(0.05 * total))
    if step < w:
        return (step + 1) / w
    shift = 0
    for t_e in events[:2]:
        if step >= t_e:
            shift = t_e - w
    return max(0.0, (total - step + shift) / (total - w))


def _fresh(
    model: nn.Module, record: ops.EditRecord
) -> tuple[ops.EditRecord, torch.optim.Optimizer]:
    return record, adamw(model)


def _carried(opt: torch.optim.Optimizer, model: nn.Module, record: ops.EditRecord):
    regroup(opt, model)
    return record, None


def methods(ramp_steps: int) -> list[Method]:
    """The contenders (see the module docstring)."""
    small_w = {"n_layer": 4, "d_model": 64, "n_head": 2, "d_ff": 256}

    def stack(m, o, x):
        return _fresh(m, ops.stack_blocks(m, ops.g_stack_order(1, 4), optimizer=None, example=x))

    def midas(m, o, x):
        n = len(m.blocks)
        return _carried(o, m, ops.stack_blocks(m, ops.midas_order(n), optimizer=o, example=x))

    def clone(m, o, x):
        return _fresh(m, ops.clone_width(m, 2, optimizer=None, example=x))

    def lemon(m, o, x):
        r = ops.clone_width(m, 2, optimizer=None, example=x)
        for i in range(len(m.blocks) - 1, -1, -1):
            r2 = ops.insert_identity_block(m, i + 1, source=i, example=x)
            r.details["max_abs_dout"] = max(r.details["max_abs_dout"], r2.details["max_abs_dout"])
        return _fresh(m, r)

    ramps: dict[str, ops.Ramp] = {}

    def msg(kind: str):
        def apply(m, o, x):
            ramp = ramps[kind] = ops.Ramp(ramp_steps)
            gen = torch.Generator().manual_seed(len(ramps))
            kw = {"optimizer": o, "example": x, "ramp": ramp}
            if kind == "ffn":
                r = ops.grow_ffn(m, 384, fan_out="random", std=0.02, generator=gen, **kw)
            elif kind == "heads":
                r = ops.add_heads(m, 2, std=0.02, generator=gen, **kw)
            else:
                n = len(m.blocks)
                r = ops.stack_blocks(m, [*range(n), *range(n)], **kw)  # MSG appends copies
            r.details["ramp"] = ramp
            return _carried(o, m, r)

        return apply

    return [
        Method("scratch", TARGET, [], _scratch_lr),
        Method("G_stack", {**TARGET, "n_layer": 1}, [Event(0.033, "stack x4", stack)], _g_stack_lr),
        Method(
            "MIDAS",
            {**TARGET, "n_layer": 1},
            [Event(f, f"middle copy {i + 2}L", midas) for i, f in enumerate((0.05, 0.15, 0.30))],
            _scratch_lr,
        ),
        Method(
            "MSG",
            {"n_layer": 1, "d_model": 128, "n_head": 2, "head_dim": 32, "d_ff": 128},
            [
                Event(0.10, "FFN 128->512", msg("ffn")),
                Event(0.20, "layers 1->2", msg("layers")),
                Event(0.40, "heads 2->4", msg("heads")),
                Event(0.50, "layers 2->4", msg("layers")),
            ],
            _msg_lr,
        ),
        Method("HyperCloning", small_w, [Event(0.40, "clone x2", clone)], _restart_lr, True),
        Method(
            "LEMON",
            {**small_w, "n_layer": 2},
            [Event(0.40, "width x2 + depth x2", lemon)],
            lambda s, t, e: _restart_lr(s, t, e, warm=0.04 / 0.6 if e and s >= e[-1] else 0.05),
            True,
        ),
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


def run(method: Method, text: tg_data.TextData, steps: int, seed: int, eval_every: int,
        n_eval: int | None, batch: int = BATCH) -> dict[str, Any]:  # fmt: skip
    torch.manual_seed(seed)
    model = models.gpt(text.vocab_size, context=CONTEXT, **method.start)
    opt = adamw(model)
    vx, vy = text.windows("valid")
    tx, ty = text.windows("test")
    if n_eval is not None:
        vx, vy, tx, ty = vx[:n_eval], vy[:n_eval], tx[:n_eval], ty[:n_eval]
    event_steps = sorted({max(1, round(e.at * steps)) for e in method.events})
    todo = {max(1, round(e.at * steps)): [] for e in method.events}
    for e in method.events:
        todo[max(1, round(e.at * steps))].append(e)
    batches = text.batches(batch, seed=1000 + seed)
    flops, curve, growths, ramps = 0.0, [], [], []
    t0 = time.perf_counter()
    for step in range(steps):
        for e in todo.get(step, []):
            x_probe = vx[:8]
            before = _eval(model, vx, vy)
            record, new_opt = e.apply(model, opt, x_probe)
            opt = new_opt or opt
            after = _eval(model, vx, vy)
            if "ramp" in record.details:
                ramps.append(record.details.pop("ramp"))
            growths.append({"step": step, "event": e.name, "val_before": before, "val_after": after,
                            "max_abs_dout": record.details.get("max_abs_dout"),
                            "params_after": models.count_parameters(model)})  # fmt: skip
            curve.append({"step": step, "flops": flops, "val": after})
        if step % eval_every == 0 and not (curve and curve[-1]["step"] == step):
            curve.append({"step": step, "flops": flops, "val": _eval(model, vx, vy)})
        for g in opt.param_groups:
            g["lr"] = PEAK_LR * method.lr(step, steps, event_steps)
        xb, yb = next(batches)
        loss = F.cross_entropy(model(xb).flatten(0, 1), yb.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        for r in ramps:
            if r.active:
                r.step()
        flops += flops_per_token(model) * batch * CONTEXT
    curve.append({"step": steps, "flops": flops, "val": _eval(model, vx, vy)})
    return {
        "method": method.name, "seed": seed, "start": method.start, "curve": curve,
        "growths": growths, "flops": flops, "val": curve[-1]["val"], "test": _eval(model, tx, ty),
        "params": models.count_parameters(model), "seconds": time.perf_counter() - t0,
        "small_flops": _flops_before(curve, growths[-1]["step"]) if growths else 0.0,
    }  # fmt: skip


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
            if any(x is not None for x in reuse) and name in ("HyperCloning", "LEMON") else "–",
            "final val loss": _mean_std(vals), "final test loss": _mean_std(tests),
            "test bits/char": f"{tg_data.bits_per_char(sum(tests) / len(tests)):.3f}",
            "training TFLOPs": f"{sum(flops) / len(flops) / 1e12:.3g}",
            "wall s/run": f"{sum(secs) / len(secs):.0f}",
        })  # fmt: skip
    return {"rows": rows, "seeds": seeds}


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
    ramp_steps = max(1, round(0.05 * steps))
    runs = []
    t0 = time.perf_counter()
    for seed in range(seeds):
        for method in methods(ramp_steps):
            runs.append(run(method, text, steps, seed, eval_every, n_eval, batch))
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
