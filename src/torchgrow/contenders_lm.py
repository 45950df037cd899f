"""The ``gpt`` family of ``torchgrow compare``: a character-level GPT grown by each transformer
method into the same target, against the target trained from scratch.

The target is :func:`torchgrow.models.gpt` with 4 layers, ``d_model = width x
grow_factor`` (128 with the defaults), heads of 32 and FFN ``4 d_model``, at
context 64 on :func:`torchgrow.data.text_chars`. An epoch is as many steps of
``batch_size x 64`` tokens as the training split holds (or ``epoch_tokens``). Every contender is
the :mod:`torchgrow.methods` class of its name, trained with AdamW (betas 0.9,
0.95; weight decay 0.1 on matrices; clip 1.0) at peak ``lr``; the small models
and growth times are those of ``benchmarks/transformer_growth.py``.

Quality is next-character accuracy (the report's accuracy columns) and, in each
result's ``extra``, the test loss in nats and bits per character.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import methods
from . import models as tg_models
from .contenders import Contender, Context, Interrupted, Outcome, register_contender
from .text_data import TextData, bits_per_char

__all__ = ["CONTEXT", "LM_CONTENDERS", "lm_flops_per_token"]

CONTEXT = 64


def lm_flops_per_token(model: nn.Module, context: int = CONTEXT) -> float:
    """Training FLOPs per token: ``6 x`` matrix-multiply weights ``+ 12 x`` layers ``x T x d_attn``."""
    p_mm = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    attn = sum(context * b.attn.q.out_features for b in model.blocks)
    return 6.0 * p_mm + 12.0 * attn


def _param_groups(model: nn.Module) -> list[dict[str, Any]]:
    decay, rest = [], []
    for mod in model.modules():
        for name, p in mod.named_parameters(recurse=False):
            (decay if isinstance(mod, nn.Linear) and name == "weight" else rest).append(p)
    return [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]


def _evaluate(model: nn.Module, x: Tensor, y: Tensor, batch: int = 128) -> tuple[float, float]:
    """Mean loss (nats per character) and next-character accuracy."""
    was = model.training
    model.eval()
    loss, right = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(x[i : i + batch]).flatten(0, 1)
            target = y[i : i + batch].flatten()
            loss += float(F.cross_entropy(logits, target, reduction="sum"))
            right += int((logits.argmax(-1) == target).sum())
    model.train(was)
    return loss / y.numel(), right / y.numel()


def _shapes(cfg: Any) -> tuple[dict[str, int], dict[str, int]]:
    """The target's sizes and a half-width model's."""
    d = round(cfg.width * cfg.grow_factor)
    if d % 128:  # the half-width models keep at least 2 heads of 32
        raise ValueError(
            f"the gpt family needs width x grow_factor a multiple of 128 (heads of 32; the "
            f"half-width start models keep at least 2), got {d}"
        )
    target = {"n_layer": 4, "d_model": d, "n_head": d // 32, "d_ff": 4 * d}
    half = {"n_layer": 4, "d_model": d // 2, "n_head": d // 64, "d_ff": 2 * d}
    return target, half


Build = Callable[[nn.Module, torch.optim.Optimizer, int, Tensor], methods.ScheduledGrowth]


class _Scratch(methods.ScheduledGrowth):
    name = "static"
    events: list = []


def _plans(cfg: Any) -> dict[str, tuple[dict[str, int], Build]]:
    target, half = _shapes(cfg)
    d = target["d_model"]
    msg_start = {"n_layer": 1, "d_model": d // 2, "n_head": target["n_head"] // 2,
                 "head_dim": 32, "d_ff": d}  # fmt: skip
    msg_to = {k: target[k] for k in ("d_ff", "n_head", "n_layer", "d_model")}
    return {
        "gpt_static": (target, _Scratch),
        "g_stack": ({**target, "n_layer": 1}, methods.GStack),
        "midas": ({**target, "n_layer": 1}, methods.MIDAS),
        "msg": (msg_start, lambda *a: methods.MSG(*a, **msg_to)),
        "hypercloning": (half, methods.HyperCloning),
        "lemon": ({**half, "n_layer": 2}, methods.LEMON),
    }


def _run(ctx: Context, name: str) -> Outcome:
    cfg, text = ctx.config, ctx.data
    if not isinstance(text, TextData):
        raise TypeError(f"the gpt family trains on text data, got {type(text).__name__}")
    start, build = _plans(cfg)[name]
    torch.manual_seed(ctx.seed)
    model = tg_models.gpt(text.vocab_size, context=CONTEXT, **start)
    opt = torch.optim.AdamW(_param_groups(model), lr=cfg.lr, betas=(0.9, 0.95))
    vx, vy = text.windows("valid")
    epoch = cfg.epoch_tokens or len(text.train)
    steps_per_epoch = max(1, epoch // (cfg.batch_size * CONTEXT))
    total = steps_per_epoch * cfg.budget_epochs
    method = build(model, opt, total, vx[:8])
    batches = text.batches(cfg.batch_size, seed=1000 + ctx.seed)
    flops, rows, events, t0 = 0.0, [], [], time.perf_counter()
    for step in range(total):
        for record in method.update(step):
            e = method.log[-1]
            events.append({
                "epoch": step // steps_per_epoch, "training_flops": int(flops), "kind": "grow",
                "parameters_after": e["params_after"], "max_abs_delta": e["max_abs_dout"],
                "detail": f"{e['event']} ({record.op})",
            })  # fmt: skip
        xb, yb = next(batches)
        loss = F.cross_entropy(model(xb).flatten(0, 1), yb.flatten())
        method.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        method.optimizer.step()
        flops += lm_flops_per_token(model) * cfg.batch_size * CONTEXT
        if (step + 1) % steps_per_epoch == 0:
            val_loss, val_acc = _evaluate(model, vx, vy)
            rows.append({
                "epoch": (step + 1) // steps_per_epoch, "training_flops": int(flops),
                "parameters": tg_models.count_parameters(model),
                "flops_per_example": int(lm_flops_per_token(model) / 3 * CONTEXT),
                "val_accuracy": val_acc, "val_loss": val_loss,
                "seconds": time.perf_counter() - t0,
            })  # fmt: skip
            if ctx.stop_after is not None and len(rows) >= ctx.stop_after:
                raise Interrupted(f"stopped after epoch {len(rows)}")
    test_loss, test_acc = _evaluate(model, *text.windows("test"))
    b0 = model.blocks[0]
    return Outcome(
        model=model, rows=rows, events=events, val_accuracy=rows[-1]["val_accuracy"],
        test_accuracy=test_acc, training_flops=int(flops), epochs=len(rows),
        model_name=f"GPT {len(model.blocks)}L d{b0.attn.o.out_features} "
        f"{b0.attn.n_head}h FFN {b0.mlp.up.out_features}",
        extra={"test_loss": test_loss, "test_bits_per_char": bits_per_char(test_loss),
               "val_loss": rows[-1]["val_loss"], "steps": total,
               "flops_per_example": rows[-1]["flops_per_example"],
               "start": start, "lr_peak": cfg.lr},
    )  # fmt: skip


_STATIC_DESCRIPTION = {
    "name": "static GPT (scratch)",
    "why": "the baseline: the target architecture trained from scratch on the same budget",
    "when": "never",
    "where": "-",
    "how": "warm-up + cosine to 0.1 of the peak over the whole run",
}

LM_CONTENDERS = {
    "gpt_static": _STATIC_DESCRIPTION,
    "g_stack": {"name": "G_stack", **methods.G_STACK_DESCRIPTION},
    "midas": {"name": "MIDAS", **methods.MIDAS_DESCRIPTION},
    "msg": {"name": "MSG", **methods.MSG_DESCRIPTION},
    "hypercloning": {"name": "HyperCloning", **methods.HYPERCLONING_DESCRIPTION},
    "lemon": {"name": "LEMON", **methods.LEMON_DESCRIPTION},
}
"""The gpt family's contenders and their descriptions, in report order."""

for _name, _description in LM_CONTENDERS.items():
    register_contender(
        Contender(_name, _description, lambda ctx, n=_name: _run(ctx, n), family="gpt")
    )
del _name, _description
