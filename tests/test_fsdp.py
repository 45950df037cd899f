"""Growth under FSDP2 (``fully_shard`` per block and at the root): two gloo ranks launched by torchrun.

The scenarios live in ``tests/fsdp_worker.py``: an MLP of residual blocks and torchgrow's ``gpt``
(odd sizes, so the shards are uneven) train two Adam steps, grow two units through
:func:`torchgrow.fsdp.widen`, and train three more; the same growth runs in one process without
FSDP on the same global batches, and the tests compare what both saved.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from torchgrow import fsdp
from torchgrow.errors import GrowthInputError

WORKER = Path(__file__).with_name("fsdp_worker.py")

needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available",
)


def _run(args: list[str], out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=600, env=env, cwd=out
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
HF = ",hf_llama,hf_gpt2,hf_bert" if HAS_TRANSFORMERS else ""
POLICIES = "grower_rewarm,grower_reset,fit,nest"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    _run(
        [
            *launcher,
            str(WORKER),
            f"mlp,gpt,gpt_tx,gpt_depth,failure,depth_failure,ckpt,grower,{POLICIES}{HF}",
            str(out),
        ],
        out,
    )
    _run([str(WORKER), f"mlp,gpt,gpt_tx,gpt_depth,ckpt,grower,{POLICIES}{HF}", str(out)], out)
    return lambda name: torch.load(out / f"{name}.pt", weights_only=False)


def _max_diff(a: dict, b: dict) -> float:
    assert a["params"].keys() == b["params"].keys() and a["opt"].keys() == b["opt"].keys()
    d = [float((a["params"][n] - b["params"][n]).abs().max()) for n in a["params"]]
    for n, state in a["opt"].items():
        assert state.keys() == b["opt"][n].keys()
        d += [float((v.float() - b["opt"][n][k].float()).abs().max()) for k, v in state.items()]
    return max(d)


def _max_rel_diff(a: dict, b: dict) -> float:
    """The largest difference of a tensor of ``a`` from ``b``'s, relative to ``b``'s largest entry."""

    def rel(x: torch.Tensor, y: torch.Tensor) -> float:
        return float((x.float() - y.float()).abs().max()) / max(float(y.abs().max()), 1e-12)

    d = [rel(a["params"][n], b["params"][n]) for n in b["params"]]
    d += [rel(v, b["opt"][n][k]) for n, state in a["opt"].items() for k, v in state.items()]
    return max(d)


@needs_gloo
@pytest.mark.parametrize(
    "model, tol", [("mlp", 1e-6), ("gpt", 1e-5), ("gpt_tx", 1e-5), ("gpt_depth", 1e-5)]
)
def test_growth_under_fsdp_preserves_the_function(saved, model, tol):
    r0, r1 = saved(f"{model}-rank0"), saved(f"{model}-rank1")
    assert r0["delta"] <= tol and r1["delta"] == r0["delta"]


@needs_gloo
@pytest.mark.parametrize("model", ["mlp", "gpt"])
def test_growth_under_fsdp_equals_one_process(saved, model):
    r0, r1, single = saved(f"{model}-rank0"), saved(f"{model}-rank1"), saved(f"{model}-single")
    grown = r0["grown"]["params"]
    if model == "mlp":
        assert grown["b0.fc1.weight"].shape == (12, 7) and grown["b1.fc2.weight"].shape == (7, 13)
    else:
        assert grown["blocks.1.mlp.up.weight"].shape == (19, 10)
        assert grown["blocks.0.mlp.down.weight"].shape == (10, 17)
    assert _max_diff(r0["final"], r1["final"]) == 0.0  # one model, gathered on either rank
    assert _max_diff(r0["grown"], single["grown"]) <= 1e-5
    # three more Adam steps on the grown shards: parameters and both moments as in one process
    assert _max_diff(r0["final"], single["final"]) <= 1e-5
    assert set(r0["final"]["opt"]["b0.fc1.weight" if model == "mlp" else "blocks.1.mlp.up.weight"]) \
        == {"step", "exp_avg", "exp_avg_sq"}  # fmt: skip


@needs_gloo
def test_heads_residual_stream_and_ffn_under_fsdp_equal_one_process(saved):
    r0, r1, single = saved("gpt_tx-rank0"), saved("gpt_tx-rank1"), saved("gpt_tx-single")
    grown = r0["grown"]["params"]
    assert grown["tok_emb.weight"].shape == (13, 13)  # d_model 10 -> 13 (MSG's masked growth)
    assert grown["blocks.0.attn.q.weight"].shape == (15, 13)  # 2 heads of 5 -> 3
    assert grown["blocks.1.mlp.up.weight"].shape == (17, 13)  # FFN 15 -> 17
    assert r0["ramp_done"] and single["ramp_done"]  # the masks ramped in and came off
    assert _max_diff(r0["final"], r1["final"]) == 0.0
    assert _max_diff(r0["final"], single["final"]) <= 1e-5


@needs_gloo
def test_depth_under_fsdp_new_blocks_get_shards_and_equal_one_process(saved):
    r0, r1, single = saved("gpt_depth-rank0"), saved("gpt_depth-rank1"), saved("gpt_depth-single")
    assert r0["depth"] == single["depth"] == 5  # an identity block, then two stacked copies
    assert r0["grown"]["params"].keys() == single["grown"]["params"].keys()
    assert _max_diff(r0["final"], r1["final"]) == 0.0
    assert _max_diff(r0["final"], single["final"]) <= 1e-5


@needs_gloo
@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers is not installed")
def test_a_hugging_face_llama_grows_in_width_and_depth_under_fsdp_as_in_one_process(saved):
    """A Llama built from a config, each decoder layer and the root under fully_shard: a KV group
    of heads, MSG's masked residual-stream growth, FFN units, an identity layer inserted before
    an old one (whose layer_idx follows) and stacking 3 -> 5 layers, then three SGD steps."""
    r0, r1, single = saved("hf_llama-rank0"), saved("hf_llama-rank1"), saved("hf_llama-single")
    grown = r0["grown"]["params"]
    assert grown["model.embed_tokens.weight"].shape == (13, 15)  # hidden 12 -> 15
    assert grown["model.layers.0.self_attn.q_proj.weight"].shape == (24, 15)  # 2 -> 4 heads of 6
    assert grown["model.layers.0.self_attn.k_proj.weight"].shape == (12, 15)  # 1 -> 2 KV heads
    assert grown["model.layers.2.mlp.up_proj.weight"].shape == (17, 15)  # old layer 1: FFN 15 -> 17
    assert r0["depth"] == r1["depth"] == single["depth"] == 5
    assert r0["layer_idx"] == r1["layer_idx"] == single["layer_idx"] == [0, 1, 2, 3, 4]
    # stacking does not keep the function; the sharded model changed it exactly as one process did
    assert r0["delta"] == r1["delta"] and abs(r0["delta"] - single["delta"]) <= 1e-5
    assert _max_diff(r0["grown"], single["grown"]) <= 1e-6
    assert _max_diff(r0["final"], r1["final"]) == 0.0
    # three SGD steps at lr 0.1 amplify the float32 rounding differences of sharded and
    # single-process gradients (reduce-scatter of halves against one batch); how much depends on
    # the CPU's kernels: 6.9e-5 of the tensor's size on one machine (the embedding's momentum
    # buffer, entries up to 1.9), within the earlier absolute bound of 1e-4 on another
    assert _max_rel_diff(r0["final"], single["final"]) <= 2e-4
    assert set(r0["final"]["opt"]["model.layers.4.mlp.up_proj.weight"]) == {"momentum_buffer"}


@needs_gloo
@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers is not installed")
def test_a_hugging_face_gpt2_grows_under_fsdp_as_in_one_process(saved):
    """GPT-2 (Conv1D layers, q/k/v fused in c_attn), each block and the root under fully_shard:
    two heads, MSG's masked residual-stream growth, FFN units, an identity block, stacking."""
    r0, r1, single = saved("hf_gpt2-rank0"), saved("hf_gpt2-rank1"), saved("hf_gpt2-single")
    grown = r0["grown"]["params"]
    assert grown["transformer.wte.weight"].shape == (13, 15)  # hidden 12 -> 15
    assert grown["transformer.h.0.attn.c_attn.weight"].shape == (15, 72)  # 2 -> 4 heads of 6
    assert grown["transformer.h.2.mlp.c_fc.weight"].shape == (15, 17)  # old block 1: FFN 15 -> 17
    assert r0["layer_idx"] == r1["layer_idx"] == single["layer_idx"] == [0, 1, 2, 3, 4]
    assert r0["delta"] == r1["delta"] and abs(r0["delta"] - single["delta"]) <= 1e-5
    assert _max_diff(r0["grown"], single["grown"]) <= 1e-6
    assert _max_diff(r0["final"], r1["final"]) == 0.0
    assert _max_diff(r0["final"], single["final"]) <= 1e-5


