"""Transformer edits (FFN width, heads, depth) on torchgrow's GPT and Hugging Face GPT-2 and Llama
built from tiny configs: function preserved to 1e-5, optimizer carried, atomic on bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from torchgrow import models
from torchgrow.errors import GrowthInputError
from torchgrow.ops import (
    OptimizerPolicy,
    Ramp,
    add_heads,
    check_consistent,
    clone_width,
    find_layout,
    g_stack_order,
    grow_ffn,
    insert_identity_block,
    interleave_order,
    midas_order,
    register_layout,
    stack_blocks,
)

VOCAB = 40
T_LEN = 12


def _gpt(**kw):
    return models.gpt(VOCAB, context=16, n_layer=2, d_model=16, n_head=2, **kw)


def _hf(kind: str) -> nn.Module:
    T = pytest.importorskip("transformers")
    T.logging.set_verbosity_error()
    if kind == "gpt2":
        cfg = T.GPT2Config(
            vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=16,
            bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )  # fmt: skip
        return T.GPT2LMHeadModel(cfg)
    cfg = T.LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=24, max_position_embeddings=16, head_dim=4,
    )  # fmt: skip
    return T.LlamaForCausalLM(cfg)


BUILDERS = {
    "gpt": _gpt,
    "gpt-swiglu-rms-gqa-tied": lambda: _gpt(mlp="swiglu", norm="rmsnorm", n_kv_head=1, tie=True),
    "hf-gpt2": lambda: _hf("gpt2"),
    "hf-llama": lambda: _hf("llama"),
}


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return getattr(out, "logits", out)


def _trained(name: str):
    torch.manual_seed(0)
    model = BUILDERS[name]()
    x = torch.randint(0, VOCAB, (3, T_LEN))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        _logits(model, x).logsumexp(-1).mean().backward()
        opt.step()
    model.eval()
    return model, opt, x


def _state_before(opt):
    return {p: {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()}


def _old_state_kept(record, before, opt):
    """Each replaced parameter's state holds its old state in the old entries, zeros elsewhere."""
    assert record.replaced
    for old, new in record.replaced.items():
        for key, value in before[old].items():
            if value.ndim == 0:
                assert torch.equal(opt.state[new][key], value)
                continue
            carried = opt.state[new][key].flatten()
            expected = torch.cat(
                [value.flatten(), value.new_zeros(carried.numel() - value.numel())]
            )
            assert torch.equal(
                carried.sort().values, expected.sort().values
            )  # same entries + zeros


def _train_step(model, opt, x):
    model.train()
    opt.zero_grad()
    _logits(model, x).logsumexp(-1).mean().backward()
    opt.step()
    model.eval()


@pytest.mark.parametrize("name", BUILDERS)
def test_grow_ffn_preserves_the_function_and_carries_adam(name):
    model, opt, x = _trained(name)
    before, state = _logits(model, x).detach(), _state_before(opt)
    up = find_layout(model).blocks[0].ffn.up
    width = up.weight.shape[0 if isinstance(up, nn.Linear) else 1]
    record = grow_ffn(
        model, 6, optimizer=opt, example=x, generator=torch.Generator().manual_seed(1)
    )
    assert record.details["max_abs_dout"] <= 1e-5
    assert (_logits(model, x) - before).abs().max() <= 1e-5
    up = find_layout(model).blocks[1].ffn.up
    assert up.weight.shape[0 if isinstance(up, nn.Linear) else 1] == width + 6
    _old_state_kept(record, state, opt)
    check_consistent(model, opt)
    _train_step(model, opt, x)
    down = find_layout(model).blocks[0].ffn.down
    new_cols = down.weight[:, width:] if isinstance(down, nn.Linear) else down.weight[width:]
    assert new_cols.abs().sum() > 0  # the zero fan-out trains


