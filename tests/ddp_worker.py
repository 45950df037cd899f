"""Scenarios run by the distributed tests under ``torchrun --nproc-per-node 2`` (and alone).

``python tests/ddp_worker.py SCENARIO[,SCENARIO...] OUT`` writes ``OUT/<scenario>-rank<r>.pt`` (or
``...-single.pt`` when run without torchrun) with what the test compares: the parameters and
optimizer state after every growth step, the final ones, and the history.

The method scenarios run in lockstep (:func:`lockstep`): the data-parallel run records the
parameters and optimizer state after every optimizer step, and the single process, run
afterwards, starts every step from the state the data-parallel run had there. So the single
process checks each step (and each growth step between two steps) of the data-parallel run from
the same state, instead of comparing two trajectories that part by amplified rounding.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.data import DataLoader, TensorDataset

from torchgrow import Grower, distributed, methods, models
from torchgrow import data as tg_data
from torchgrow.how import GradMax as GradMaxHow
from torchgrow.size import Units
from torchgrow.train import fit
from torchgrow.when import Manual

BATCH = 32  # global batch


def _opt_state(opt: torch.optim.Optimizer) -> list[dict[str, Any]]:
    return [_opt_state_of(opt, p) for group in opt.param_groups for p in group["params"]]


def _snapshot(model: torch.nn.Module, opt: torch.optim.Optimizer | None) -> dict[str, Any]:
    return {
        "params": {k: v.detach().clone() for k, v in model.named_parameters()},
        "buffers": {k: v.detach().clone() for k, v in model.named_buffers()},
        "opt": _opt_state(opt) if opt is not None else None,
    }


def _optimizer_state(opt: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Each parameter of ``opt`` with its state, in the optimizer's order."""
    return [
        {"param": p.detach().clone(), **_opt_state_of(opt, p)}
        for group in opt.param_groups
        for p in group["params"]
    ]


def _opt_state_of(opt: torch.optim.Optimizer, p: torch.Tensor) -> dict[str, Any]:
    st = opt.state.get(p, {})
    return {k: (v.clone() if torch.is_tensor(v) else v) for k, v in st.items()}


class LockstepError(AssertionError):
    """The single process took another path than the data-parallel run (a decision differed)."""


@contextlib.contextmanager
def lockstep(reference: list[list[dict[str, Any]]] | None) -> Iterator[list[Any]]:
    """Record, after every optimizer step of any optimizer, its parameters and state.

    With ``reference`` (the data-parallel run's record), each step's own result is recorded and
    then replaced, in place, by the reference's state after the same step: every step of this
    run starts where the reference's did. Yields the list of records.
    """
    steps: list[list[dict[str, Any]]] = []

    def after_step(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        own = _optimizer_state(opt)
        steps.append(own)
        if reference is None:
            return
        k = len(steps) - 1
        if k >= len(reference) or len(reference[k]) != len(own):
            raise LockstepError(f"step {k + 1}: the data-parallel run has no such step")
        params = [p for group in opt.param_groups for p in group["params"]]
        with torch.no_grad():
            for p, mine, ref in zip(params, own, reference[k], strict=True):
                if mine.keys() != ref.keys() or mine["param"].shape != ref["param"].shape:
                    raise LockstepError(f"step {k + 1}: another architecture or optimizer state")
                p.copy_(ref["param"])
                for key, value in ref.items():
                    if key == "param":
                        continue
                    if torch.is_tensor(value):
                        opt.state[p][key].copy_(value)
                    else:
                        opt.state[p][key] = value

    handle = register_optimizer_step_post_hook(after_step)
    try:
        yield steps
    finally:
        handle.remove()


def _reference(name: str) -> list[list[dict[str, Any]]] | None:
    """The data-parallel run's steps, when this is the single process run after it."""
    if distributed.is_active():
        return None
    saved = Path(sys.argv[2]) / f"{name}-rank0.pt"
    return torch.load(saved, weights_only=False)["steps"] if saved.exists() else None


def in_lockstep(name: str, scenario: Any) -> dict[str, Any]:
    """``scenario()``'s result, with the record of its optimizer steps under ``"steps"``."""
    try:
        with lockstep(_reference(name)) as steps:
            result = scenario()
    except LockstepError as exc:  # the test reports it
        return {"steps": steps, "lockstep_error": str(exc)}
    return {**result, "steps": steps, "lockstep_error": None}


def _digits() -> tg_data.Dataset:
    return tg_data.digits().subset(640, 160, seed=0)


def _loaders(ds: tg_data.Dataset) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)  # the same global batches on every rank
    train = DataLoader(
        TensorDataset(ds.x_train, ds.y_train), batch_size=BATCH, shuffle=True, generator=g
    )
    test = DataLoader(TensorDataset(ds.x_test, ds.y_test), batch_size=100)
    return train, test


