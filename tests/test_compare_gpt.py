"""torchgrow compare on the gpt family: the transformer methods against a scratch GPT, end to end."""

from __future__ import annotations

import json
import math

import pytest

from torchgrow import cli
from torchgrow.compare import CompareConfig, run_compare, run_dir
from torchgrow.errors import GrowthInputError

TINY = dict(model="gpt", width=32, batch_size=2, epoch_tokens=640, budget_epochs=3, threads=1)


def test_gpt_settings_default_to_the_familys_own_and_refuse_the_other_familys(tmp_path):
    cfg = CompareConfig(model="gpt")
    assert cfg.data == "text_chars" and cfg.lr == 2e-3
    assert cfg.methods == ("gpt_static", "g_stack", "midas", "msg", "hypercloning", "lemon")
    assert CompareConfig().methods[0] == "static" and CompareConfig().lr == 0.05
    (tmp_path / "c.toml").write_text(CompareConfig(**TINY).to_toml())
    assert CompareConfig.from_toml(tmp_path / "c.toml") == CompareConfig(**TINY)
    for bad, match in [
        (dict(model="gpt", methods=("static",)), "another model family"),
        (dict(methods=("msg",)), "another model family"),
        (dict(model="gpt", data="digits"), "unknown data set"),
        (dict(model="gpt", train_size=100), "fixed splits"),
        (dict(epoch_tokens=100), "epoch_tokens"),
        (dict(model="transformer"), "unknown model family"),
    ]:
        with pytest.raises(GrowthInputError, match=match):
            CompareConfig(**bad)


def test_compare_runs_every_transformer_method_into_the_same_target(tmp_path):
    cfg = CompareConfig(**TINY)
    results = {r["method"]: r for r in run_compare(cfg, tmp_path, progress=False)}
    assert set(results) == set(cfg.methods)
    target = results["gpt_static"]["parameters"]
    for name, r in results.items():
        assert r["parameters"] == target, name  # every method ends at the target
        assert r["model"] == "GPT 4L d128 4h FFN 512"
        assert r["epochs"] == 3 and r["extra"]["steps"] == 15  # 640 tokens = 5 steps of 2 x 64
        x = r["extra"]
        assert x["test_bits_per_char"] == pytest.approx(x["test_loss"] / math.log(2))
        assert 0 <= r["test_accuracy"] <= 1
    assert results["gpt_static"]["growth_events"] == 0
    assert [results[m]["growth_events"] for m in ("g_stack", "midas", "msg")] == [1, 3, 5]
    for preserving in ("msg", "hypercloning", "lemon"):
        assert results[preserving]["max_abs_delta"] <= 1e-5, preserving
    assert results["g_stack"]["max_abs_delta"] > 1e-3  # stacking copies is not preserving
    # the static model pays full price from the first step; the grown ones start smaller
    flops = {m: r["training_flops"] for m, r in results.items()}
    assert all(flops[m] < flops["gpt_static"] for m in flops if m != "gpt_static")
    events = [json.loads(line) for line in
              (run_dir(tmp_path, "msg", 0) / "events.jsonl").read_text().splitlines()]  # fmt: skip
    assert [e["detail"].split(" (")[0] for e in events] == [
        "FFN 128->512", "layers 1->2", "hidden 64->128", "heads 2->4", "layers 2->4"
    ]  # fmt: skip
    # the report names the metric and shows bits per character
    assert cli.main(["report", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "Test next-char acc. %" in report and "Test bits/char" in report
    assert "AdamW peak lr 0.002" in report