@pytest.mark.parametrize("name", BUILDERS)
def test_add_heads_preserves_the_function_and_the_new_heads_train(name):
    model, opt, x = _trained(name)
    before, state = _logits(model, x).detach(), _state_before(opt)
    attn = find_layout(model).blocks[0].attn
    group = attn.n_head // attn.n_kv_head
    record = add_heads(model, 2 * group, block=0, optimizer=opt, example=x)
    assert record.details["max_abs_dout"] <= 1e-5
    assert (_logits(model, x) - before).abs().max() <= 1e-5
    grown, other = find_layout(model).blocks[0].attn, find_layout(model).blocks[1].attn
    assert grown.n_head == attn.n_head + 2 * group and other.n_head == attn.n_head
    assert grown.n_kv_head == attn.n_kv_head + 2
    _old_state_kept(record, state, opt)
    check_consistent(model, opt)
    _train_step(model, opt, x)
    o = find_layout(model).blocks[0].attn.o
    d_attn = attn.n_head * attn.head_dim
    new_cols = o.weight[:, d_attn:] if isinstance(o, nn.Linear) else o.weight[d_attn:]
    assert new_cols.abs().sum() > 0


@pytest.mark.parametrize("name", BUILDERS)
def test_insert_identity_block_preserves_the_function_and_keeps_the_bookkeeping(name):
    model, opt, x = _trained(name)
    before = _logits(model, x).detach()
    record = insert_identity_block(model, 1, optimizer=opt, example=x, copy_state=True)
    assert record.details["max_abs_dout"] <= 1e-5
    assert (_logits(model, x) - before).abs().max() <= 1e-5
    parts = find_layout(model)
    assert len(parts.blocks) == 3
    config = getattr(model, "config", None)
    if config is not None:
        assert config.num_hidden_layers == 3
        assert [getattr(b.attn.module, "layer_idx", i) for i, b in enumerate(parts.blocks)] == [
            0,
            1,
            2,
        ]
    # the copy's state is the source's; its output projections start at zero
    src, new = parts.blocks[0].module, parts.blocks[1].module
    p_src, p_new = next(src.parameters()), next(new.parameters())
    assert p_new is not p_src and torch.equal(
        opt.state[p_new]["exp_avg"], opt.state[p_src]["exp_avg"]
    )
    assert parts.blocks[1].ffn.down.weight.abs().sum() == 0
    check_consistent(model, opt)
    _train_step(model, opt, x)
    assert parts.blocks[1].ffn.down.weight.abs().sum() > 0


@pytest.mark.parametrize("name", ["gpt", "hf-llama"])
def test_stack_blocks_g_stack_repeats_the_stack_and_records_the_jump(name):
    model, opt, x = _trained(name)
    old = [b.module for b in find_layout(model).blocks]
    record = stack_blocks(model, g_stack_order(2, 4), optimizer=opt, example=x)
    blocks = [b.module for b in find_layout(model).blocks]
    assert len(blocks) == 8 and blocks[:2] == old and all(b not in old for b in blocks[2:])
    assert torch.equal(blocks[2].state_dict()[next(iter(blocks[2].state_dict()))],
                       old[0].state_dict()[next(iter(old[0].state_dict()))])  # fmt: skip
    assert record.details["max_abs_dout"] > 1e-4  # stacking changes the function
    new_params = {id(p) for b in blocks[2:] for p in b.parameters()}
    assert {id(p) for p in record.added} == new_params
    assert all(not opt.state.get(p) for p in record.added)  # zero state by default
    check_consistent(model, opt)
    _train_step(model, opt, x)