def _record_growth(grower: Grower, snaps: list[dict[str, Any]]) -> None:
    """Snapshot the model and optimizer after every growth step."""
    grow = grower.grow

    def recording(batch: Any, loss_fn: Any = None) -> Any:
        events = grow(batch, loss_fn)
        snaps.append(_snapshot(grower.model, grower.optimizer))
        return events

    grower.grow = recording  # type: ignore[method-assign]


def gradmax() -> dict[str, Any]:
    """GradMax through fit: growth under DDP, then training on."""
    ds = _digits()
    torch.manual_seed(0)
    model = models.mlp([64, 8, 8, 10], activation="relu1")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    grower = methods.GradMax(
        model, opt, batch_size=128, update_frequency=15, start_iteration=10,
        n_growth_steps=2, seed=0,
    )  # fmt: skip
    snaps: list[dict[str, Any]] = []
    _record_growth(grower, snaps)
    history = fit(model, opt, _loaders(ds), epochs=2, grower=grower, progress=False)
    return {
        "growths": snaps,
        "final": _snapshot(model, opt),
        "rows": [
            {k: r[k] for k in ("val_accuracy", "val_loss", "train_loss")} for r in history.rows
        ],
        "events": len(history.events),
    }


def different_batches() -> dict[str, Any]:
    """Each rank holds a different growth batch; the gathered (global) one must drive growth."""
    ds = _digits()
    torch.manual_seed(0)
    model = models.mlp([64, 8, 8, 10], activation="relu1")
    grower = Grower(model, None, when=Manual(), how=GradMaxHow(), size=Units(2), measure=False)
    halves = [(ds.x_train[:16], ds.y_train[:16]), (ds.x_train[16:40], ds.y_train[16:40])]
    if distributed.is_active():
        batch = halves[distributed.rank()]
    else:  # one process: the two halves together, or one of them (argv[3])
        which = sys.argv[3] if len(sys.argv) > 3 else "both"
        batch = (
            (torch.cat([h[0] for h in halves]), torch.cat([h[1] for h in halves]))
            if which == "both"
            else halves[int(which)]
        )
    grower.grow(batch)
    return {"final": _snapshot(model, None)}


class KeywordMLP(torch.nn.Module):
    """An MLP called as Hugging Face models are: ``model(features=..., labels=...)``, returning
    a dict with ``logits`` and, given labels, ``loss``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = models.mlp([64, 8, 8, 10], activation="relu1")

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        logits = self.net(features)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = torch.nn.functional.cross_entropy(logits, labels)
        return out


def dict_batches() -> dict[str, Any]:
    """As ``different_batches``, with Hugging Face style dict batches and the model's own loss."""
    ds = _digits()
    torch.manual_seed(0)
    model = KeywordMLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    grower = Grower(model, opt, when=Manual(), how=GradMaxHow(), size=Units(2))
    halves = [
        {"features": ds.x_train[a:b], "labels": ds.y_train[a:b]} for a, b in ((0, 16), (16, 40))
    ]
    if distributed.is_active():
        batch = halves[distributed.rank()]
    else:
        batch = {k: torch.cat([h[k] for h in halves]) for k in halves[0]}
    events = grower.grow(batch)
    return {"final": _snapshot(model, opt), "deltas": [e.max_abs_delta for e in events]}


