"""Tests of torchgrow.io: checkpoints of grown models, and exact resumption of training."""

from __future__ import annotations

import gc
import random
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import torchgrow
from torchgrow import Grower, data, models, ops
from torchgrow.how import Random
from torchgrow.io import Checkpoint, CheckpointError
from torchgrow.size import Units
from torchgrow.train import fit
from torchgrow.when import Every

BATCH = 64  # digits: 1,437 training examples -> 23 steps per epoch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits() -> data.Dataset:
    return data.digits()


def _setup(kind: str):
    """A 64-6-6-10 MLP growing 2 units per hidden layer at steps 10, 20, 30, 40, 50."""
    torch.manual_seed(1)
    model = models.mlp([64, 6, 6, 10], activation="relu1")
    if kind == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
    grower = Grower(
        model, opt, when=Every(10, start=10, times=5), how=Random(seed=0), size=Units(2)
    )
    return model, opt, grower


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# --------------------------------------------------------------------------- resume
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_resume_matches_uninterrupted_run(kind: str, digits, tmp_path) -> None:
    k, m = 2, 2
    model, opt, grower = _setup(kind)
    full = fit(model, opt, digits, epochs=k + m, grower=grower, batch_size=BATCH, seed=3)
    want = _params(full.model)
    want_rows = full.rows

    model, opt, grower = _setup(kind)
    part = fit(
        model,
        opt,
        digits,
        epochs=k,
        grower=grower,
        batch_size=BATCH,
        seed=3,
        log_dir=tmp_path,
        checkpoint_every=k,
    )
    # growth happened: the architecture is bigger than the class builds by default
    assert model.fc1.out_features == 6 + 4 * 2 > models.mlp([64, 6, 6, 10]).fc1.out_features
    assert len(part.events) == 8 and grower.state.events == 4
    del model, opt, grower, part
    gc.collect()
    torch.manual_seed(12345)  # scramble every global generator: resume must restore them
    random.seed(12345)

    resumed = fit(
        None,
        None,
        digits,
        epochs=k + m,
        batch_size=BATCH,
        seed=3,
        log_dir=tmp_path,
        checkpoint_every=k,
        resume_from=tmp_path / "checkpoint.pt",
    )
    got = _params(resumed.model)
    assert list(got) == list(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    for col in ("step", "train_loss", "val_loss", "val_accuracy", "parameters", "training_flops"):
        assert resumed.column(col) == [r[col] for r in want_rows], col
    assert [e.as_dict()["params_after"] for e in resumed.events] == [
        e.params_after for e in full.events
    ]
    # the grower kept its schedule: 4 growth steps before the checkpoint, 1 after, then none
    assert resumed.grower.state.events == 5 and resumed.grower.when.times == 5
    assert [e.step for e in resumed.events[-2:]] == [50, 50]
    assert resumed.model.fc1.out_features == 16
    ops.check_consistent(resumed.model, resumed.optimizer)
    assert resumed.compute.total == full.compute.total


def test_resume_in_a_fresh_process(digits, tmp_path) -> None:
    """Save, then resume in another Python process: same parameters as an uninterrupted run."""
    model, opt, grower = _setup("adam")
    full = fit(model, opt, digits, epochs=3, grower=grower, batch_size=BATCH, seed=5)
    model, opt, grower = _setup("adam")
    fit(
        model,
        opt,
        digits,
        epochs=1,
        grower=grower,
        batch_size=BATCH,
        seed=5,
        log_dir=tmp_path,
        checkpoint_every=1,
    )
    script = textwrap.dedent(
        f"""
        import torch
        from torchgrow import data
        from torchgrow.train import fit
        torch.set_num_threads(1)
        h = fit(None, None, data.digits(), epochs=3, batch_size={BATCH}, seed=5,
                resume_from={str(tmp_path / "checkpoint.pt")!r})
        torch.save({{"params": dict(h.model.named_parameters()),
                    "losses": h.column("train_loss")}}, {str(tmp_path / "out.pt")!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=600)
    out = torch.load(tmp_path / "out.pt", weights_only=False)
    want = dict(full.model.named_parameters())
    assert set(out["params"]) == set(want)
    for name, p in want.items():
        assert torch.equal(out["params"][name], p.detach()), name
    assert out["losses"] == full.column("train_loss")


def test_resume_into_given_objects(digits, tmp_path) -> None:
    """Passing the objects of torchgrow.load resumes too; a default-size model is refused."""
    model, opt, grower = _setup("sgd")
    full = fit(model, opt, digits, epochs=2, grower=grower, batch_size=BATCH, seed=2)
    model, opt, grower = _setup("sgd")
    fit(model, opt, digits, epochs=1, grower=grower, batch_size=BATCH, seed=2)
    torchgrow.save(tmp_path / "plain.pt", model, opt, grower)
    with pytest.raises(ValueError, match="not written by fit"):
        fit(None, None, digits, epochs=2, resume_from=tmp_path / "plain.pt")

    model, opt, grower = _setup("sgd")
    fit(
        model,
        opt,
        digits,
        epochs=1,
        grower=grower,
        batch_size=BATCH,
        seed=2,
        log_dir=tmp_path,
        checkpoint_every=1,
    )
    ckpt = torchgrow.load(tmp_path / "checkpoint.pt")
    h = fit(
        ckpt.model,
        ckpt.optimizer,
        digits,
        epochs=2,
        grower=ckpt.grower,
        batch_size=BATCH,
        seed=2,
        resume_from=tmp_path / "checkpoint.pt",
    )
    for (n, a), (_, b) in zip(
        h.model.named_parameters(), full.model.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), n
    fresh, fresh_opt, fresh_grower = _setup("sgd")
    with pytest.raises(ValueError, match="architecture"):
        fit(
            fresh,
            fresh_opt,
            digits,
            epochs=2,
            grower=fresh_grower,
            resume_from=tmp_path / "checkpoint.pt",
        )


def test_resume_with_a_scheduler(digits, tmp_path) -> None:
    """Build the scheduler on the loaded optimizer; its state and the lr carry on."""

    def run(epochs, log_dir=None, resume=None):
        if resume is None:
            model, opt, grower = _setup("sgd")
        else:
            ckpt = torchgrow.load(resume)
            model, opt, grower = ckpt.model, ckpt.optimizer, ckpt.grower
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return fit(
            model,
            opt,
            digits,
            epochs=epochs,
            grower=grower,
            scheduler=sched,
            batch_size=BATCH,
            seed=4,
            log_dir=log_dir,
            checkpoint_every=1 if log_dir else None,
            resume_from=resume,
        )

    full = run(3)
    run(1, log_dir=tmp_path)
    resumed = run(3, resume=tmp_path / "checkpoint.pt")
    assert resumed.column("lr") == full.column("lr") == pytest.approx([0.05, 0.025, 0.0125])
    assert resumed.column("train_loss") == full.column("train_loss")
    for (n, a), (_, b) in zip(
        resumed.model.named_parameters(), full.model.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), n


# --------------------------------------------------------------------------- save / load
def _grow_once(digits, kind: str = "sgd"):
    """A model trained a few steps and grown once, with optimizer state."""
    model, opt, grower = _setup(kind)
    x, y = digits.x_train[:BATCH], digits.y_train[:BATCH]
    for _ in range(10):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        grower.step((x, y))
    assert grower.state.events == 1
    return model, opt, grower, (x, y)


def test_save_load_round_trip(digits, tmp_path) -> None:
    model, opt, grower, (x, y) = _grow_once(digits)
    path = torchgrow.save(tmp_path / "ck.pt", model, opt, grower, extra={"note": "hi"})
    ckpt = torchgrow.load(path)
    assert isinstance(ckpt, Checkpoint) and ckpt.extra == {"note": "hi"}
    assert type(ckpt.model) is type(model) and ckpt.model is not model
    assert ckpt.model.fc1.out_features == 8
    with torch.no_grad():
        assert torch.equal(ckpt.model(x), model(x))
    # optimizer: same class, hyper-parameters, parameter order (by name) and momentum
    assert type(ckpt.optimizer) is torch.optim.SGD
    assert ckpt.optimizer.defaults == opt.defaults
    names = {id(p): n for n, p in model.named_parameters()}
    new_names = {id(p): n for n, p in ckpt.model.named_parameters()}
    for g_old, g_new in zip(opt.param_groups, ckpt.optimizer.param_groups, strict=True):
        assert {k: v for k, v in g_old.items() if k != "params"} == {
            k: v for k, v in g_new.items() if k != "params"
        }
        assert [names[id(p)] for p in g_old["params"]] == [
            new_names[id(p)] for p in g_new["params"]
        ]
        for p_old, p_new in zip(g_old["params"], g_new["params"], strict=True):
            assert torch.equal(
                opt.state[p_old]["momentum_buffer"], ckpt.optimizer.state[p_new]["momentum_buffer"]
            )
    ops.check_consistent(ckpt.model, ckpt.optimizer)
    # grower: same policies, counters and events
    assert ckpt.grower.model is ckpt.model and ckpt.grower.optimizer is ckpt.optimizer
    assert ckpt.grower.describe() == grower.describe()
    g = ckpt.grower
    assert (g.state.step, g.state.events) == (grower.state.step, grower.state.events) == (10, 1)
    assert [e.as_dict() for e in g.events] == [e.as_dict() for e in grower.events]
    assert (g.when.steps, g.when.start, g.when.times, g.size.k) == (10, 10, 5, 2)
    assert torch.equal(g.how.generator.get_state(), grower.how.generator.get_state())
    assert g.loss_fn is torchgrow.grower.default_loss


def test_loaded_grower_and_optimizer_continue_identically(digits, tmp_path) -> None:
    """Ten more steps (with a growth at step 20) give identical weights in both copies."""
    model, opt, grower, (x, y) = _grow_once(digits, "adam")
    torchgrow.save(tmp_path / "ck.pt", model, opt, grower)
    ckpt = torchgrow.load(tmp_path / "ck.pt")
    for m, o, g in ((model, opt, grower), (ckpt.model, ckpt.optimizer, ckpt.grower)):
        for _ in range(10):
            loss = F.cross_entropy(m(x), y)
            o.zero_grad()
            loss.backward()
            o.step()
            g.step((x, y))
        assert g.state.events == 2 and m.fc1.out_features == 10
    for (n, a), (_, b) in zip(model.named_parameters(), ckpt.model.named_parameters(), strict=True):
        assert torch.equal(a, b), n
    step_old = [opt.state[p]["step"] for p in model.parameters()]
    step_new = [ckpt.optimizer.state[p]["step"] for p in ckpt.model.parameters()]
    assert step_old == step_new


def test_param_groups_survive(digits, tmp_path) -> None:
    torch.manual_seed(0)
    model = models.mlp([64, 6, 6, 10], activation="relu1")
    first = [model.fc1.weight, model.fc1.bias]
    rest = [p for p in model.parameters() if all(p is not q for q in first)]
    opt = torch.optim.SGD([{"params": first, "lr": 0.1}, {"params": rest}], lr=0.01, momentum=0.5)
    grower = Grower(model, opt, when=Every(1, times=1), how=Random(seed=1), size=Units(3))
    x, y = digits.x_train[:32], digits.y_train[:32]
    F.cross_entropy(model(x), y).backward()
    opt.step()
    grower.step((x, y))
    ckpt = torchgrow.load(torchgrow.save(tmp_path / "g.pt", model, opt, grower))
    names = {id(p): n for n, p in ckpt.model.named_parameters()}
    assert [g["lr"] for g in ckpt.optimizer.param_groups] == [0.1, 0.01]
    assert [names[id(p)] for p in ckpt.optimizer.param_groups[0]["params"]] == [
        "fc1.weight",
        "fc1.bias",
    ]
    assert ckpt.model.fc1.out_features == 9 and ckpt.model.fc2.out_features == 9
    ops.check_consistent(ckpt.model, ckpt.optimizer)


def test_masked_model_round_trips(digits, tmp_path) -> None:
    torch.manual_seed(0)
    model = models.mlp([64, 16, 10])
    ops.apply_mask(model.fc1, density=0.3, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = digits.x_train[:BATCH], digits.y_train[:BATCH]
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    torchgrow.save(tmp_path / "m.pt", model, opt)
    # the saved model is untouched (the strip happens on a copy)
    assert ops.is_masked(model.fc1)
    ckpt = torchgrow.load(tmp_path / "m.pt")
    assert ops.is_masked(ckpt.model.fc1)
    assert torch.equal(ops.mask_of(ckpt.model.fc1), ops.mask_of(model.fc1))
    assert "fc1.weight_mask" in dict(ckpt.model.named_buffers())
    ops.check_consistent(ckpt.model, ckpt.optimizer)
    for m, o in ((model, opt), (ckpt.model, ckpt.optimizer)):
        o.zero_grad()
        F.cross_entropy(m(x), y).backward()
        o.step()
    with torch.no_grad():
        assert torch.equal(ckpt.model(x), model(x))
    w = ops.weight_parameter(ckpt.model.fc1)
    assert torch.all(w[ops.mask_of(ckpt.model.fc1) == 0] == 0)  # dormant entries stay 0


def test_unpicklable_loss_is_dropped_and_can_be_given(digits, tmp_path) -> None:
    torch.manual_seed(0)
    model = models.mlp([64, 4, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    grower = Grower(model, opt, when=Every(5), loss_fn=lambda out, y: F.cross_entropy(out, y))
    torchgrow.save(tmp_path / "l.pt", model, opt, grower)
    assert torchgrow.load(tmp_path / "l.pt").grower.loss_fn is torchgrow.grower.default_loss
    mine = F.cross_entropy
    assert torchgrow.load(tmp_path / "l.pt", loss_fn=mine).grower.loss_fn is mine


def test_rng_state_is_saved(tmp_path) -> None:
    model = models.mlp([4, 3, 2])
    torch.manual_seed(42)
    torchgrow.save(tmp_path / "r.pt", model)
    after_save = torch.rand(5)
    torch.manual_seed(0)
    ckpt = torchgrow.load(tmp_path / "r.pt")
    assert ckpt.optimizer is None and ckpt.grower is None
    ckpt.restore_rng()
    assert torch.equal(torch.rand(5), after_save)


def test_errors(tmp_path) -> None:
    model = models.mlp([4, 3, 2])
    stray = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([*model.parameters(), stray], lr=0.1)
    with pytest.raises(CheckpointError, match="not a parameter of the model"):
        torchgrow.save(tmp_path / "x.pt", model, opt)
    assert not (tmp_path / "x.pt").exists()
    torch.save({"weight": torch.zeros(2)}, tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="not a torchgrow checkpoint"):
        torchgrow.load(tmp_path / "sd.pt")
    with pytest.raises(FileNotFoundError):
        torchgrow.load(tmp_path / "missing.pt")
    other = models.mlp([4, 3, 2])
    grower = Grower(other, when=Every(3))
    with pytest.raises(CheckpointError, match="different model"):
        torchgrow.save(tmp_path / "y.pt", model, grower=grower)