def test_orders():
    assert g_stack_order(3, 2) == [0, 1, 2, 0, 1, 2]
    assert midas_order(4) == [0, 1, 2, 2, 3]
    assert midas_order(1) == [0, 0]
    assert interleave_order(2) == [0, 0, 1, 1]


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m, o: add_heads(m, 1, optimizer=o), "multiple of 2"),
        (lambda m, o: grow_ffn(m, 3, fan_out=torch.zeros(5, 3), optimizer=o), "shape"),
        (lambda m, o: grow_ffn(m, 0, optimizer=o), "positive"),
        (lambda m, o: grow_ffn(m, 2, block=7, optimizer=o), "block must be"),
        (lambda m, o: insert_identity_block(m, 5, optimizer=o), "index must be"),
        (lambda m, o: stack_blocks(m, [0, 0], optimizer=o), "missing"),
    ],
)
def test_bad_input_changes_nothing(edit, message):
    model, opt, x = _trained("gpt-swiglu-rms-gqa-tied")
    before, state = _snapshot(model), _state_before(opt)
    with pytest.raises(GrowthInputError, match=message):
        edit(model, opt)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert set(opt.state) == set(state)
    check_consistent(model, opt)


def test_a_non_preserving_fan_out_is_recorded():
    model, opt, x = _trained("gpt")
    record = grow_ffn(model, 4, fan_out="random", std=0.5, optimizer=opt, example=x)
    assert not record.details["preserving"] and record.details["max_abs_dout"] > 1e-3


def test_an_unknown_model_names_the_registry_and_a_registered_one_works():
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = _gpt()

        def forward(self, x):
            return self.inner(x)

    wrapper = Wrapper()
    with pytest.raises(GrowthInputError, match="register_layout"):
        grow_ffn(wrapper, 2)

    def finder(model):
        parts = find_layout(model.inner)
        parts.container = "inner." + parts.container
        return parts

    register_layout(Wrapper, finder)
    x = torch.randint(0, VOCAB, (2, T_LEN))
    before = wrapper(x).detach()
    record = insert_identity_block(wrapper, 2, example=x)
    assert record.details["max_abs_dout"] <= 1e-5 and len(wrapper.inner.blocks) == 3
    assert (wrapper(x) - before).abs().max() <= 1e-5


