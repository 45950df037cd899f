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
        [sys.executable, *args], capture_output=True, text=True, timeout=900, env=env, cwd=out
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    scenarios = ",".join((*METHODS, "syncbn", "different_batches", "dict_batches", *REFUSALS))
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    _run([*launcher, str(WORKER), scenarios, str(out)], out)
    alone = (*METHODS, "syncbn", "different_batches", "dict_batches")
    _run([str(WORKER), ",".join(alone), str(out)], out)
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


def _assert_same_step(ddp: dict, single: dict, where: str) -> None:
    """Equal up to rounding: |difference| <= 1e-5 of the tensor's largest entry (a few ulps)."""
    assert ddp.keys() == single.keys(), where
    for key, a in ddp.items():
        b = single[key]
        if not (torch.is_tensor(a) and a.is_floating_point()):
            assert torch.equal(a, b) if torch.is_tensor(a) else a == b, f"{where}, {key}"
            continue
        assert a.shape == b.shape, f"{where}, {key}"
        scale = float(b.abs().max()) if b.numel() else 0.0
        diff = float((a - b).abs().max()) if b.numel() else 0.0
        assert diff <= 1e-5 * scale + 1e-7, f"{where}, {key}: max |difference| {diff:.2e}"


@pytest.mark.parametrize("method", METHODS)
def test_data_parallel_training_equals_one_process_on_the_same_global_batches(saved, method):
    # Each optimizer step, and each growth step between two, taken by one process from the
    # state the data-parallel run had there (tests/ddp_worker.py:lockstep). Free-running
    # trajectories are no test: nudging every weight by 1e-7 in one process parts the runs
    # as far as data parallelism does (AutoGrow: 1.4e-3 after 4 epochs, both ways).
    ddp, single = saved(f"{method}-rank0"), saved(f"{method}-single")
    assert single["lockstep_error"] is None, single["lockstep_error"]
    assert len(ddp["steps"]) == len(single["steps"]) >= 20
    for k, (a, b) in enumerate(zip(ddp["steps"], single["steps"], strict=True)):
        for i, (pa, pb) in enumerate(zip(a, b, strict=True)):
            _assert_same_step(pa, pb, f"{method}, step {k + 1}, parameter {i}")
    assert len(ddp["growths"]) == len(single["growths"]) >= 1
    if method == "gradmax":
        for a, b in zip(ddp["rows"], single["rows"], strict=True):
            assert a["val_accuracy"] == b["val_accuracy"]
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    else:  # the same decisions, from the same measurements
        assert ddp["val"] == single["val"]
        assert ddp["test_accuracy"] == single["test_accuracy"]
        assert ddp["training_flops"] == single["training_flops"]  # global batches counted
        assert len(ddp["events"]) == len(single["events"])
        for a, b in zip(ddp["events"], single["events"], strict=True):
            # max |Δout| is measured in eval mode, on running BatchNorm statistics summed
            # in another order: equal up to rounding; every other field exactly
            da, db = a.pop("max_abs_delta"), b.pop("max_abs_delta")
            assert (da is None) == (db is None) and (da is None or da == pytest.approx(db, 1e-5))
            assert a == b


def test_synchronised_batchnorm_gives_the_global_batch_gradient(saved):
    # rank 0 holds 16 rows, rank 1 holds 8: the statistics, the gradient through them and the
    # running averages must still be those of the 24 rows in one process
    r0, r1, single = (saved(f"syncbn-{t}") for t in ("rank0", "rank1", "single"))
    for k, g in single["grads"].items():
        torch.testing.assert_close(r0["grads"][k], g, atol=1e-6, rtol=1e-5)
        assert torch.equal(r0["grads"][k], r1["grads"][k])
    for k, b in single["final"]["buffers"].items():
        torch.testing.assert_close(r0["final"]["buffers"][k], b, atol=1e-6, rtol=1e-5)


def test_the_gathered_growth_batch_drives_growth_not_the_local_one(saved):
    ddp = saved("different_batches-rank0")["final"]["params"]
    other = saved("different_batches-rank1")["final"]["params"]
    both = saved("different_batches-single")["final"]["params"]
    local = saved("different_batches-single-0")["final"]["params"]
    for k in both:
        torch.testing.assert_close(ddp[k], both[k], atol=1e-6, rtol=1e-5)
        assert torch.equal(ddp[k], other[k])
    assert any(not torch.allclose(ddp[k], local[k], atol=1e-3) for k in both)


def test_dict_batches_grow_from_the_gathered_batch_with_the_models_own_loss(saved):
    r0, r1 = saved("dict_batches-rank0"), saved("dict_batches-rank1")
    single = saved("dict_batches-single")
    params = single["final"]["params"]
    assert params["net.fc1.weight"].shape == (10, 64)  # both hidden layers grew by 2
    assert params["net.fc2.weight"].shape == (10, 10)
    for k in params:
        torch.testing.assert_close(r0["final"]["params"][k], params[k], atol=1e-6, rtol=1e-5)
        assert torch.equal(r0["final"]["params"][k], r1["final"]["params"][k])
    assert r0["deltas"] == r1["deltas"] and all(d <= 1e-6 for d in r0["deltas"])


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


def test_grower_refuses_torchs_ddp_and_unwraps_growingddp(tmp_path):
    from torchgrow import Grower, distributed, models
    from torchgrow.errors import GrowthInputError
    from torchgrow.when import Manual

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        model = models.mlp([4, 3, 2])
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        with pytest.raises(GrowthInputError, match="GrowingDDP"):
            Grower(ddp, None, when=Manual())
        wrapped = distributed.GrowingDDP(model)
        assert Grower(wrapped, None, when=Manual()).model is model
        with pytest.raises(GrowthInputError, match="already wrapped"):
            distributed.GrowingDDP(wrapped)
        assert not distributed.is_active()  # one rank: every helper is a no-op
        x = torch.randn(5, 4)
        assert distributed.shard((x, x))[0] is x
    finally:
        distributed.shutdown()
