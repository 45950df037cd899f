"""Scenarios run by ``tests/test_fsdp.py`` under ``torchrun --nproc-per-node 2`` (gloo, CPU).

``python tests/fsdp_worker.py SCENARIO[,SCENARIO...] OUT`` writes ``OUT/<scenario>-rank<r>.pt``
under torchrun, or ``OUT/<scenario>-single.pt`` alone: the reference, the same growth done in one
process on the same global batches without FSDP. Sizes are odd so that shards are uneven.
"""

from __future__ import annotations

import sys
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from torchgrow import fsdp, models, ops
from torchgrow.graph import set_example

STEPS_BEFORE, STEPS_AFTER, BATCH = 2, 3, 8


class Block(nn.Module):
    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, h), nn.Linear(h, d)

    def forward(self, x):
        return x + self.fc2(torch.tanh(self.fc1(x)))


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        inp=nn.Linear(5, 7), b0=Block(7, 9), b1=Block(7, 11), out=nn.Linear(7, 3),
    ))  # fmt: skip


def gpt() -> nn.Module:
    # no biases: a key bias has zero gradient in exact arithmetic (softmax ignores a shift shared
    # by all keys), so Adam would turn its rounding noise, which differs between a sharded and a
    # single-process run, into steps of the learning rate's size
    torch.manual_seed(0)
    return models.gpt(
        vocab_size=13, context=9, d_model=10, n_layer=2, n_head=2, d_ff=15, bias=False
    )


def llama() -> nn.Module:
    """A Hugging Face Llama built from a config (grouped-query attention: 2 heads, 1 KV head)."""
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=13, hidden_size=12, intermediate_size=15, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=9, use_cache=False,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


def gpt2() -> nn.Module:
    """A Hugging Face GPT-2 built from a config (Conv1D layers, fused q/k/v), dropout off."""
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=13, n_embd=12, n_layer=2, n_head=2, n_inner=15, n_positions=9,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


def bert() -> nn.Module:
    """A Hugging Face BERT encoder built from a config, dropout off (no pooler)."""
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=13, hidden_size=12, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=15, max_position_embeddings=9, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return transformers.BertModel(config, add_pooling_layer=False)


def _blocks(model: nn.Module) -> list[nn.Module]:
    if hasattr(model, "blocks"):
        return list(model.blocks)
    if hasattr(model, "model"):
        return list(model.model.layers)
    if hasattr(model, "transformer"):
        return list(model.transformer.h)
    if hasattr(model, "encoder"):
        return list(model.encoder.layer)
    return [model.b0, model.b1]


def _layer_idx(block: nn.Module) -> int | None:
    attn = getattr(block, "self_attn", None) or getattr(block, "attn", None)
    return None if attn is None else attn.layer_idx  # BERT's layers keep none


def _logits(out: Any) -> torch.Tensor:
    if hasattr(out, "logits"):
        return out.logits
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out


def _shard(model: nn.Module) -> nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for b in _blocks(model):
        fully_shard(b, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def _data(kind: str, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    if kind == "gpt":
        x = torch.randint(0, 13, (BATCH, 9), generator=g)
        return x, torch.randint(0, 13, (BATCH, 9), generator=g)
    return torch.randn(BATCH, 5, generator=g), torch.randint(0, 3, (BATCH,), generator=g)


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = _logits(out)  # a BERT encoder's hidden states read as logits: targets modulo their width
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1) % out.shape[-1])


def _train(model, opt, kind: str, steps: range) -> None:
    sharded = dist.is_initialized()
    for step in steps:
        x, y = _data(kind, step)
        if sharded:  # each rank its half of the global batch; FSDP averages the gradients
            r, n = dist.get_rank(), dist.get_world_size()
            x, y = x.chunk(n)[r], y.chunk(n)[r]
        opt.zero_grad()
        _loss(model(x), y).backward()
        opt.step()


