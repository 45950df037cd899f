"""Every tutorial runs as a user runs it (``python tutorials/<name>.py --quick``) and does what
its text says."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks.common import ROOT

TUTORIALS = ROOT / "tutorials"


def _run(name: str, tmp_path) -> dict:
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(TUTORIALS / f"{name}.py"), "--quick", "--json", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_every_tutorial_is_tested():
    scripts = {p.stem for p in TUTORIALS.glob("*.py") if not p.stem.startswith("_")}
    tested = {
        n for n in globals() if n.startswith("test_") and n != "test_every_tutorial_is_tested"
    }
    assert {f"test_{s}" for s in scripts} == tested


def test_grow_your_cnn(tmp_path):
    got = _run("grow_your_cnn", tmp_path)
    assert got["widths"] == [4 + 12, 8 + 12, 16 + 12] and got["events"] == 9
    assert got["max_abs_delta"] < 1e-5 and got["accuracy"] > 0.3


def test_grow_a_transformer(tmp_path):
    got = _run("grow_a_transformer", tmp_path)
    assert got["events"] == ["FFN 64->256", "layers 1->2", "heads 1->2", "layers 2->4"]
    assert got["max_abs_dout"] < 1e-5 and got["layers"] == 4
    assert got["last_loss"] < got["first_loss"] - 1.0


def test_nest_lenet(tmp_path):
    got = _run("nest_lenet", tmp_path)
    assert got["phases"][0] == "seed" and "grow" in got["phases"] and "prune" in got["phases"]
    assert got["test_accuracy"] > 0.5
    assert got["active_parameters"] < got["dense_parameters"] / 2  # sparse: masks keep it small


def test_autogrow_resnet(tmp_path):
    got = _run("autogrow_resnet", tmp_path)
    assert got["growth_steps"] >= 1 and sum(got["arch"]) > 3  # deeper than the 1-1-1 seed
    assert got["test_accuracy"] > 0.5


def test_compnet_deepen(tmp_path):
    got = _run("compnet_deepen", tmp_path)
    (d,) = got["deepenings"]
    assert d["max_abs_delta"] < 1e-6  # the inserted layer computes the identity
    assert got["test_accuracy"] > 0.5
    assert d["kept"] == (d["val_accuracy"] >= got["parent"]["val_accuracy"])


def test_compare_methods(tmp_path):
    got = _run("compare_methods", tmp_path)
    assert got["methods"] == ["gradmax", "nest", "random", "static"]
    assert "| static |" in got["report_md"] and "| GradMax |" in got["report_md"]
    assert got["parameters"]["gradmax"] > got["parameters"]["static"]  # it grew
    assert got["report_html_bytes"] > 10_000


def test_grow_under_ddp(tmp_path):
    got = _run("grow_under_ddp", tmp_path)
    a, b = got["ranks"]
    assert a == b  # the same growth, the same weights, on both ranks
    assert a["widths"] == [28, 28] and a["events"] == 6


def test_custom_layer_and_op(tmp_path):
    got = _run("custom_layer_and_op", tmp_path)
    assert "no op rule for 'cummax'" in got["refused"] and got["units"] == ["fc1"]
    assert got["widths"] == [16, 16, 16] and got["max_abs_delta"] < 1e-5
    assert got["accuracy"] > 0.6
