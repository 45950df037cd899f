"""Growth under DistributedDataParallel: two gloo ranks launched by torchrun.

The scenarios live in ``tests/ddp_worker.py``; each runs once under
``torchrun --nproc-per-node 2`` and once as a single process on the same global
batches, and the tests compare what they saved.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

WORKER = Path(__file__).with_name("ddp_worker.py")
METHODS = ("gradmax", "nest", "autogrow", "compnet")
REFUSALS = ("mismatch", "failure", "bad_batch")

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available",
)


def _run(args: list[str], out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, env=env, cwd=out
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    scenarios = ",".join((*METHODS, "different_batches", *REFUSALS))
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    _run([*launcher, str(WORKER), scenarios, str(out)], out)
    _run([str(WORKER), ",".join((*METHODS, "different_batches")), str(out)], out)
    _run([str(WORKER), "different_batches", str(out), "0"], out)

    def load(name: str) -> dict:
        return torch.load(out / f"{name}.pt", weights_only=False)

    return load


def _equal_state(a: dict, b: dict) -> bool:
    if a["params"].keys() != b["params"].keys():
        return False
    if not all(torch.equal(a["params"][k], b["params"][k]) for k in a["params"]):
        return False
    if (a["opt"] is None) != (b["opt"] is None):
        return False
    for sa, sb in zip(a["opt"] or [], b["opt"] or [], strict=True):
        if sa.keys() != sb.keys():
            return False
        for k in sa:
            same = torch.equal(sa[k], sb[k]) if torch.is_tensor(sa[k]) else sa[k] == sb[k]
            if not same:
                return False
    return True


@pytest.mark.parametrize("method", METHODS)
def test_every_growth_leaves_the_ranks_identical(saved, method):
    r0, r1 = saved(f"{method}-rank0"), saved(f"{method}-rank1")
    assert len(r0["growths"]) == len(r1["growths"]) >= 1
    for g0, g1 in zip(r0["growths"], r1["growths"], strict=True):
        assert _equal_state(g0, g1), f"{method}: ranks differ after a growth step"
    assert _equal_state(r0["final"], r1["final"])
    key = "rows" if method == "gradmax" else "val"
    assert r0[key] == r1[key]  # the same validation numbers, hence the same decisions


@pytest.mark.parametrize("method", ["gradmax", "nest", "compnet"])
def test_data_parallel_training_equals_one_process_on_the_same_global_batches(saved, method):
    ddp, single = saved(f"{method}-rank0"), saved(f"{method}-single")
    assert len(ddp["growths"]) == len(single["growths"])
    for k, v in single["final"]["params"].items():
        torch.testing.assert_close(ddp["final"]["params"][k], v, atol=1e-5, rtol=1e-4)
    if method == "gradmax":
        for a, b in zip(ddp["rows"], single["rows"], strict=True):
            assert a["val_accuracy"] == b["val_accuracy"]
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    else:
        assert ddp["val"] == single["val"]
        assert ddp["test_accuracy"] == single["test_accuracy"]
        assert ddp["training_flops"] == single["training_flops"]  # global batches counted


def test_autogrow_under_ddp_decides_once_for_all_ranks(saved):
    # AutoGrow's blocks hold BatchNorm: under DDP each rank normalises over its share of the
    # batch (torch's SyncBatchNorm needs a GPU), so the run is not the single-process one; what
    # must hold is that the ranks grow the same blocks at the same epochs.
    r0, r1 = saved("autogrow-rank0"), saved("autogrow-rank1")
    assert r0["events"] == r1["events"] and r0["val"] == r1["val"]
    assert any(e["kind"] == "grow" for e in r0["events"])


def test_the_gathered_growth_batch_drives_growth_not_the_local_one(saved):
    ddp = saved("different_batches-rank0")["final"]["params"]
    other = saved("different_batches-rank1")["final"]["params"]
    both = saved("different_batches-single")["final"]["params"]
    local = saved("different_batches-single-0")["final"]["params"]
    for k in both:
        torch.testing.assert_close(ddp[k], both[k], atol=1e-6, rtol=1e-5)
        assert torch.equal(ddp[k], other[k])
    assert any(not torch.allclose(ddp[k], local[k], atol=1e-3) for k in both)


@pytest.mark.parametrize("kind", REFUSALS)
def test_disagreement_and_failure_are_errors_on_every_rank_not_hangs(saved, kind):
    r0, r1 = saved(f"{kind}-rank0"), saved(f"{kind}-rank1")
    for r in (r0, r1):
        assert r["error"] is not None, kind
        assert r["unchanged"], f"{kind}: a rank kept a half-done growth step"
        assert r["allreduce"] == 2.0  # the process group still works afterwards
    if kind == "failure":
        assert "simulated failure on rank 1" in r1["error"]
        assert r0["error"].startswith("DistributedGrowthError") and "rank(s) 1" in r0["error"]
    else:
        assert r0["error"].startswith("DistributedGrowthError")
        assert r1["error"].startswith("DistributedGrowthError")


def test_run_with_nproc_2_relaunches_under_torchrun_and_matches_one_process(tmp_path):
    from torchgrow import cli

    argv = ["run", "--method", "gradmax", "--data", "digits", "--epochs", "2", "--grow-every"]
    argv += ["10", "--grow-times", "2", "--units", "4", "--batch-size", "32", "--no-progress"]
    assert cli.main([*argv, "--nproc", "2", "--out", str(tmp_path / "ddp")]) == 0
    assert cli.main([*argv, "--out", str(tmp_path / "one")]) == 0
    rows = {}
    for name in ("ddp", "one"):
        with open(tmp_path / name / "metrics.csv") as fh:
            rows[name] = list(csv.DictReader(fh))
    assert len(rows["ddp"]) == len(rows["one"]) == 2
    for a, b in zip(rows["ddp"], rows["one"], strict=True):
        for key in ("parameters", "training_flops", "val_accuracy", "growth_events"):
            assert a[key] == b[key], key
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=1e-5)