@pytest.mark.parametrize("snr_db", [None, 10.0])
@pytest.mark.parametrize("name", BUILDERS)
def test_clone_width_doubles_every_width_and_preserves_the_function(name, snr_db):
    model, opt, x = _trained(name)
    before = _logits(model, x).detach()
    parts = find_layout(model)
    emb = parts.embeddings[0]
    d, heads, tied = emb.weight.shape[1], parts.blocks[0].attn.n_head, parts.tied
    old_emb_state = opt.state[emb.weight]["exp_avg"].clone()
    record = clone_width(
        model, 2, snr_db=snr_db, generator=torch.Generator().manual_seed(0), optimizer=opt,
        example=x,
    )  # fmt: skip
    assert record.details["max_abs_dout"] <= 1e-5
    assert (_logits(model, x) - before).abs().max() <= 1e-5
    parts = find_layout(model)
    emb = parts.embeddings[0]
    assert emb.weight.shape[1] == 2 * d and parts.blocks[1].attn.n_head == 2 * heads
    assert parts.tied == tied  # a tied head stays tied (GPT-2 ties by default)
    config = getattr(model, "config", None)
    if config is not None:
        assert config.hidden_size == 2 * d and config.num_attention_heads == 2 * heads
    # the state is tiled with its weight: each copy starts from its source's moments
    assert torch.equal(opt.state[emb.weight]["exp_avg"], old_emb_state.repeat(1, 2))
    check_consistent(model, opt)
    q = _q_rows(parts.blocks[0].attn)
    first, second = q[:, : q.shape[1] // 2], q[:, q.shape[1] // 2 :]
    assert torch.equal(first, second) == (snr_db is None)  # noise breaks the symmetry
    _train_step(model, opt, x)


def _q_rows(attn) -> torch.Tensor:
    proj = attn.q if attn.q is not None else attn.qkv
    w = proj.weight.detach()
    return w if isinstance(proj, nn.Linear) else w.t()


def test_clone_width_three_copies_and_separate_multipliers():
    model, opt, x = _trained("gpt")
    before = _logits(model, x).detach()
    record = clone_width(model, 3, ffn_mult=2, heads_mult=1, optimizer=opt, example=x)
    assert record.details["max_abs_dout"] <= 1e-5
    blk = model.blocks[0]
    assert blk.norm1.normalized_shape == (48,) and blk.mlp.up.out_features == 128
    assert blk.attn.n_head == 2 and blk.attn.q.in_features == 48
    assert (_logits(model, x) - before).abs().max() <= 1e-5
    with pytest.raises(GrowthInputError, match="positive int"):
        clone_width(model, 0, optimizer=opt)
    check_consistent(model, opt)


@pytest.mark.parametrize("split", ["comp", "projection"])
@pytest.mark.parametrize("name", BUILDERS)
def test_clone_width_lemon_split_preserves_and_breaks_the_symmetry(name, split):
    model, opt, x = _trained(name)
    before = _logits(model, x).detach()
    even = copy.deepcopy(model)
    clone_width(even, 2, example=x)
    q_even = _q_rows(find_layout(even).blocks[0].attn)
    record = clone_width(
        model, 2, split=split, generator=torch.Generator().manual_seed(0), optimizer=opt,
        example=x,
    )  # fmt: skip
    assert record.details["max_abs_dout"] <= 1e-5 and record.details["split"] == split
    assert (_logits(model, x) - before).abs().max() <= 1e-5
    q = _q_rows(find_layout(model).blocks[0].attn)
    first, second = q[:, : q.shape[1] // 2], q[:, q.shape[1] // 2 :]
    # the two copies' weights differ but still sum to the old weight (twice the even split)
    assert (first - second).abs().max() > 1e-3
    assert torch.allclose(first + second, 2 * q_even[:, : q.shape[1] // 2], atol=1e-6)
    if split == "comp":  # the second copy holds only the small random part C = 0.1 * N(0, 0.02)
        assert 1e-4 < float(second.std()) < 0.01
    check_consistent(model, opt)
    _train_step(model, opt, x)


def test_clone_width_refuses_two_symmetry_breakers_and_changes_nothing():
    model, opt, x = _trained("gpt")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(GrowthInputError, match="one symmetry breaker"):
        clone_width(model, 2, snr_db=10.0, split="comp", optimizer=opt, example=x)
    with pytest.raises(GrowthInputError, match="split must be one of"):
        clone_width(model, 2, split="halves", optimizer=opt, example=x)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_clone_width_of_a_single_head_model_doubles_its_key_value_head_too():
    torch.manual_seed(0)
    model = models.gpt(VOCAB, context=16, n_layer=1, d_model=8, n_head=1, head_dim=8)
    x = torch.randint(0, VOCAB, (2, T_LEN))
    before = _logits(model, x).detach()
    clone_width(model, 2, example=x)
    attn = find_layout(model).blocks[0].attn
    assert (attn.n_head, attn.n_kv_head) == (2, 2)  # one head is plain attention, not multi-query
    assert model.blocks[0].attn.k.out_features == 16
    assert (_logits(model, x) - before).abs().max() <= 1e-5


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("std", [0.02, 1.0])  # MSG: preserving whatever the new weights are
@pytest.mark.parametrize("name", ["gpt", "hf-gpt2", "hf-llama"])
def test_masked_ramp_preserves_at_zero_then_brings_the_structure_in(name, std):
    model, opt, x = _trained(name)
    before = _logits(model, x).detach()
    ramp = Ramp(3)
    gen = torch.Generator().manual_seed(0)
    common = {"optimizer": opt, "example": x, "ramp": ramp, "std": std, "generator": gen}
    records = [
        grow_ffn(model, 4, fan_out="random", **common),
        add_heads(model, 2 * (find_layout(model).blocks[0].attn.n_head
                              // find_layout(model).blocks[0].attn.n_kv_head), **common),
    ]  # fmt: skip
    records.append(stack_blocks(model, [0, 1, 0, 1], optimizer=opt, example=x, ramp=ramp))
    assert all(r.details["preserving"] and r.details["max_abs_dout"] <= 1e-5 for r in records)
    assert (_logits(model, x) - before).abs().max() <= 1e-5 and ramp.active
    moved = []
    for _ in range(3):
        _train_step(model, opt, x)
        ramp.step()
        moved.append(float((_logits(model, x).detach() - before).abs().max()))
    assert ramp.value == 1.0 and not ramp.active and _hooks(model) == 0
    assert moved[-1] > 1e-3
    check_consistent(model, opt)


def test_a_ramp_is_linear_and_a_failed_edit_leaves_no_mask():
    ramp = Ramp(4)
    values = []
    for _ in range(5):
        values.append(ramp.value)
        ramp.step()
    assert values == [0.0, 0.25, 0.5, 0.75, 1.0]
    model, opt, x = _trained("gpt-swiglu-rms-gqa-tied")
    ramp = Ramp(10)
    with pytest.raises(GrowthInputError):
        add_heads(model, 1, optimizer=opt, ramp=ramp)
    assert not ramp.active and _hooks(model) == 0
    with pytest.raises(GrowthInputError, match="positive int"):
        Ramp(0)


def test_policy_reset_drops_the_grown_parameters_state():
    model, opt, x = _trained("gpt")
    untouched = model.tok_emb.weight
    record = grow_ffn(model, 4, optimizer=opt, example=x, policy=OptimizerPolicy("reset"))
    assert record.replaced and all(p not in opt.state for p in record.replaced.values())
    assert untouched in opt.state
    _train_step(model, opt, x)
    assert all(int(opt.state[p]["step"]) == 1 for p in record.replaced.values())


def test_policy_copy_gives_copies_their_sources_state():
    model, opt, x = _trained("hf-llama")
    src = list(find_layout(model).blocks[0].module.parameters())
    stack_blocks(model, [0, 1, 0], optimizer=opt, example=x, policy=OptimizerPolicy("copy"))
    copy_params = list(find_layout(model).blocks[2].module.parameters())
    for a, b in zip(src, copy_params, strict=True):
        assert a is not b and torch.equal(opt.state[a]["exp_avg_sq"], opt.state[b]["exp_avg_sq"])
    with pytest.raises(GrowthInputError, match="not both"):
        stack_blocks(model, [0, 1, 2], optimizer=opt, copy_state=True, policy=OptimizerPolicy())


def test_policy_rewarm_scales_only_the_new_entries_updates():
    import copy

    torch.manual_seed(0)
    plain = _gpt()
    warm = copy.deepcopy(plain)
    x = torch.randint(0, VOCAB, (3, T_LEN))
    policy = OptimizerPolicy(rewarm_steps=4)
    deltas, opts = {}, {}
    for name, model, pol in (("plain", plain, None), ("warm", warm, policy)):
        opts[name] = torch.optim.SGD(model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(5)
        grow_ffn(model, 4, fan_out="random", generator=gen, optimizer=opts[name], example=x,
                 policy=pol)  # fmt: skip
        up = model.blocks[0].mlp.up.weight
        before = up.detach().clone()
        _train_step(model, opts[name], x)
        deltas[name] = up.detach() - before
    old, new = slice(0, 64), slice(64, 68)
    assert torch.allclose(deltas["warm"][old], deltas["plain"][old], atol=1e-7)
    assert torch.allclose(deltas["warm"][new], 0.25 * deltas["plain"][new], atol=1e-7)
    assert deltas["plain"][new].abs().sum() > 0
    for _ in range(3):
        assert policy.rewarming
        _train_step(warm, opts["warm"], x)
    assert not policy.rewarming and not opts["warm"]._optimizer_step_pre_hooks


@pytest.mark.parametrize("kwargs", [{"state": "fresh"}, {"rewarm_steps": -1}])
def test_policy_rejects_bad_settings(kwargs):
    with pytest.raises(GrowthInputError):
        OptimizerPolicy(**kwargs)