@needs_gloo
@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers is not installed")
def test_a_hugging_face_bert_encoder_grows_under_fsdp_as_in_one_process(saved):
    """BERT (post-LN; its output is the hidden states, no logits), each layer and the root under
    fully_shard: two heads, FFN units and MSG's ramped stacking 2 -> 4 layers keep the function."""
    r0, r1, single = saved("hf_bert-rank0"), saved("hf_bert-rank1"), saved("hf_bert-single")
    grown = r0["grown"]["params"]
    assert grown["encoder.layer.0.attention.self.query.weight"].shape == (24, 12)  # 4 heads of 6
    assert grown["encoder.layer.1.intermediate.dense.weight"].shape == (17, 12)  # FFN 15 -> 17
    assert r0["depth"] == single["depth"] == 4
    assert r0["delta"] <= 1e-5 and r1["delta"] == r0["delta"] and single["delta"] <= 1e-5
    assert _max_diff(r0["grown"], single["grown"]) <= 1e-6
    assert _max_diff(r0["final"], r1["final"]) == 0.0
    assert _max_diff(r0["final"], single["final"]) <= 1e-5


@needs_gloo
@pytest.mark.parametrize(
    "model",
    ["mlp", "gpt", "gpt_tx", "gpt_depth"]
    + (["hf_llama", "hf_gpt2", "hf_bert"] if HAS_TRANSFORMERS else []),
)
def test_fsdp_structure_survives_growth(saved, model):
    blocks = {"gpt_depth": 5, "hf_llama": 5, "hf_gpt2": 5, "hf_bert": 4}.get(model, 2)
    for r in (0, 1):
        s = saved(f"{model}-rank{r}")["structure"]
        # one FSDP state per block, new blocks included, and still a single root
        assert s["roots"] == [True] + [False] * blocks and s["root_first"]
        assert s["blocks_resharded"]  # the grown blocks still free their memory after forward
        assert s["dtensors"] and s["dtensors_after_backward"]


