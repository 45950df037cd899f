"""torchgrow run with the user's own data and model (--data/--model package.module:function)."""

from __future__ import annotations

import pytest

from benchmarks.common import ROOT
from torchgrow import cli, cli_user


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_run_grows_the_users_model_on_the_users_data(at_root, tmp_path, capsys):
    rc = cli.main([
        "run", "--data", "examples.my_task:spirals", "--model", "examples.my_task:two_layer_net",
        "--method", "gradmax", "--epochs", "3", "--grow-every", "10", "--grow-times", "2",
        "--units", "2", "--batch-size", "32", "--out", str(tmp_path), "--tensorboard",
        "--no-progress",
    ])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "examples.my_task:spirals (480 train / 120 test)" in out
    assert list(tmp_path.glob("**/events.out.tfevents.*"))  # the TensorBoard curves


def test_the_factory_gets_the_datas_shape_and_classes(at_root):
    ds = cli_user.user_dataset("examples.my_task:spirals")
    assert ds.task == "classification" and ds.num_classes == 2 and ds.input_shape == (2,)
    model = cli_user.user_model("examples.my_task:two_layer_net", ds)
    assert model.hidden.in_features == 2 and model.head.out_features == 2


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("examples.my_task", "not one of"),
        ("examples.nope:f", "cannot import 'examples.nope'"),
        ("examples.my_task:nope", "has no 'nope'"),
        ("examples.my_task:math", "not a function"),
    ],
)
def test_bad_specs_get_clear_errors(at_root, spec, why, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--data", spec, "--epochs", "1"])
    assert exc.value.code == 2
    assert why in capsys.readouterr().err


def test_a_data_function_returning_something_else_is_refused(at_root, capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--data", "examples.my_task:two_layer_net", "--epochs", "1"])
    assert "calling it with no arguments failed" in capsys.readouterr().err
