"""Tests of the ``torchgrow`` command (torchgrow.cli)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import pytest
import torch

from torchgrow import Grower, cli
from torchgrow.how import Zero
from torchgrow.size import Units
from torchgrow.when import Every

TINY = [
    "--data",
    "digits",
    "--epochs",
    "2",
    "--widths",
    "64,8,10",
    "--grow-every",
    "10",
    "--grow-times",
    "2",
    "--units",
    "4",
    "--threads",
    "1",
]


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_run_grows_and_writes_outputs(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert cli.main(["run", "--method", "random", *TINY, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Growth events" in text and "fc1" in text
    assert "8 → 12" in text and "12 → 16" in text
    assert re.search(r"final: test accuracy \d+\.\d%", text)
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [(e["step"], e["unit"], e["width_after"]) for e in events] == [
        (10, "fc1", 12),
        (20, "fc1", 16),
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parameters_initial"] == 64 * 8 + 8 + 8 * 10 + 10
    assert summary["parameters_final"] == 64 * 16 + 16 + 16 * 10 + 10
    assert summary["grower"]["how"].startswith("zero fan-in, random fan-out")


def test_run_static_and_zero(tmp_path, capsys) -> None:
    assert cli.main(["run", "--method", "static", *TINY, "--out", str(tmp_path / "s")]) == 0
    assert "growth: none" in capsys.readouterr().out
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["growth_events"] == 0 and summary["grower"] is None
    assert cli.main(["run", "--method", "zero", *TINY, "--optimizer", "sgd"]) == 0
    assert "zero fan-in and fan-out" in capsys.readouterr().out


def test_run_checkpoint_and_resume(tmp_path, capsys) -> None:
    out = tmp_path / "ck"
    args = ["run", *TINY, "--out", str(out), "--checkpoint-every", "1"]
    assert cli.main([*args[:4], "1", *args[5:]]) == 0  # one epoch
    assert (out / "checkpoint.pt").is_file()
    assert cli.main([*args, "--resume", str(out / "checkpoint.pt")]) == 0
    assert "resumed from" in capsys.readouterr().out
    with open(out / "metrics.csv", newline="") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2]


def test_demo_quick_prints_the_report(capsys) -> None:
    threads = torch.get_num_threads()
    assert cli.main(["demo", "--quick"]) == 0
    text = capsys.readouterr().out
    for needle in ("Growth events", "static small", "static large", "Test results", "total time"):
        assert needle in text
    assert re.search(r"grown network: \d+\.\d% test accuracy, (not )?better than", text)
    # three growth steps (50, 100, 150) of two layers each, all function-preserving
    steps = re.findall(r"│\s+(\d+) │ fc[12]\s", text)
    assert steps == ["50", "50", "100", "100", "150", "150"]
    delta = float(re.search(r"largest output change caused by a growth step: (\S+)", text)[1])
    assert delta < 1e-4
    assert torch.get_num_threads() == threads  # the demo's single thread is given back


def test_unknown_method_lists_valid_ones(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--method", "gradmaxx"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'gradmaxx'" in err
    for name in ("random", "zero", "static"):
        assert f"'{name}'" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--data", "digits", "--widths", "40,16,10"], "input width 64"),
        (["run", "--data", "mnist1d", "--model", "lenet5"], "needs image data"),
        (["run", "--epochs", "-1"], "expected an integer >= 0"),
        (["run", "--widths", "40,x"], "comma-separated integers"),
        (["run", "--checkpoint-every", "2"], "needs --out"),
        (["run", "--data", "cifar"], "'cifar' is not one of mnist1d, digits"),
        (["run", "--data", "digits", "--model", "lenet_300_100", "--widths", "64,8"], "mlp only"),
        ([], "required"),
    ],
)
def test_bad_arguments(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_registered_method_is_available(tmp_path, capsys) -> None:
    def make(model, optimizer, args):
        return Grower(model, optimizer, when=Every(5, times=1), how=Zero(), size=Units(3))

    cli.register_method(cli.Method("custom-test", "a test method", make))
    try:
        assert cli.build_parser().parse_args(["run", "--method", "custom-test"]).method == (
            "custom-test"
        )
        assert cli.main(["run", "--method", "custom-test", *TINY]) == 0
        assert "8 → 11" in capsys.readouterr().out
    finally:
        del cli.METHODS["custom-test"]


def test_python_dash_m() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "torchgrow", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0
    assert "--method" in res.stdout and "random" in res.stdout and "static" in res.stdout