@needs_gloo
def test_a_failing_rank_undoes_the_edit_on_every_rank(saved):
    r0, r1 = saved("failure-rank0"), saved("failure-rank1")
    assert r0["error"].startswith("DistributedGrowthError") and "rank(s) 1" in r0["error"]
    assert r1["error"] == "RuntimeError: injected failure on rank 1"
    for r in (r0, r1):
        assert r["width"] == 9
        assert _max_diff(r["unchanged"], r["after"]) == 0.0
        assert r["all_reduce"] == 2.0 and r["trains"]  # the process group and training go on


@needs_gloo
def test_a_failing_rank_undoes_a_depth_edit_on_every_rank(saved):
    r0, r1 = saved("depth_failure-rank0"), saved("depth_failure-rank1")
    assert "rank(s) 1" in r0["error"] and r1["error"] == "RuntimeError: injected failure on rank 1"
    for r in (r0, r1):
        assert r["depth"] == 2 and r["n_states"] == 3  # no new block, no new FSDP state
        assert _max_diff(r["unchanged"], r["after"]) == 0.0 and r["trains"]


@needs_gloo
def test_a_grown_sharded_checkpoint_resumes_at_its_size_on_two_ranks_and_alone(saved):
    r0, r1, single = saved("ckpt-rank0"), saved("ckpt-rank1"), saved("ckpt-single")
    # a gpt built at its original size gets the grown blocks from the record, then the shards
    assert r0["restored"] == ["tok_emb", "pos_emb", "blocks", "norm_f", "lm_head"]
    assert single["resumed"]["params"]["blocks.0.mlp.up.weight"].shape == (17, 10)
    assert single["resumed"]["params"]["blocks.1.attn.q.weight"].shape == (15, 10)
    for r in (r0, r1):
        assert torch.equal(r["loaded"], r["saved"])  # same outputs after the round trip
        assert _max_diff(r["resumed"], r["continued"]) == 0.0  # and the same next step
    assert (single["loaded"] - r0["saved"]).abs().max() <= 1e-6
    assert _max_diff(single["resumed"], r0["continued"]) <= 1e-5  # one process, global batch


