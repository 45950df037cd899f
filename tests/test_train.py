"""Tests of torchgrow.train: the reference training loop and its logs."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from torchgrow import Grower, data, models, ops
from torchgrow.how import Random
from torchgrow.size import Units
from torchgrow.train import COLUMNS, History, fit
from torchgrow.when import Every
from torchgrow.why import TrainingCompute, count_parameters, flops_per_example

BATCH = 64


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is fastest and immune to oversubscribed cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits() -> data.Dataset:
    return data.digits()


def _grown_setup(hidden: int = 6):
    torch.manual_seed(0)
    model = models.mlp([64, hidden, hidden, 10], activation="relu1")
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    grower = Grower(
        model,
        opt,
        when=Every(10, start=10, times=3),
        how=Random(seed=0),
        size=Units(2),
    )
    return model, opt, grower


@pytest.fixture(scope="module")
def grown_run(digits, tmp_path_factory):
    """Two epochs on digits (23 steps each), growing fc1 and fc2 at steps 10, 20 and 30."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    model, opt, grower = _grown_setup()
    initial = count_parameters(model)
    compute = TrainingCompute(model, digits.x_train[:1])
    log_dir = tmp_path_factory.mktemp("run")
    history = fit(
        model,
        opt,
        digits,
        epochs=2,
        grower=grower,
        batch_size=BATCH,
        seed=3,
        compute=compute,
        log_dir=log_dir,
    )
    torch.set_num_threads(n)
    return {
        "history": history,
        "model": model,
        "opt": opt,
        "grower": grower,
        "compute": compute,
        "initial": initial,
        "log_dir": log_dir,
    }


def test_rows_have_every_column_per_epoch(grown_run, digits) -> None:
    h: History = grown_run["history"]
    assert len(h) == 2
    assert [list(r) for r in h.rows] == [list(COLUMNS)] * 2
    steps_per_epoch = math.ceil(digits.n_train / BATCH)
    assert h.column("epoch") == [1, 2]
    assert h.column("step") == [steps_per_epoch, 2 * steps_per_epoch]
    for r in h.rows:
        assert math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"])
        assert 0.0 <= r["val_accuracy"] <= 1.0
    assert h.column("seconds")[1] >= h.column("seconds")[0] >= 0
    assert h.last is h.rows[-1]
    assert h.model is grown_run["model"] and h.grower is grown_run["grower"]


def test_growth_events_and_parameters_column(grown_run) -> None:
    h: History = grown_run["history"]
    model = grown_run["model"]
    # growth at steps 10 and 20 (epoch 1) and 30 (epoch 2); two units (fc1, fc2) each time
    assert [e.step for e in h.events] == [10, 10, 20, 20, 30, 30]
    assert [e.unit for e in h.events] == ["fc1", "fc2"] * 3
    assert h.column("growth_events") == [4, 2]
    assert h.column("units_added") == [8, 4]
    assert model.fc1.out_features == 6 + 3 * 2 and model.fc2.out_features == 12
    params = h.column("parameters")
    assert grown_run["initial"] < params[0] < params[1]
    assert params[1] == count_parameters(model) == h.events[-1].params_after
    assert h.events[0].params_before == grown_run["initial"] == h.initial_parameters
    assert grown_run["grower"].state.events == 3
    for e in h.events:
        assert e.max_abs_delta < 1e-5  # zero fan-in growth preserves the function


def test_optimizer_stays_consistent(grown_run) -> None:
    model, opt = grown_run["model"], grown_run["opt"]
    ops.check_consistent(model, opt)
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert held == {id(p) for p in model.parameters()}
    assert all(p in opt.state and "exp_avg" in opt.state[p] for p in model.parameters())


def _flops(h1: int, h2: int) -> int:
    return flops_per_example(models.mlp([64, h1, h2, 10]), torch.zeros(1, 1, 8, 8))