def _full(t: Any) -> Any:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _state(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    if dist.is_initialized():
        fsdp.reshard_idle(model)  # the parameters the optimizer holds
    names = {id(p): n for n, p in model.named_parameters()}
    return {
        "params": {n: _full(p).detach().clone() for n, p in model.named_parameters()},
        "opt": {
            names[id(p)]: {k: _full(v).clone() for k, v in opt.state[p].items()}
            for group in opt.param_groups
            for p in group["params"]
            if p in opt.state
        },
    }


def _structure(model: nn.Module) -> dict[str, Any]:
    """FSDP's bookkeeping after a training forward: roots, DTensors, resharding."""
    from torch.distributed.tensor import DTensor

    from torchgrow.fsdp.state import states as fsdp_states

    states = fsdp_states(model)
    x, _ = _data("mlp" if hasattr(model, "b0") else "gpt", 99)
    out = _logits(model(x[:2]))  # a training forward: blocks reshard after it, the root does not
    blocks = [s for name, s in states if name]
    res = {
        "roots": [s._is_root for _, s in states],
        "root_first": states[0][0] == "",
        "blocks_resharded": all(g.is_sharded for s in blocks for g in s._fsdp_param_groups),
        "dtensors": all(isinstance(p, DTensor) for b in _blocks(model) for p in b.parameters()),
    }
    out.float().sum().backward()  # finish the iteration FSDP started
    res["dtensors_after_backward"] = all(isinstance(p, DTensor) for p in model.parameters())
    return res


def _edit(kind: str, model: nn.Module, opt, sharded: bool) -> dict[str, Any]:
    """One growth edit: the same tensors in both runs; its max |Δoutput| on the example."""
    x, _ = _data(kind, 50)
    set_example(model, x[:3])
    with torch.no_grad():
        before = model(x[:3]).float()
    widen = fsdp.widen if sharded else ops.widen
    g = torch.Generator().manual_seed(7)
    if kind == "gpt":  # block 1's FFN 15 -> 19 (random fan-in), block 0's 15 -> 17 (zero fan-in)
        widen(model, "blocks.1.mlp.up", 4, fan_in=torch.randn(4, 10, generator=g), optimizer=opt)
        widen(model, "blocks.0.mlp.up", 2, fan_out=torch.randn(10, 2, generator=g), optimizer=opt)
    else:  # b0.fc1 9 -> 12 (random fan-in), b1.fc1 11 -> 13 (zero fan-in)
        widen(model, "b0.fc1", 3, fan_in=torch.randn(3, 7, generator=g), optimizer=opt)
        widen(model, "b1.fc1", 2, fan_out=torch.randn(7, 2, generator=g), optimizer=opt)
    with torch.no_grad():
        after = model(x[:3]).float()
    return {"delta": float((after - before).abs().max())}


def _transformer_edits(model: nn.Module, opt, sharded: bool, ramp) -> dict[str, Any]:
    """A head for block 0, three residual-stream coordinates (masked, MSG), two FFN units."""
    x, _ = _data("gpt", 50)
    set_example(model, x[:3])
    with torch.no_grad():
        before = model(x[:3]).float()
    lib = fsdp if sharded else ops
    g = torch.Generator().manual_seed(7)
    kw = {} if sharded else {"example": x[:3]}
    lib.add_heads(model, 1, block=0, generator=g, optimizer=opt, **kw)
    lib.grow_hidden(model, 3, ramp=ramp, std=0.5, generator=g, optimizer=opt, **kw)
    lib.grow_ffn(model, 2, block=1, generator=g, optimizer=opt, **kw)
    with torch.no_grad():
        after = model(x[:3]).float()
    return {"delta": float((after - before).abs().max())}


def grow_transformer(out: Path, sharded: bool) -> dict[str, Any]:
    from torchgrow.ops import Ramp

    model = gpt()
    if sharded:
        _shard(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train(model, opt, "gpt", range(STEPS_BEFORE))
    ramp = Ramp(2)
    res = _transformer_edits(model, opt, sharded, ramp)
    res["grown"] = _state(model, opt)
    for step in range(STEPS_BEFORE, STEPS_BEFORE + STEPS_AFTER):
        _train(model, opt, "gpt", range(step, step + 1))
        ramp.step()
    res["ramp_done"] = not ramp.active
    res["final"] = _state(model, opt)
    if sharded:
        res["structure"] = _structure(model)
    return res


def _train_on(model: nn.Module, opt, ramp, sharded: bool, res: dict[str, Any]) -> dict[str, Any]:
    """The grown state, three more steps (the ramp advancing), the final state and structure."""
    res["grown"] = _state(model, opt)
    for step in range(STEPS_BEFORE, STEPS_BEFORE + STEPS_AFTER):
        _train(model, opt, "gpt", range(step, step + 1))
        ramp.step()
    res["final"] = _state(model, opt)
    if sharded:
        res["structure"] = _structure(model)
    return res


def _grow_hf_model(model: nn.Module, sharded: bool, edits: Any) -> dict[str, Any]:
    """Train, run ``edits(lib, model, opt, ramp, generator, kw)`` (``lib``: torchgrow.fsdp when
    sharded, else torchgrow.ops), record the output change and the depth, and train on."""
    from torchgrow.ops import Ramp

    if sharded:
        _shard(model)
    # SGD: Adam divides each gradient by its own running size, so entries whose exact gradient is
    # about zero (the masked stream coordinates reaching an identity layer's zero projections)
    # turn rounding differences between a sharded and a single run into steps of the learning
    # rate's size; the Adam state's carrying is what the gpt scenarios compare
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train(model, opt, "gpt", range(STEPS_BEFORE))
    x, _ = _data("gpt", 50)
    set_example(model, x[:3])
    with torch.no_grad():
        before = _logits(model(x[:3])).float()
    ramp = Ramp(2)
    kw = {} if sharded else {"example": x[:3]}
    edits(fsdp if sharded else ops, model, opt, ramp, torch.Generator().manual_seed(7), kw)
    with torch.no_grad():
        after = _logits(model(x[:3])).float()
    res: dict[str, Any] = {"delta": float((after - before).abs().max())}
    res["depth"] = len(_blocks(model))
    res["layer_idx"] = [_layer_idx(b) for b in _blocks(model)]
    return _train_on(model, opt, ramp, sharded, res)


def grow_hf(out: Path, sharded: bool, build: Any = None) -> dict[str, Any]:
    """A Hugging Face Llama (or GPT-2) under FSDP: a KV group of heads (GPT-2: two heads), three
    residual-stream coordinates (MSG's masks), FFN units, an identity layer, then stacking 3 -> 5
    layers; training goes on."""

    def edits(lib, model, opt, ramp, g, kw) -> None:  # noqa: ANN001
        lib.add_heads(model, 2, block=0, generator=g, optimizer=opt, **kw)  # 2 -> 4, 1 -> 2 KV
        lib.grow_hidden(model, 3, ramp=ramp, std=0.5, generator=g, optimizer=opt, **kw)
        lib.grow_ffn(model, 2, block=1, generator=g, optimizer=opt, **kw)
        lib.insert_identity_block(model, 1, optimizer=opt, **kw)  # old block 1 becomes layer 2
        lib.stack_blocks(model, [0, 1, 2, 0, 2], optimizer=opt, **kw)  # G_stack-like: 3 -> 5

    return _grow_hf_model((build or llama)(), sharded, edits)


def grow_bert(out: Path, sharded: bool) -> dict[str, Any]:
    """A Hugging Face BERT (post-LN) under FSDP: two heads in layer 0, FFN units in layer 1, then
    MSG's ramped stacking 2 -> 4 layers (an identity insert would not keep a post-LN function)."""

    def edits(lib, model, opt, ramp, g, kw) -> None:  # noqa: ANN001
        lib.add_heads(model, 2, block=0, generator=g, optimizer=opt, **kw)
        lib.grow_ffn(model, 2, block=1, generator=g, optimizer=opt, **kw)
        lib.stack_blocks(model, [0, 1, 0, 1], ramp=ramp, optimizer=opt, **kw)

    return _grow_hf_model(bert(), sharded, edits)


def grow_depth(out: Path, sharded: bool) -> dict[str, Any]:
    """An identity block inserted after block 0, then G_stack-like stacking under MSG's ramp."""
    from torchgrow.ops import Ramp

    model = gpt()
    if sharded:
        _shard(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train(model, opt, "gpt", range(STEPS_BEFORE))
    x, _ = _data("gpt", 50)
    set_example(model, x[:3])
    with torch.no_grad():
        before = model(x[:3]).float()
    lib = fsdp if sharded else ops
    kw = {} if sharded else {"example": x[:3]}
    lib.insert_identity_block(model, 1, optimizer=opt, **kw)  # 2 -> 3 blocks
    ramp = Ramp(2)
    lib.stack_blocks(model, [0, 1, 2, 1, 2], ramp=ramp, optimizer=opt, **kw)  # 3 -> 5
    with torch.no_grad():
        after = model(x[:3]).float()
    res: dict[str, Any] = {"delta": float((after - before).abs().max()), "depth": len(model.blocks)}
    return _train_on(model, opt, ramp, sharded, res)


def depth_failure(out: Path, sharded: bool) -> dict[str, Any]:
    """Rank 1 fails after the new block was made: every rank raises; blocks and shards as before."""
    from torchgrow.fsdp.depth import _depth_edit
    from torchgrow.fsdp.state import states as fsdp_states

    model = _shard(gpt())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train(model, opt, "gpt", range(STEPS_BEFORE))
    x, _ = _data("gpt", 50)
    set_example(model, x[:3])
    before = _state(model, opt)

    def op():
        rec = ops.insert_identity_block(model, 1, optimizer=opt, verify=False)
        if dist.get_rank() == 1:
            raise RuntimeError("injected failure on rank 1")
        return rec

    res: dict[str, Any] = {}
    try:
        _depth_edit(model, opt, [0], op, 1e-5)
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    res["depth"] = len(model.blocks)
    res["n_states"] = len(fsdp_states(model))
    res["unchanged"], res["after"] = before, _state(model, opt)
    _train(model, opt, "gpt", range(STEPS_BEFORE, STEPS_BEFORE + 1))
    res["trains"] = all(bool(torch.isfinite(_full(p)).all()) for p in model.parameters())
    return res


def _probe_output(model: nn.Module) -> torch.Tensor:
    x, _ = _data("gpt", 77)
    with torch.no_grad():
        y = model(x).float().clone()
    if dist.is_initialized():
        fsdp.reshard_idle(model)
    return y


def checkpoint(out: Path, sharded: bool) -> dict[str, Any]:
    """Grow on 2 ranks, save with DCP; resume at the grown size on 2 ranks (here) and alone."""
    folder = out / "ckpt"
    if not sharded:  # the checkpoint the 2 ranks saved, loaded into one plain process
        model = gpt()
        fsdp.restore(folder, model)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        fsdp.load(folder, model, opt)
        res = {"loaded": _probe_output(model)}
        _train(model, opt, "gpt", range(STEPS_BEFORE + 1, STEPS_BEFORE + 2))
        res["resumed"] = _state(model, opt)
        return res
    model = _shard(gpt())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train(model, opt, "gpt", range(STEPS_BEFORE))
    x, _ = _data("gpt", 50)
    set_example(model, x[:3])
    g = torch.Generator().manual_seed(7)
    fsdp.grow_ffn(model, 2, block=0, generator=g, optimizer=opt)
    fsdp.add_heads(model, 1, block=1, generator=g, optimizer=opt)
    _train(model, opt, "gpt", range(STEPS_BEFORE, STEPS_BEFORE + 1))
    fsdp.save(folder, model, opt)
    res: dict[str, Any] = {"saved": _probe_output(model)}
    _train(model, opt, "gpt", range(STEPS_BEFORE + 1, STEPS_BEFORE + 2))
    res["continued"] = _state(model, opt)
    fresh = gpt()  # built at the original size: the record grows it before sharding
    res["restored"] = fsdp.restore(folder, fresh)
    _shard(fresh)
    opt2 = torch.optim.Adam(fresh.parameters(), lr=1e-2)
    fsdp.load(folder, fresh, opt2)
    res["loaded"] = _probe_output(fresh)
    _train(fresh, opt2, "gpt", range(STEPS_BEFORE + 1, STEPS_BEFORE + 2))
    res["resumed"] = _state(fresh, opt2)
    return res


def _units(model: nn.Module):
    from torchgrow.graph import growable_units

    return growable_units(model)


def grow(kind: str, out: Path, sharded: bool) -> dict[str, Any]:
    model = gpt() if kind == "gpt" else mlp()
    if sharded:
        _shard(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train(model, opt, kind, range(STEPS_BEFORE))
    res = _edit(kind, model, opt, sharded)
    res["grown"] = _state(model, opt)
    _train(model, opt, kind, range(STEPS_BEFORE, STEPS_BEFORE + STEPS_AFTER))
    res["final"] = _state(model, opt)
    if sharded:
        res["structure"] = _structure(model)
    return res


def failure(kind: str, out: Path, sharded: bool) -> dict[str, Any]:
    """Rank 1's edit raises: every rank raises, and nothing changed; the group still works."""
    model = mlp()
    _shard(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train(model, opt, "mlp", range(STEPS_BEFORE))
    x, _ = _data("mlp", 50)
    set_example(model, x[:3])
    before = _state(model, opt)
    unit = [u for u in _units(model) if u.name == "b0.fc1"][0]
    res: dict[str, Any] = {}

    def fn():
        ops.widen(model, "b0.fc1", 3, optimizer=opt, verify=False, unit=unit)
        if dist.get_rank() == 1:
            raise RuntimeError("injected failure on rank 1")

    try:
        fsdp.edit(model, opt, fn, modules=["b0.fc1", "b0.fc2"], preserve=True)
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    res["unchanged"] = before
    res["after"] = _state(model, opt)
    res["width"] = model.b0.fc1.out_features
    t = torch.ones(1)
    dist.all_reduce(t)
    res["all_reduce"] = float(t)
    _train(model, opt, "mlp", range(STEPS_BEFORE, STEPS_BEFORE + 1))  # training goes on
    res["trains"] = all(bool(torch.isfinite(_full(p)).all()) for p in model.parameters())
    return res


def grower(out: Path, sharded: bool, policy: Any = None) -> dict[str, Any]:
    """methods.GradMax under torchgrow.fsdp.Grower.of (its closed form on both blocks' hidden
    layers, after step 2), each rank passing its half of the growth batch; alone, the method's
    torchgrow.Grower on the whole batch. With ``policy``, the optimizer policy applies."""
    from torchgrow import how, methods, when, where

    model = mlp()
    if sharded:
        _shard(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rank, n = (dist.get_rank(), dist.get_world_size()) if sharded else (0, 1)
    res: dict[str, Any] = {}
    if sharded:  # the method's analysis of the sharded model runs its forward on an example
        set_example(model, _data("mlp", 40)[0][:4])
    if sharded and policy is None:  # the residual stream has several consumers: trial copies
        x, y = _data("mlp", 40)
        bad = fsdp.Grower(
            model, opt, when=when.Manual(), how=how.GradMax(), where=where.Layers(["inp"])
        )
        before = _state(model, opt)
        try:
            bad.grow((x.chunk(n)[rank], y.chunk(n)[rank]))
            res["refused"] = None
        except Exception as e:
            res["refused"] = f"{type(e).__name__}: {e}"
        res["unchanged"] = _max_diff_states(before, _state(model, opt))
    # the method with the paper's defaults but the schedule (growth after step 2, once):
    # 25 % of 9 and of 11 units is 2 each
    g = methods.GradMax(
        model,
        opt,
        update_frequency=STEPS_BEFORE,
        start_iteration=STEPS_BEFORE,
        n_growth_steps=1,
        layers=["b0.fc1", "b1.fc1"],
        loss_fn=_loss,
        policy=policy,
    )
    if sharded:
        g = fsdp.Grower.of(g)
    for step in range(STEPS_BEFORE + STEPS_AFTER):
        _train(model, opt, "mlp", range(step, step + 1))
        gx, gy = _data("mlp", 60 + step)
        events = g.step((gx.chunk(n)[rank], gy.chunk(n)[rank]))
        if events:
            res["grown"] = _state(model, opt)
            res["events"] = [
                (e.unit, e.width_after, e.info["sigma_1"], e.max_abs_delta, e.grad_norm_fan_in)
                for e in events
            ]
    res["final"] = _state(model, opt)
    if sharded and policy is None:
        res["structure"] = _structure(model)
        avg = opt.state[model.b0.fc1.weight]["exp_avg"]  # a subnormal in this rank's own shard
        avg.to_local().view(-1)[0] = 1e-44
        res["flushed"] = fsdp.flush_subnormal_shards(opt)
        res["flushed_to"] = float(avg.to_local().view(-1)[0])
    return res


def _max_diff_states(a: dict[str, Any], b: dict[str, Any]) -> float:
    d = [float((a["params"][k] - b["params"][k]).abs().max()) for k in a["params"]]
    for k, st in a["opt"].items():
        d += [float((v.float() - b["opt"][k][n].float()).abs().max()) for n, v in st.items()]
    return max(d)


SCENARIOS = {
    "mlp": lambda out, sharded: grow("mlp", out, sharded),
    "gpt": lambda out, sharded: grow("gpt", out, sharded),
    "gpt_tx": grow_transformer,
    "ckpt": checkpoint,
    "gpt_depth": grow_depth,
    "hf_llama": grow_hf,
    "hf_gpt2": lambda out, sharded: grow_hf(out, sharded, gpt2),
    "hf_bert": grow_bert,
    "depth_failure": depth_failure,
    "failure": lambda out, sharded: failure("mlp", out, sharded),
    "grower": grower,
    "grower_rewarm": lambda out, sharded: grower(out, sharded, ops.OptimizerPolicy(rewarm_steps=2)),
    "grower_reset": lambda out, sharded: grower(out, sharded, ops.OptimizerPolicy(state="reset")),
}


def main() -> None:
    names, out = sys.argv[1].split(","), Path(sys.argv[2])
    sharded = "RANK" in __import__("os").environ
    torch.set_num_threads(1)
    if sharded:
        dist.init_process_group("gloo")
    tag = f"rank{dist.get_rank()}" if sharded else "single"
    try:
        for name in names:
            torch.save(SCENARIOS[name](out, sharded), out / f"{name}-{tag}.pt")
    except Exception:
        traceback.print_exc()
        raise
    finally:
        if sharded:
            dist.destroy_process_group()


def fit_run(out: Path, sharded: bool) -> dict[str, Any]:
    """torchgrow.train.fit on the residual MLP with methods.GradMax: under FSDP (the model
    sharded, the method's grower as fsdp.Grower.of), each global batch cut into one slice per
    rank; alone, the same loaders in one process."""
    from torch.utils.data import DataLoader, TensorDataset

    from torchgrow import methods
    from torchgrow.train import fit

    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(72, 5, generator=g), torch.randint(0, 3, (72,), generator=g)
    train = DataLoader(TensorDataset(x[:48], y[:48]), batch_size=BATCH, shuffle=False)
    test = DataLoader(TensorDataset(x[48:], y[48:]), batch_size=BATCH)
    model = mlp()
    if sharded:
        _shard(model)
    set_example(model, x[:4])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    grower = methods.GradMax(
        model, opt, update_frequency=3, start_iteration=3, n_growth_steps=2,
        layers=["b0.fc1", "b1.fc1"], loss_fn=_loss,
    )  # fmt: skip
    if sharded:
        grower = fsdp.Grower.of(grower)
    history = fit(model, opt, (train, test), epochs=2, loss_fn=_loss, grower=grower, progress=False)
    return {
        "final": _state(model, opt),
        "rows": [(r["train_loss"], r["val_loss"], r["val_accuracy"], r["parameters"])
                 for r in history.rows],
        "events": [(e.step, e.unit, e.width_after) for e in history.events],
    }  # fmt: skip


def nest(out: Path, sharded: bool) -> dict[str, Any]:
    """NeST's connection growth and magnitude pruning on masked layers (density 0.5): under FSDP
    with torchgrow.fsdp.grow_connections / prune_connections, each rank passing its half of the
    growth batch; alone, torchgrow.connections on the whole batch."""
    from torchgrow import connections

    model = mlp()
    layers = ["b0.fc1", "b1.fc1"]
    g = torch.Generator().manual_seed(3)
    for name in layers:
        ops.apply_mask(model.get_submodule(name), density=0.5, generator=g)
    if sharded:
        _shard(model)
    set_example(model, _data("mlp", 40)[0][:4])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rank, n = (dist.get_rank(), dist.get_world_size()) if sharded else (0, 1)
    _train(model, opt, "mlp", range(STEPS_BEFORE))
    gx, gy = _data("mlp", 60)
    share = (gx.chunk(n)[rank], gy.chunk(n)[rank])
    if sharded:
        grown = fsdp.grow_connections(model, share, _loss, layers=layers, fraction=0.25,
                                      optimizer=opt)  # fmt: skip
    else:
        grown = connections.grow_by_gradient(model, share, _loss, fraction=0.25, layers=layers,
                                             optimizer=opt)  # fmt: skip
    res: dict[str, Any] = {"grown": grown, "after_growth": _state(model, opt)}
    _train(model, opt, "mlp", range(STEPS_BEFORE, STEPS_BEFORE + STEPS_AFTER))
    if sharded:
        res["pruned"] = fsdp.prune_connections(model, 0.2, layers=layers, optimizer=opt)
    else:
        res["pruned"] = connections.prune_by_magnitude(model, 0.2, layers=layers, optimizer=opt)
    _train(model, opt, "mlp", range(10, 12))
    res["final"] = _state(model, opt)
    res["masks"] = {n: ops.mask_of(model.get_submodule(n)).clone() for n in layers}
    res["dormant_max"] = max(
        float(res["final"]["params"][f"{n}.weight"][res["masks"][n] == 0].abs().max())
        for n in layers
    )
    return res


SCENARIOS["fit"] = fit_run
SCENARIOS["nest"] = nest


if __name__ == "__main__":
    main()
