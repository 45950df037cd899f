"""LEMON's average expansion to any widths (ops.expand_width): function kept, state carried."""

from __future__ import annotations

import copy

import pytest
import torch
from test_transformer_ops import BUILDERS, _gpt, _logits, _train_step, _trained

from torchgrow.errors import GrowthInputError
from torchgrow.ops import check_consistent, clone_width, expand_width, find_layout

# (d_model, n_head, d_ff) after: 16 -> 24 leaves 8 residue coordinates (k = 1, r = 8)
WIDTHS = {
    "gpt": (24, 3, 70),
    "hf-gpt2": (24, 3, 70),
    "gpt-swiglu-rms-gqa-tied": (32, 3, 70),  # RMSNorm: a multiple of d_model only
    "hf-llama": (32, 6, 30),  # RMSNorm, 2 query heads per key-value head: 4 -> 6 heads, 2 -> 3
}


@pytest.mark.parametrize("name", BUILDERS)
def test_expand_width_to_widths_that_are_not_multiples_preserves_the_function(name):
    model, opt, x = _trained(name)
    before = _logits(model, x).detach()
    emb = find_layout(model).embeddings[0]
    old_state = opt.state[emb.weight]["exp_avg"].clone()
    d_new, h_new, f_new = WIDTHS[name]
    record = expand_width(
        model, d_new, n_head=h_new, d_ff=f_new, optimizer=opt, example=x,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert record.details["max_abs_dout"] <= 1e-5
    assert (_logits(model, x) - before).abs().max() <= 1e-5
    parts = find_layout(model)
    emb, b0 = parts.embeddings[0], parts.blocks[0]
    assert emb.weight.shape[1] == d_new and b0.attn.n_head == h_new
    config = getattr(model, "config", None)
    if config is not None:
        assert config.hidden_size == d_new and config.num_attention_heads == h_new
    # the stream form: each row tiled, the residue columns its mean; the state tiled, residue 0
    k, d = d_new // 16, 16
    w = emb.weight.detach()
    assert torch.allclose(w[:, d : k * d], w[:, :d].repeat(1, k - 1)) if k > 1 else True
    assert torch.allclose(w[:, k * d :], w[:, :d].mean(1, keepdim=True).expand(-1, d_new - k * d))
    state = opt.state[emb.weight]["exp_avg"]
    assert torch.equal(state[:, :d], old_state) and not state[:, k * d :].any()
    check_consistent(model, opt)
    _train_step(model, opt, x)
    assert torch.isfinite(_logits(model, x)).all()


def test_with_integer_multipliers_and_an_even_split_it_is_clone_width():
    torch.manual_seed(0)
    a = _gpt()
    b = copy.deepcopy(a)
    x = torch.randint(0, 40, (2, 12))
    d_ff = a.blocks[0].mlp.up.out_features
    clone_width(a, 2, verify=False)
    expand_width(b, 32, n_head=4, d_ff=2 * d_ff, split="even", verify=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].shape == sb[key].shape, key
        assert torch.allclose(sa[key], sb[key], atol=1e-7), key
    assert torch.allclose(a(x), b(x), atol=1e-6)


def test_the_copies_are_split_unevenly_and_still_sum_to_the_old_weight():
    model, opt, x = _trained("gpt")
    q_old = model.blocks[0].attn.q.weight.detach().clone()  # (16, 16): two heads of 8
    expand_width(model, 24, optimizer=opt, example=x, generator=torch.Generator().manual_seed(0))
    q = model.blocks[0].attn.q.weight.detach()
    assert torch.allclose(q[:, :16], q_old)  # k = 1: one copy carries the whole weight
    assert q[:, 16:].abs().max() > 0  # the residue columns read 0, and need not be 0
    model2, _, _ = _trained("gpt")
    expand_width(model2, 32, split="comp", generator=torch.Generator().manual_seed(0))
    q2 = model2.blocks[0].attn.q.weight.detach()
    assert torch.allclose(q2[:, :16] + q2[:, 16:], q_old, atol=1e-6)  # comp: W - C and C
    assert not torch.allclose(q2[:, :16], q2[:, 16:])


@pytest.mark.parametrize(
    ("name", "kw", "message"),
    [
        ("gpt-swiglu-rms-gqa-tied", {"d_model": 24}, "RMSNorm keeps the expanded stream only"),
        ("hf-llama", {"d_model": 32, "n_head": 5}, "not a multiple of it"),
        ("gpt", {"d_model": 8}, "d_model must be an int >= 16"),
        ("gpt", {"d_model": 16}, "nothing to grow"),
        ("gpt", {"d_model": 24, "split": "halves"}, "split must be one of"),
    ],
)
def test_bad_widths_are_refused_and_change_nothing(name, kw, message):
    model, opt, x = _trained(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(GrowthInputError, match=message):
        expand_width(model, optimizer=opt, example=x, **kw)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
