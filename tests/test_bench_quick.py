"""Every benchmark runs end to end in its quick mode, and stamps what it writes.

The quick modes use tiny data (seconds each): a benchmark that no longer runs,
or whose tables README.md and docs/ quote lost a key, fails here.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import render  # noqa: E402
from benchmarks.common import results_dir  # noqa: E402
from benchmarks.run_all import BENCHMARKS, PENDING  # noqa: E402

ARGS = {"ddp_growth": ["--quick", "--batch", "64"]}


def _quoted_keys(name: str) -> set[str]:
    """The table keys of ``name`` that README.md and docs/ quote."""
    keys = set()
    for doc in render.documents():
        for m in render.MARKER.finditer(doc.read_text()):
            if m["name"] == name:
                keys.add(m["key"])
    return keys


@pytest.mark.parametrize("name", BENCHMARKS + PENDING)
def test_quick_mode_runs_and_writes_a_stamped_result(name):
    if name in ("ddp_growth", "fsdp_growth") and not (
        dist.is_available() and dist.is_gloo_available()
    ):
        pytest.skip("needs torch.distributed with gloo")
    threads = torch.get_num_threads()
    argv = ARGS.get(name, ["--quick"])
    try:
        payload = importlib.import_module(f"benchmarks.{name}").main(argv)
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((results_dir(quick=True) / f"{name}.json").read_text())
    meta = saved["meta"]
    assert meta["command"] == "python -m benchmarks." + name + " " + " ".join(argv)
    assert meta["torch"] == torch.__version__ and isinstance(meta["threads"], int)
    assert meta["machine"]["cpu_count"] and meta["date"][:2] == "20"
    assert meta["commit"] is None or len(meta["commit"]) == 40
    assert saved["quick"] is True and payload["quick"] is True
    tables = saved["tables"]
    assert tables and all(isinstance(v, str) and v.strip() for v in tables.values())
    missing = _quoted_keys(name) - set(tables)
    assert not missing, f"README/docs quote {sorted(missing)}, which {name} no longer writes"
    if name == "ddp_growth":
        assert payload["single"]["processes"] == 1 and payload["ddp"]["processes"] == 2
        for setup in ("single", "ddp"):
            assert all(t > 0 for t in payload[setup]["growth_step_all_s"])
    if name == "fsdp_growth":
        assert payload["world_size"] == 2
        assert all(t > 0 for times in payload["times_s"].values() for t in times)
        assert payload["sizes"]["block_params"] < payload["sizes"]["model_params"]
    if name == "transformer_growth":
        target = next(r for r in payload["runs"] if r["method"] == "scratch")["params"]
        assert all(
            r["params"] == target for r in payload["runs"]
        )  # every method ends at the target
        for r in payload["runs"]:
            for g in r["growths"]:
                preserving = r["method"] in (
                    "MSG", "MSG, d_model held", "HyperCloning", "HyperCloning 10 dB", "LEMON"
                )  # fmt: skip
                assert (g["max_abs_dout"] <= 1e-5) == preserving, (r["method"], g)
                if preserving:
                    assert abs(g["val_after"] - g["val_before"]) <= 1e-4
        asym = {r["method"]: r["asymmetry"] for r in payload["runs"]}
        assert asym["HyperCloning 10 dB"] > asym["HyperCloning"]  # noise breaks the copies apart