def test_training_flops_match_an_independent_count(grown_run, digits) -> None:
    h: History = grown_run["history"]
    compute: TrainingCompute = grown_run["compute"]
    flops = h.column("training_flops")
    assert 0 < flops[0] < flops[1] == compute.total
    assert h.column("flops_per_example")[-1] == compute.flops_per_example == _flops(12, 12)
    # recount: each step costs 3x the forward FLOPs of the architecture it ran on, each
    # growth step one forward pass of the growth batch on the pre-growth architecture
    n, steps = digits.n_train, math.ceil(digits.n_train / BATCH)
    sizes = [min(BATCH, n - i * BATCH) for i in range(steps)] * 2
    width = {s: 6 + 2 * min(3, (s - 1) // 10) for s in range(1, 2 * steps + 1)}
    expected = sum(3 * _flops(width[s], width[s]) * sizes[s - 1] for s in width)
    expected += sum(_flops(w, w) * BATCH for w in (6, 8, 10))
    assert compute.total == expected
    assert compute.steps == 2 * steps and compute.examples_trained == 2 * n
    assert compute.examples_forward == 3 * BATCH


def test_logs_parse_back_and_agree_with_history(grown_run) -> None:
    h: History = grown_run["history"]
    log_dir = grown_run["log_dir"]
    with open(log_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(h.rows)
    assert list(rows[0]) == list(COLUMNS)
    for got, want in zip(rows, h.rows, strict=True):
        for key in ("epoch", "step", "parameters", "training_flops", "growth_events"):
            assert int(got[key]) == want[key]
        for key in ("train_loss", "val_loss", "val_accuracy", "lr"):
            assert float(got[key]) == pytest.approx(want[key], rel=1e-12)
    lines = (log_dir / "events.jsonl").read_text().splitlines()
    assert len(lines) == len(h.events)
    for line, event in zip(lines, h.events, strict=True):
        d = json.loads(line)
        assert d == json.loads(json.dumps(event.as_dict()))
    summary = json.loads((log_dir / "summary.json").read_text())
    assert summary["epochs_done"] == 2 and summary["completed"] is True
    assert summary["parameters_final"] == h.last["parameters"]
    assert summary["parameters_initial"] == grown_run["initial"]
    assert summary["growth_events"] == len(h.events)
    assert summary["final_val_accuracy"] == pytest.approx(h.last["val_accuracy"])
    assert summary["grower"]["when"] == grown_run["grower"].describe()["when"]


def test_history_json_round_trip(grown_run, tmp_path) -> None:
    h: History = grown_run["history"]
    back = History.from_json(h.to_json(tmp_path / "h.json"))
    assert back.rows == h.rows
    assert [e.as_dict() for e in back.events] == [e.as_dict() for e in h.events]
    with pytest.raises(KeyError, match="unknown column"):
        h.column("nope")


def test_grower_observes_the_epoch_metrics(grown_run) -> None:
    h: History = grown_run["history"]
    metrics = grown_run["grower"].state.metrics
    assert metrics["val_loss"] == h.column("val_loss")
    assert metrics["val_accuracy"] == h.column("val_accuracy")
    assert metrics["train_loss"] == h.column("train_loss")


def test_static_fit_learns_and_keeps_its_size(digits) -> None:
    torch.manual_seed(0)
    model = models.mlp([64, 32, 10])
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    h = fit(model, opt, digits, epochs=3, scheduler=sched, batch_size=BATCH, seed=0)
    assert h.events == [] and h.column("growth_events") == [0, 0, 0]
    assert len(set(h.column("parameters"))) == 1
    losses = h.column("train_loss")
    assert losses[2] < losses[1] < losses[0]
    assert h.last["val_accuracy"] > 0.8
    assert h.column("lr") == pytest.approx([0.01, 0.005, 0.0025])  # the rate each epoch used


def test_same_seed_same_run(digits) -> None:
    runs = []
    for _ in range(2):
        model, opt, grower = _grown_setup()
        runs.append(fit(model, opt, digits, epochs=1, grower=grower, batch_size=BATCH, seed=7))
    assert runs[0].column("train_loss") == runs[1].column("train_loss")
    assert runs[0].column("val_loss") == runs[1].column("val_loss")


def test_loaders_eval_modes_and_early_stop(digits) -> None:
    train, test = digits.loaders(BATCH, seed=0)
    torch.manual_seed(0)
    model = models.mlp([64, 16, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    h = fit(model, opt, (train, test), epochs=3, eval_every="last")
    assert h.column("val_loss")[:2] == [None, None] and h.last["val_loss"] is not None
    h = fit(model, opt, (train, None), epochs=1)
    assert h.last["val_loss"] is None and h.last["val_accuracy"] is None
    h = fit(model, opt, (train, test), epochs=5, on_epoch_end=lambda hist: len(hist) == 2)
    assert len(h) == 2


def test_regression_without_test_split() -> None:
    ds = data.teacher(n=256, d_in=6, d_hidden=4, d_out=3, n_test=0)
    torch.manual_seed(0)
    model = models.mlp([6, 8, 3])
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = ds.x_train, ds.y_train
    h = fit(model, opt, (DataLoader(TensorDataset(x, y), batch_size=32), None), epochs=2)
    assert h.last["val_loss"] is None and h.last["val_accuracy"] is None
    assert h.column("train_loss")[1] < h.column("train_loss")[0]


def test_progress_bar_goes_to_stderr(digits, capsys) -> None:
    small = digits.subset(128, 32)
    model = models.mlp([64, 4, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fit(model, opt, small, epochs=2, batch_size=BATCH, progress=True)
    captured = capsys.readouterr()
    assert "epochs" in captured.err and captured.out == ""
    fit(model, opt, small, epochs=1, batch_size=BATCH)  # progress=None: quiet under pytest
    assert capsys.readouterr().err == ""


def test_bad_arguments(digits, tmp_path) -> None:
    model = models.mlp([64, 4, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="checkpoint_every needs log_dir"):
        fit(model, opt, digits, epochs=1, checkpoint_every=1)
    with pytest.raises(ValueError, match="eval_every"):
        fit(model, opt, digits, epochs=1, eval_every="sometimes")
    with pytest.raises(ValueError, match="model and optimizer are required"):
        fit(None, None, digits, epochs=1)
    with pytest.raises(TypeError, match="Dataset or a tuple"):
        fit(model, opt, [1, 2, 3], epochs=1)
    other = models.mlp([64, 4, 10])
    grower = Grower(other, torch.optim.SGD(other.parameters(), lr=0.1), when=Every(5))
    with pytest.raises(ValueError, match="grower must grow this model"):
        fit(model, opt, digits, epochs=1, grower=grower)


def test_tensorboard_missing_names_the_extra(digits, tmp_path, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):  # as if the extra were not installed
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    model = models.mlp([64, 4, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ImportError, match=r"pip install torchgrow\[tensorboard\]"):
        fit(model, opt, digits, epochs=1, log_dir=tmp_path, tensorboard=True)


def test_tensorboard_scalars_equal_the_history(digits, tmp_path) -> None:
    pytest.importorskip("tensorboard", reason="pip install torchgrow[tensorboard]")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.manual_seed(0)
    model = models.mlp([64, 4, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    history = fit(model, opt, digits, epochs=2, log_dir=tmp_path, tensorboard=True, progress=False)
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    logged = [(e.step, e.value) for e in acc.Scalars("val_accuracy")]
    expected = [(r["step"], r["val_accuracy"]) for r in history.rows]
    assert [s for s, _ in logged] == [s for s, _ in expected]
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected])


def test_growth_batches_can_come_from_a_loader_of_their_own(digits, tmp_path):
    # as the official GradMax code draws its growth batches from an iterator of their own
    growth_x = digits.x_test[:96]
    growth = DataLoader(
        TensorDataset(growth_x, digits.y_test[:96]),
        batch_size=32,
        shuffle=True,
        generator=torch.Generator().manual_seed(7),
    )

    def run(epochs, log_dir=None):
        model, opt, grower = _grown_setup()
        seen = []
        grow = grower.grow

        def recording(batch, loss_fn=None):
            seen.append(batch[0].clone())
            return grow(batch, loss_fn)

        grower.grow = recording
        args = dict(epochs=epochs, grower=grower, batch_size=BATCH, seed=3, growth_data=growth)
        if log_dir is not None:
            args.update(log_dir=log_dir, checkpoint_every=1)
        return fit(model, opt, digits, **args), seen

    history, seen = run(epochs=2)
    assert len(seen) == 3 and all(len(b) == 32 for b in seen)
    for b in seen:  # every growth batch is 32 rows of growth_x, none of the training data
        assert all(bool((row == growth_x).all(dim=(1, 2, 3)).any()) for row in b)
    assert len(history.events) == 6
    # resuming after epoch 1 restores the growth loader's shuffling: the same run
    run(epochs=1, log_dir=tmp_path)
    resumed = fit(None, None, digits, epochs=2, batch_size=BATCH, growth_data=growth,
                  resume_from=tmp_path / "checkpoint.pt")  # fmt: skip
    assert resumed.column("train_loss") == history.column("train_loss")
    for (k, a), (_, b) in zip(
        history.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k


def test_the_loops_pieces_compose_into_fit(digits, tmp_path):
    """train_epoch + validate + save_checkpoint, called by hand, give what fit gives."""
    from torchgrow.train import resume, save_checkpoint, train_epoch, validate

    model, opt, grower = _grown_setup()
    history = fit(model, opt, digits, epochs=2, grower=grower, seed=0, progress=False)
    expected = {k: v.detach().clone() for k, v in model.state_dict().items()}

    model, opt, grower = _grown_setup()
    torch.manual_seed(0)
    train_loader, test_loader = digits.loaders(128, seed=0)
    compute = TrainingCompute(model, digits.x_train[:1])
    step, rows = 0, []
    for _ in range(2):
        train_loss, events, step = train_epoch(
            model, opt, train_loader, torch.nn.functional.cross_entropy, grower, None,
            compute, step=step,
        )  # fmt: skip
        rows.append((train_loss, *validate(model, test_loader, torch.nn.functional.cross_entropy)))
    got = model.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in got)
    assert [(r["train_loss"], r["val_loss"], r["val_accuracy"]) for r in history.rows] == rows

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model, opt, grower, epoch=2, step=step, seconds=0.0, history=history,
                    compute=compute, scheduler=None, loader=train_loader)  # fmt: skip
    back, _, back_grower, _, state = resume(
        path, None, None, None, torch.nn.functional.cross_entropy
    )
    assert (state["epoch"], state["step"]) == (2, step)
    assert all(torch.equal(back.state_dict()[k], got[k]) for k in got)
    assert back_grower.state.events == grower.state.events == len(history.events) // 2 == 2