def test_plain_models_are_not_sharded_and_edits_need_an_example():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    assert not fsdp.is_sharded(model)
    with pytest.raises(GrowthInputError, match="set_example"):
        fsdp.edit(model, None, lambda: None, modules=["0"], preserve=True)


@pytest.fixture()
def one_rank(tmp_path):
    """A one-rank gloo group in this process (refusals need FSDP, not two processes)."""
    if dist.is_initialized():
        pytest.skip("a process group is already initialised")
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        from torch.distributed.device_mesh import init_device_mesh

        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def _small_gpt():
    from torchgrow import models

    torch.manual_seed(0)
    return models.gpt(vocab_size=11, context=6, d_model=8, n_layer=2, n_head=2, d_ff=12)


def _sharded_and_alone(argv: list[str], out: Path) -> None:
    """``torchgrow ARGV --nproc 2 --fsdp --out OUT/fsdp``, then ``ARGV --out OUT/one`` in this
    process."""
    from torchgrow import cli

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torchgrow", *argv, "--nproc", "2", "--fsdp"]
    proc = subprocess.run([*cmd, "--out", str(out / "fsdp")], capture_output=True, text=True,
                          timeout=600, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert cli.main([*argv, "--out", str(out / "one")]) == 0


@needs_gloo
def test_run_with_fsdp_on_2_processes_matches_one_process(tmp_path):
    import csv

    argv = ["run", "--method", "gradmax", "--data", "digits", "--epochs", "2", "--grow-every"]
    argv += ["10", "--grow-times", "2", "--units", "4", "--batch-size", "32", "--no-progress"]
    _sharded_and_alone(argv, tmp_path)
    rows = {}
    for name in ("fsdp", "one"):
        with open(tmp_path / name / "metrics.csv") as fh:
            rows[name] = list(csv.DictReader(fh))
    assert len(rows["fsdp"]) == len(rows["one"]) == 2
    for a, b in zip(rows["fsdp"], rows["one"], strict=True):
        for key in ("parameters", "training_flops", "val_accuracy", "growth_events"):
            assert a[key] == b[key], key
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=1e-5)
    # alone, --fsdp has nothing to shard over
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    alone = subprocess.run([sys.executable, "-m", "torchgrow", *argv, "--fsdp"],
                           capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert alone.returncode == 2 and "add --nproc N" in alone.stderr


@needs_gloo
def test_nest_under_fsdp_refuses_unmasked_layers_and_bad_fractions(one_rank):
    from torch.distributed.fsdp import fully_shard

    from torchgrow.graph import set_example

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    fully_shard(model, mesh=one_rank)
    set_example(model, torch.randn(2, 3))
    batch = (torch.randn(4, 3), torch.randint(0, 2, (4,)))
    before = {k: v.full_tensor().clone() for k, v in model.state_dict().items()}
    loss = nn.functional.cross_entropy
    with pytest.raises(GrowthInputError, match="'0' has no connection mask"):
        fsdp.grow_connections(model, batch, loss, layers=["0"], fraction=0.5)
    with pytest.raises(GrowthInputError, match=r"fraction must be in \(0, 1\]"):
        fsdp.grow_connections(model, batch, loss, layers=["0"], fraction=0.0)
    with pytest.raises(GrowthInputError, match=r"fraction must be in \[0, 1\)"):
        fsdp.prune_connections(model, 1.0, layers=["0"])
    after = {k: v.full_tensor() for k, v in model.state_dict().items()}
    assert all(torch.equal(before[k], after[k]) for k in before)


@needs_gloo
def test_compare_with_fsdp_on_2_processes_matches_one_process(tmp_path):
    import json

    from torchgrow import cli
    from torchgrow.compare import CompareConfig

    argv = ["compare", "--methods", "static,gradmax", "--data", "digits", "--seeds", "1"]
    argv += ["--budget", "3", "--no-progress"]
    _sharded_and_alone(argv, tmp_path)
    keys = ("test_accuracy", "val_accuracy", "parameters", "training_flops", "growth_events")
    for method in ("static", "gradmax"):
        a, b = (json.loads((tmp_path / d / "runs" / method / "seed0" / "result.json").read_text())
                for d in ("fsdp", "one"))  # fmt: skip
        assert a["processes"] == 2 and {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert "fsdp = true" in (tmp_path / "fsdp" / "config.toml").read_text()
    with pytest.raises(GrowthInputError, match=r"methods \['nest'\] are not run sharded"):
        CompareConfig(methods=("static", "nest"), fsdp=True)
    with pytest.raises(SystemExit):  # alone: nothing to shard over
        cli.main([*argv, "--fsdp", "--out", str(tmp_path / "alone")])


@needs_gloo
def test_fit_refuses_its_own_checkpoints_of_a_sharded_model(one_rank, tmp_path):
    from torch.distributed.fsdp import fully_shard
    from torch.utils.data import DataLoader, TensorDataset

    from torchgrow.train import fit

    model = fully_shard(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), mesh=one_rank)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,))), batch_size=4)
    with pytest.raises(ValueError, match=r"torchgrow.fsdp.save"):
        fit(model, opt, (loader, None), epochs=1, log_dir=tmp_path, checkpoint_every=1)


