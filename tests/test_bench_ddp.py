"""The DDP growth-step benchmark runs (quick settings) and measures both set-ups."""

from __future__ import annotations

import json

import pytest
import torch.distributed as dist

from benchmarks import ddp_growth
from benchmarks.common import results_dir


@pytest.mark.skipif(not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_quick_ddp_growth_benchmark_times_one_process_and_two_ranks():
    payload = ddp_growth.main(["--quick", "--batch", "64"])
    assert payload["single"]["processes"] == 1 and payload["ddp"]["processes"] == 2
    for setup in ("single", "ddp"):
        times = payload[setup]["growth_step_all_s"]
        assert len(times) == ddp_growth.REPEATS and all(t > 0 for t in times)
        assert payload[setup]["train_step_s"] > 0
    saved = json.loads((results_dir(quick=True) / "ddp_growth.json").read_text())
    assert saved["rows"] == payload["rows"]