def _refused(kind: str) -> dict[str, Any]:
    ds = _digits()
    torch.manual_seed(0)
    width = 9 if (kind == "mismatch" and distributed.rank() == 1) else 8
    model = models.mlp([64, width, 8, 10], activation="relu1")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    grower = Grower(model, opt, when=Manual(), how=GradMaxHow(), size=Units(2), measure=False)
    if kind == "failure" and distributed.rank() == 1:

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("simulated failure on rank 1")

        grower.how.init = broken  # type: ignore[method-assign]
    before = _snapshot(model, opt)
    batch = (ds.x_train[:16], ds.y_train[:16])
    if kind == "bad_batch" and distributed.rank() == 1:
        batch = (ds.x_train[:16, :, :4], ds.y_train[:16])  # images of the wrong size
    try:
        grower.grow(batch)
        error = None
    except Exception as exc:  # noqa: BLE001 - the test reads the message
        error = f"{type(exc).__name__}: {exc}"
    after = _snapshot(model, opt)
    same = all(torch.equal(before["params"][k], after["params"][k]) for k in before["params"])
    # the process group still works after the refusal (nobody is stuck in a collective)
    t = torch.ones(1)
    dist.all_reduce(t)
    return {"error": error, "unchanged": same, "allreduce": float(t)}


def contender(name: str) -> dict[str, Any]:
    """A method of ``torchgrow compare`` on digits; a snapshot after every agreed growth step."""
    import tempfile

    from torchgrow.compare import CompareConfig
    from torchgrow.compare.jobs import _load_data
    from torchgrow.contenders import CONTENDERS, Context

    snaps: list[dict[str, Any]] = []
    agree = distributed.agree

    def recording(what: str, model: Any, optimizer: Any = None, **kw: Any) -> None:
        agree(what, model, optimizer, **kw)
        snaps.append({"what": what, **_snapshot(model, optimizer)})

    distributed.agree = recording  # every structural step of every method calls it
    cfg = CompareConfig(
        methods=(name,), data="digits", budget_epochs=4, width=8, batch_size=32, threads=1
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(0)
            outcome = CONTENDERS[name].run(Context(cfg, _load_data(cfg), 0, Path(tmp), None))
    finally:
        distributed.agree = agree
    return {
        "growths": snaps,
        "final": _snapshot(outcome.model, None),
        "val": [r["val_accuracy"] for r in outcome.rows],
        "test_accuracy": outcome.test_accuracy,
        "training_flops": outcome.training_flops,
        "events": outcome.events,
    }


def syncbn() -> dict[str, Any]:
    """One training step of Linear-BatchNorm-ReLU-Linear on a global batch of 24 (16 + 8 rows)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5), torch.nn.ReLU(), torch.nn.Linear(5, 3)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(24, 6, generator=g), torch.randint(0, 3, (24,), generator=g)
    if distributed.is_active():  # unequal shares: rank 0 the first 16 rows, rank 1 the last 8
        rows = slice(0, 16) if distributed.rank() == 0 else slice(16, 24)
        xs, ys = x[rows], y[rows]
        forward: torch.nn.Module = distributed.GrowingDDP(model)
    else:
        xs, ys, forward = x, y, model
    loss = distributed.weighted_loss(
        torch.nn.functional.cross_entropy(forward(xs), ys), len(xs), 24
    )
    opt.zero_grad()
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    opt.step()
    return {"grads": grads, "final": _snapshot(model, opt)}


SCENARIOS = {
    "syncbn": syncbn,
    **{
        m: (lambda m=m: in_lockstep(m, lambda: contender(m)))
        for m in ("nest", "autogrow", "compnet", "random")
    },
    "gradmax": lambda: in_lockstep("gradmax", gradmax),
    "different_batches": different_batches,
    "dict_batches": dict_batches,
    "mismatch": lambda: _refused("mismatch"),
    "failure": lambda: _refused("failure"),
    "bad_batch": lambda: _refused("bad_batch"),
}


def main() -> None:
    names, out = sys.argv[1].split(","), Path(sys.argv[2])
    torch.set_num_threads(1)
    launched = "RANK" in os.environ
    if launched:
        dist.init_process_group("gloo")
    for name in names:
        try:
            result = SCENARIOS[name]()
        except Exception:
            traceback.print_exc()
            raise
        tag = f"rank{dist.get_rank()}" if launched else "single"
        if len(sys.argv) > 3:
            tag += "-" + sys.argv[3]
        torch.save(copy.deepcopy(result), out / f"{name}-{tag}.pt")
    if launched:
        distributed.shutdown()


if __name__ == "__main__":
    main()
