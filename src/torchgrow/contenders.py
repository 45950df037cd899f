"""How each method runs in ``torchgrow compare``: one data set, one epoch budget, one log format.

A *contender* is a named recipe that builds a method's model family, runs
the method within a budget of training epochs, and reports what the
comparison measures (:class:`Outcome`):

==========  ==================  ====================================================
name        model family        recipe (budget ``E`` epochs)
==========  ==================  ====================================================
static      MLP in-w-w-out      no growth, ``E`` epochs (the start size of width growth)
random      MLP in-w-w-out      random fan-out, zero fan-in units, up to ``grow_factor`` x w
gradmax     MLP in-w-w-out      GradMax units on the same schedule as ``random``
nest        MLP in-w-w-out      NeST: sparse seed of width w, connections and neurons
                                grown towards W = ``grow_factor`` x w, then pruned
autogrow    residual MLP        AutoGrow from 1-1-1 blocks of width w, tail of E/4
compnet     MLP in-w-w-out      CompNet: parent, one compact layer, fine-tuning
==========  ==================  ====================================================

``random`` and ``gradmax`` grow ``grow_times`` times, evenly through the first
half of the budget, each time adding ``(grow_factor - 1) w / grow_times`` units
to both hidden layers; the width-growth MLPs use ``ReLU1`` (the official
GradMax code's activation: new units with zero fan-in would stay dead under
ReLU). The others use ReLU.

Contenders that train through :func:`torchgrow.train.fit` (static, random,
gradmax) checkpoint every epoch and resume from the last one. The others
(whose phases run inside the method) restart an interrupted run from the
beginning; a finished run is never repeated (:mod:`torchgrow.compare`).

:func:`register_contender` adds one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from . import how as tg_how
from . import methods
from . import models as tg_models
from .data import Dataset
from .graph import set_example
from .grower import Grower
from .size import Units
from .train import fit
from .when import Every
from .where import AllAtOnce
from .why import accuracy

__all__ = [
    "CONTENDERS",
    "Contender",
    "Context",
    "Interrupted",
    "Outcome",
    "register_contender",
]

STATIC_DESCRIPTION = {
    "name": "static",
    "paper": "baseline",
    "why": "reference: the starting network, never grown",
    "when": "never",
    "where": "-",
    "how": "-",
}
RANDOM_DESCRIPTION = {
    "name": "random",
    "paper": "baseline (GradMax's AddRandom)",
    "why": "reference for GradMax: function-preserving width growth without gradient information",
    "when": "fixed schedule (the same as gradmax's)",
    "where": "every hidden layer at once",
    "how": "zero fan-in; random fan-out scaled like GradMax's",
}


COMPNET_PROX_BUDGET = 2.5
"""CompNet's λ is set so that ``finetune_lr * λ * (sparse-phase steps)`` is this. In the sweep
of ``benchmarks/compnet_deepen.py`` budgets up to 1 leave the added layer at full width, and 2.5
is where it ends near 30 % of the layer it follows on the Fashion-MNIST MLPs, 0.1-0.3 points
below the uncompacted child."""


class Interrupted(RuntimeError):
    """Raised when a run stops early on purpose (``stop_after``): rerun to resume it."""


@dataclass
class Context:
    """What a contender gets: the settings, the data, its seed and its directory.

    Attributes
    ----------
    config : Any
        The :class:`torchgrow.compare.CompareConfig`.
    data : Dataset
        The full data set (train and test splits); contenders carve their
        validation split with ``config.val_fraction`` and ``seed``.
    seed : int
        The run's seed (model initialisation, split, data order, growth).
    run_dir : Path
        The run's directory (checkpoints go there).
    stop_after : int, optional
        Stop after this many epochs of this invocation and raise
        :class:`Interrupted` (a simulated interruption, used by tests).
    """

    config: Any
    data: Dataset
    seed: int
    run_dir: Path
    stop_after: int | None = None


@dataclass
class Outcome:
    """What a contender reports.

    ``rows``: one per evaluation, with ``epoch``, ``training_flops``,
    ``parameters``, ``flops_per_example``, ``val_accuracy`` (fraction) and
    ``seconds``; ``events``: one per structural change, with ``epoch``,
    ``training_flops``, ``kind`` (``"grow"``, ``"prune"``, ``"deepen"``,
    ``"trim"``), ``parameters_after``, ``max_abs_delta`` (``None`` if not
    measured) and ``detail``.
    """

    model: nn.Module
    rows: list[dict[str, Any]]
    events: list[dict[str, Any]]
    val_accuracy: float
    test_accuracy: float
    training_flops: int
    epochs: int
    model_name: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Contender:
    """A method as ``torchgrow compare`` runs it.

    Attributes
    ----------
    name : str
        The ``--methods`` value.
    description : dict
        ``name``, ``paper``, ``why``, ``when``, ``where``, ``how``: the method's
        own description (the report's first four columns come from it).
    run : callable
        ``run(context) -> Outcome``.
    resumable : bool
        Whether an interrupted run continues from its last epoch (otherwise
        it restarts).
    family : str
        The model family it grows (``CompareConfig.model``): ``"mlp"`` (classifiers
        on image or tabular data) or ``"gpt"`` (character-level language models).
    """

    name: str
    description: dict[str, str]
    run: Callable[[Context], Outcome]
    resumable: bool = False
    family: str = "mlp"


CONTENDERS: dict[str, Contender] = {}
"""Contenders by name."""


def register_contender(contender: Contender) -> Contender:
    """Add (or replace) a contender of ``torchgrow compare``.

    Parameters
    ----------
    contender : Contender
        The contender.

    Returns
    -------
    Contender
        The same contender.
    """
    CONTENDERS[contender.name] = contender
    return contender


# ---------------------------------------------------------------------------- helpers
def _dims(ds: Dataset) -> tuple[int, int]:
    return math.prod(ds.input_shape), int(ds.num_classes or 1)


def _sgd(model: nn.Module, cfg: Any) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)


def _split(ctx: Context) -> tuple[Dataset, Dataset]:
    return ctx.data.split_validation(ctx.config.val_fraction, seed=ctx.seed)


def _test(model: nn.Module, ds: Dataset) -> float:
    return accuracy(model, (ds.x_test, ds.y_test))


def _flops_at(step: int, rows: list[dict[str, Any]]) -> int:
    """Training FLOPs at optimizer step ``step``, interpolated between epoch ends."""
    prev_step, prev_flops = 0, 0
    for r in rows:
        if step <= r["step"]:
            span = max(1, r["step"] - prev_step)
            frac = (step - prev_step) / span
            return int(prev_flops + frac * (r["training_flops"] - prev_flops))
        prev_step, prev_flops = r["step"], r["training_flops"]
    return int(prev_flops)


FSDP_CONTENDERS = ("static", "random", "gradmax")
"""The contenders that run with their model sharded (``CompareConfig(fsdp=True)``)."""


def _fit_contender(ctx: Context, grow: str | None) -> Outcome:
    """static / random / gradmax: the MLP in-w-w-out trained by :func:`fit`, resumable."""
    cfg = ctx.config
    train, val = _split(ctx)
    n_in, n_out = _dims(ctx.data)
    g = torch.Generator().manual_seed(ctx.seed)
    loaders = (
        DataLoader(
            TensorDataset(train.x_train, train.y_train),
            batch_size=cfg.batch_size,
            shuffle=True,
            generator=g,
        ),
        DataLoader(TensorDataset(val.x_test, val.y_test), batch_size=512),
    )
    checkpoint = ctx.run_dir / "fit" / "checkpoint.pt"
    epochs = cfg.budget_epochs
    calls = {"n": 0}

    def stop(_history: Any) -> bool:
        calls["n"] += 1
        return ctx.stop_after is not None and calls["n"] >= ctx.stop_after

    common = dict(
        epochs=epochs,
        log_dir=ctx.run_dir / "fit",
        checkpoint_every=1,
        progress=False,
        on_epoch_end=stop,
        seed=ctx.seed,
    )
    sharded = bool(getattr(cfg, "fsdp", False))
    if sharded:  # a sharded model is saved by every rank (torchgrow.fsdp.save), not by fit
        common["checkpoint_every"] = None
    if checkpoint.exists() and not sharded:
        history = fit(None, None, loaders, resume_from=checkpoint, **common)
    else:
        torch.manual_seed(ctx.seed)
        w = cfg.width
        model = tg_models.mlp([n_in, w, w, n_out], activation="relu1")
        if sharded:
            from .fsdp import shard_layers

            shard_layers(model)
            set_example(model, train.x_train[:4])
        optimizer = _sgd(model, cfg)
        grower = None
        if grow is not None:
            steps_per_epoch = len(loaders[0])
            total = steps_per_epoch * epochs
            every = max(1, total // (2 * cfg.grow_times))
            units = max(1, round((cfg.grow_factor - 1) * w / cfg.grow_times))
            how = (
                tg_how.GradMax(seed=ctx.seed) if grow == "gradmax" else tg_how.Random(seed=ctx.seed)
            )
            grower = Grower(
                model,
                optimizer,
                when=Every(every, start=every, times=cfg.grow_times),
                where=AllAtOnce(),
                how=how,
                size=Units(units),
            )
            if sharded:
                from .fsdp import Grower as ShardedGrower

                grower = ShardedGrower.of(grower)
        history = fit(model, optimizer, loaders, grower=grower, **common)
    if len(history.rows) < epochs:
        raise Interrupted(f"stopped after epoch {len(history.rows)} of {epochs}")
    model = history.model
    assert model is not None
    rows = [
        {
            "epoch": r["epoch"],
            "training_flops": r["training_flops"],
            "parameters": r["parameters"],
            "flops_per_example": r["flops_per_example"],
            "val_accuracy": r["val_accuracy"],
            "val_loss": r.get("val_loss"),
            "seconds": r["seconds"],
            "step": r["step"],
        }
        for r in history.rows
    ]
    events = []
    for e in history.events:
        epoch = next((r["epoch"] for r in rows if e.step <= r["step"]), rows[-1]["epoch"])
        events.append(
            {
                "epoch": epoch,
                "training_flops": _flops_at(e.step, rows),
                "kind": "grow",
                "parameters_after": e.params_after,
                "max_abs_delta": e.max_abs_delta,
                "detail": f"{e.unit}: {e.width_before} -> {e.width_after} units ({e.how})",
            }
        )
    for r in rows:
        del r["step"]
    w_final = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)][:-1]
    return Outcome(
        model=model,
        rows=rows,
        events=events,
        val_accuracy=rows[-1]["val_accuracy"],
        test_accuracy=_test(model, ctx.data),
        training_flops=rows[-1]["training_flops"],
        epochs=len(rows),
        model_name=f"MLP {n_in}-{'-'.join(map(str, w_final))}-{n_out} (ReLU1)",
    )


def _nest(ctx: Context) -> Outcome:
    cfg = ctx.config
    n_in, n_out = _dims(ctx.data)
    torch.manual_seed(ctx.seed)
    w, big = cfg.width, int(round(cfg.grow_factor * cfg.width))
    model = tg_models.mlp([n_in, w, w, n_out])
    e = cfg.budget_epochs
    grow_rounds = max(0, e // 2 - 1)
    nest = methods.NeST(
        model,
        _sgd(model, cfg),
        ctx.data,
        batch_size=cfg.batch_size,
        val_fraction=cfg.val_fraction,
        grow_epochs=1,
        max_grow_rounds=grow_rounds,
        # Policy 2 takes the hidden layers from w towards grow_factor x w over the growth rounds
        neurons_per_round=math.ceil((big - w) / max(1, grow_rounds)),
        retrain_epochs=1,
        max_prune_rounds=e - 1 - grow_rounds,
        prune_retries=e,  # the epoch budget, not the retries, ends pruning
        seed=ctx.seed,
    )
    start = time.perf_counter()
    nest.run()
    rows, events, params, loss = [], [], None, None
    for r in nest.history:
        kept = r["phase"] in ("seed", "grow") or r.get("accepted", False)
        if kept:
            params, fpe, val = r["parameters"], r["flops_per_example"], r["val_accuracy"]
            loss = r.get("val_loss")
            if r["phase"] != "seed":
                detail = (
                    f"{r.get('connections_added', 0)} connections, {r.get('neurons_added', 0)} "
                    "neurons"
                    if r["phase"] == "grow"
                    else f"{r.get('connections_pruned', 0)} connections pruned, "
                    f"{r.get('units_removed', 0)} units removed"
                )
                events.append(
                    {
                        "epoch": r["epochs_trained"],
                        "training_flops": r["training_flops"],
                        "kind": "grow" if r["phase"] == "grow" else "prune",
                        "parameters_after": params,
                        "max_abs_delta": None,
                        "detail": detail,
                    }
                )
        rows.append(
            {
                "epoch": r["epochs_trained"],
                "training_flops": r["training_flops"],
                "parameters": params,
                "flops_per_example": fpe,
                "val_accuracy": val,
                "val_loss": loss,
                "seconds": time.perf_counter() - start,
            }
        )
    out = nest.summary()
    return Outcome(
        model=nest.model,
        rows=rows,
        events=events,
        val_accuracy=out["val_accuracy"],
        test_accuracy=out["test_accuracy"],
        training_flops=out["training_flops"],
        epochs=out["epochs_trained"],
        model_name=f"MLP {n_in}-{w}-{w}-{n_out} sparse seed, neurons grown towards {big} (ReLU)",
        extra={"nest_rounds": out["rounds"]},
    )


def _autogrow(ctx: Context) -> Outcome:
    cfg = ctx.config
    n_in, n_out = _dims(ctx.data)
    torch.manual_seed(ctx.seed)
    w = cfg.width
    model = tg_models.ResidualMLP(
        blocks=(1, 1, 1), widths=(w, w, w), in_features=n_in, num_classes=n_out
    )
    tail = max(1, cfg.budget_epochs // 4)
    ag = methods.AutoGrow(
        model,
        _sgd(model, cfg),
        ctx.data,
        interval=1,
        window=max(2, cfg.budget_epochs // 5),
        max_blocks=8,
        max_growth_epochs=cfg.budget_epochs - tail,
        tail_epochs=tail,
        val_fraction=cfg.val_fraction,
        batch_size=cfg.batch_size,
        seed=ctx.seed,
    )
    out = ag.run()
    rows = [
        {
            "epoch": r["epoch"],
            "training_flops": r["training_flops"],
            "parameters": r["parameters"],
            "flops_per_example": r["flops_per_example"],
            "val_accuracy": r["val_accuracy"],
            "val_loss": r.get("val_loss"),
            "seconds": r["seconds"],
        }
        for r in ag.rows
    ]
    by_epoch = {r["epoch"]: r for r in rows}
    events = [
        {
            "epoch": e["epoch"],
            "training_flops": by_epoch[e["epoch"]]["training_flops"],
            "kind": "grow",
            "parameters_after": None,
            "max_abs_delta": e.get("max_abs_delta"),
            "detail": f"block appended to {e['stage']}: {'-'.join(map(str, e['arch']))}",
        }
        for e in ag.events
        if "stage" in e
    ]
    # parameters right after a growth step = those of the next epoch's row
    for ev in events:
        nxt = by_epoch.get(ev["epoch"] + 1, rows[-1])
        ev["parameters_after"] = nxt["parameters"]
    return Outcome(
        model=ag.model,
        rows=rows,
        events=events,
        val_accuracy=out["val_accuracy"],
        test_accuracy=out["test_accuracy"],
        training_flops=out["training_flops"],
        epochs=len(rows),
        model_name=f"residual MLP, width {w}, blocks {'-'.join(map(str, out['arch']))}",
        extra={"arch": out["arch"]},
    )


def _compnet(ctx: Context) -> Outcome:
    cfg = ctx.config
    n_in, n_out = _dims(ctx.data)
    torch.manual_seed(ctx.seed)
    w = cfg.width
    model = tg_models.mlp([n_in, w, w, n_out])
    e = cfg.budget_epochs
    sparse, finetune = max(1, e // 5), max(1, e // 10)
    train, _ = _split(ctx)
    steps = sparse * math.ceil(train.n_train / cfg.batch_size)
    cn = methods.CompNet(
        model,
        _sgd(model, cfg),
        ctx.data,
        lam=COMPNET_PROX_BUDGET / (cfg.lr / 10 * steps),
        parent_epochs=e - sparse - finetune,
        patience=max(2, e // 5),
        sparse_epochs=sparse,
        finetune_epochs=finetune,
        finetune_lr=cfg.lr / 10,
        max_deepenings=1,
        tolerance=-1.0,  # the budget is spent either way: report the deeper net
        val_fraction=cfg.val_fraction,
        batch_size=cfg.batch_size,
        seed=ctx.seed,
    )
    start = time.perf_counter()
    out = cn.run()
    rows, events, epoch = [], [], 0
    for r in cn.history:
        if r["phase"] != "inserted":
            epoch += 1
        rows.append(
            {
                "epoch": epoch,
                "training_flops": r["training_flops"],
                "parameters": r["parameters"],
                "flops_per_example": r["flops_per_example"],
                "val_accuracy": r["val_accuracy"],
                "val_loss": r.get("val_loss"),
                "seconds": time.perf_counter() - start,
            }
        )
        if r["phase"] == "inserted":
            (d,) = [d for d in out["deepenings"] if d["new_layer"] == r["layer"]]
            events.append(
                {
                    "epoch": epoch,
                    "training_flops": r["training_flops"],
                    "kind": "deepen",
                    "parameters_after": r["parameters"],
                    "max_abs_delta": d["max_abs_delta"],
                    "detail": f"layer of {d['width_at_insertion']} units after {d['after']}",
                }
            )
    for i, r in enumerate(cn.history[1:], start=1):
        if r["phase"] == "finetune" and cn.history[i - 1]["phase"] == "sparse":
            events.append(
                {
                    "epoch": rows[i - 1]["epoch"],
                    "training_flops": cn.history[i - 1]["training_flops"],
                    "kind": "trim",
                    "parameters_after": r["parameters"],
                    "max_abs_delta": 0.0,
                    "detail": f"added layer trimmed to {r['width']} units",
                }
            )
    events.sort(key=lambda ev: ev["training_flops"])
    widths = [d["width"] for d in out["deepenings"] if d["kept"]]
    return Outcome(
        model=cn.model,
        rows=rows,
        events=events,
        val_accuracy=out["val_accuracy"],
        test_accuracy=out["test_accuracy"],
        training_flops=out["training_flops"],
        epochs=epoch,
        model_name=f"MLP {n_in}-{w}-{w}-{n_out} (ReLU) + added layers {widths}",
        extra={"added_widths": widths},
    )


register_contender(
    Contender("static", STATIC_DESCRIPTION, lambda ctx: _fit_contender(ctx, None), True)
)
register_contender(
    Contender("random", RANDOM_DESCRIPTION, lambda ctx: _fit_contender(ctx, "random"), True)
)
register_contender(
    Contender(
        "gradmax",
        {**methods.GRADMAX_DESCRIPTION, "when": "fixed schedule: grow_times growths, evenly "
         "through the first half of the budget", "where": "every hidden layer at once"},
        lambda ctx: _fit_contender(ctx, "gradmax"),
        True,
    )
)  # fmt: skip
register_contender(Contender("nest", methods.NEST_DESCRIPTION, _nest))
register_contender(Contender("autogrow", methods.AUTOGROW_DESCRIPTION, _autogrow))
register_contender(Contender("compnet", methods.COMPNET_DESCRIPTION, _compnet))