@needs_gloo
def test_refusals_under_fsdp_change_nothing(one_rank, tmp_path):
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard

    from torchgrow.graph import set_example

    x = torch.randint(0, 11, (2, 6))
    # a block sharded on dim 1 by a custom placement: refused before anything is gathered
    model = _small_gpt()
    fully_shard(model.blocks[0], mesh=one_rank, shard_placement_fn=lambda p: Shard(p.dim() - 1))
    fully_shard(model.blocks[1], mesh=one_rank)
    fully_shard(model, mesh=one_rank)
    set_example(model, x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    y0 = model(x).detach()
    with pytest.raises(GrowthInputError, match="sharded on dim 0"):
        fsdp.grow_ffn(model, 2, block=0, optimizer=opt)
    assert model.blocks[0].mlp.up.out_features == 12 and torch.equal(model(x), y0)
    fsdp.grow_ffn(model, 2, block=1, optimizer=opt)  # the default placement grows
    assert model.blocks[1].mlp.up.out_features == 14
    assert (model(x) - y0).abs().max() <= 1e-6
    # restore() wants the model as built, before fully_shard
    fsdp.save(tmp_path / "ckpt", model, opt)
    with pytest.raises(GrowthInputError, match="before fully_shard"):
        fsdp.restore(tmp_path / "ckpt", model)
    # depth needs one FSDP unit per block (a new block gets shards like its siblings')
    other = _small_gpt()
    fully_shard(other, mesh=one_rank)  # the root only
    set_example(other, x)
    y1 = other(x).detach()
    with pytest.raises(GrowthInputError, match="every block is wrapped"):
        fsdp.insert_identity_block(other, 1)
    assert len(other.blocks) == 2 and torch.equal(other(x), y1)


@needs_gloo
def test_the_fsdp_grower_grows_as_the_grower_does_in_one_process(saved):
    """methods.GradMax through fsdp.Grower.of: its closed form from the gathered global growth
    batch, through the sharded model, gives the same units, singular values and new weights as
    the method's own Grower on the whole batch, and the same parameters and Adam moments three
    steps later."""
    r0, r1, single = saved("grower-rank0"), saved("grower-rank1"), saved("grower-single")
    assert [e[:2] for e in r0["events"]] == [("b0.fc1", 11), ("b1.fc1", 13)]
    assert r0["events"] == r1["events"]
    for (_, _, s, delta, g), (_, _, s1, _, g1) in zip(r0["events"], single["events"], strict=True):
        assert s == pytest.approx(s1, rel=1e-6) and g == pytest.approx(g1, rel=1e-5)
        assert delta <= 1e-6 and g > 0  # zero fan-in: the function kept; the new fan-in learns
    assert _max_diff(r0["grown"], single["grown"]) <= 1e-6
    assert _max_diff(r0["final"], single["final"]) <= 1e-5
    assert _max_diff(r0["final"], r1["final"]) == 0
    assert r0["structure"] == {
        "roots": [True, False, False],
        "root_first": True,
        "blocks_resharded": True,
        "dtensors": True,
        "dtensors_after_backward": True,
    }


@needs_gloo
def test_the_fsdp_grower_refuses_an_initialiser_that_runs_the_whole_model(saved):
    for r in (saved("grower-rank0"), saved("grower-rank1")):
        assert "GrowthInputError" in r["refused"] and "'inp' (iterative)" in r["refused"]
        assert "how.Random" in r["refused"]
        assert r["unchanged"] == 0


@needs_gloo
def test_the_fsdp_grower_flushes_subnormal_state_in_each_ranks_own_shard(saved):
    for r in (saved("grower-rank0"), saved("grower-rank1")):
        assert r["flushed"] >= 1 and r["flushed_to"] == 0.0


def test_the_fsdp_grower_refuses_a_model_without_fsdp_state():
    from torchgrow import when

    model = nn.Linear(3, 2)
    with pytest.raises(GrowthInputError, match="no FSDP state: use torchgrow.Grower"):
        fsdp.Grower(model, when=when.Manual())


def test_the_fsdp_grower_of_takes_only_a_grower():
    with pytest.raises(GrowthInputError, match="expected a torchgrow.Grower, got Linear"):
        fsdp.Grower.of(nn.Linear(3, 2))


@needs_gloo
def test_nest_grows_and_prunes_connections_under_fsdp_as_in_one_process(saved):
    """Masked layers train under FSDP with their dormant weights at exactly 0; NeST's scores
    (dL/dW of every entry) from the ranks' halves of the growth batch, reduced over the ranks,
    activate the same connections as one process on the whole batch, and magnitude pruning
    prunes the same ones; parameters and Adam moments equal one process to 1e-6."""
    r0, r1, single = saved("nest-rank0"), saved("nest-rank1"), saved("nest-single")
    assert r0["grown"] == r1["grown"] == single["grown"] == {"b0.fc1": 8, "b1.fc1": 10}
    assert r0["pruned"] == single["pruned"] and sum(r0["pruned"].values()) > 0
    for name, mask in single["masks"].items():
        assert torch.equal(r0["masks"][name], mask) and torch.equal(r1["masks"][name], mask)
    assert r0["dormant_max"] == r1["dormant_max"] == single["dormant_max"] == 0.0
    assert _max_diff(r0["after_growth"], single["after_growth"]) <= 1e-6
    assert _max_diff(r0["final"], single["final"]) <= 1e-6
    assert _max_diff(r0["final"], r1["final"]) == 0


@needs_gloo
def test_fit_trains_and_grows_a_sharded_model_as_one_process_does(saved):
    """torchgrow.train.fit under FSDP (no DDP wrapper; each global batch cut into one slice per
    rank; every rank evaluating every example) with methods.GradMax through fsdp.Grower.of:
    the same rows, growth events, parameters and Adam moments as fit in one process."""
    r0, r1, single = saved("fit-rank0"), saved("fit-rank1"), saved("fit-single")
    assert r0["events"] == single["events"] == [
        (3, "b0.fc1", 11), (3, "b1.fc1", 13), (6, "b0.fc1", 13), (6, "b1.fc1", 15)
    ]  # fmt: skip
    for a, b in zip(r0["rows"], single["rows"], strict=True):
        assert a[2:] == b[2:] and a[:2] == pytest.approx(b[:2], rel=1e-6)
    assert _max_diff(r0["final"], single["final"]) <= 1e-6
    assert _max_diff(r0["final"], r1["final"]) == 0


@needs_gloo
@pytest.mark.parametrize("policy", ["rewarm", "reset"])
def test_the_fsdp_grower_applies_an_optimizer_policy_as_in_one_process(saved, policy):
    """OptimizerPolicy(rewarm_steps=2) (each rank blending its own shard's new entries) and
    OptimizerPolicy(state="reset") under fsdp.Grower: the same parameters and Adam moments as
    the policy in one process, right after growth and three steps later."""
    r0, r1 = saved(f"grower_{policy}-rank0"), saved(f"grower_{policy}-rank1")
    single, plain = saved(f"grower_{policy}-single"), saved("grower-single")
    assert [e[:2] for e in r0["events"]] == [("b0.fc1", 11), ("b1.fc1", 13)]
    assert _max_diff(r0["grown"], single["grown"]) <= 1e-6
    assert _max_diff(r0["final"], single["final"]) <= 1e-5
    assert _max_diff(r0["final"], r1["final"]) == 0
    # and the policy did act: its final state differs from the carry alone
    assert _max_diff(single["final"], plain["final"]) > 1e-4
